"""Kill a training subprocess with SIGKILL once it has logged a given iteration."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path


def losses(out: Path) -> dict[int, float]:
    """``iteration → total_loss`` from ``out/metrics.jsonl``."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}


def sigkill_after(cmd: list[str], out: Path, iteration: int, env: dict, wait: float = 300) -> int:
    """Start ``cmd``, SIGKILL it once ``out/metrics.jsonl`` reaches ``iteration``; its status."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + wait
    try:
        while time.time() < deadline:
            if (out / "metrics.jsonl").is_file() and max(losses(out), default=-1) >= iteration:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    return proc.returncode
