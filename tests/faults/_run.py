"""Helpers of the fault tier: training processes to start and signal, their metrics."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = str(HERE / "_train.py")


# ---------------------------------------------------------------------- configs and runs
#: The toy run every resumed run is compared with: 30 iterations, checkpoints every 10,
#: evaluation every 10, one iteration ~0.05 s slower with SleepHook (signals can land mid-run).
BASE = {
    "SOLVER.MAX_ITER": 30,
    "SOLVER.CHECKPOINT_PERIOD": 10,
    "TRAINER.EXTRA_HOOKS": ["SleepHook"],
}


def write_cfg(path: Path, **overrides) -> str:
    import _toy

    values = {**BASE, **overrides}
    cfg = _toy.toy_cfg(path.parent / "unused", **values)
    path.write_text(cfg.dump())
    return str(path)


def env_for(extra: dict | None, trainer: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", DETLAB_FAULT_TRAINER=trainer)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


def start(cfg: str, out: Path, *extra: str, env=None, trainer="toy", umask=None):
    """A training process (stdout/stderr to temporary files); returns the Popen with
    ``.stdout_path`` and ``.stderr_path``."""
    logs = Path(tempfile.gettempdir()) / f"detlab-faults-{out.name}-{uuid.uuid4().hex[:8]}"
    so, se = open(f"{logs}.out", "w"), open(f"{logs}.err", "w")  # noqa: SIM115
    cmd = [sys.executable, SCRIPT, "--config-file", cfg, "OUTPUT_DIR", str(out), *extra]
    pre = (lambda: os.umask(umask)) if umask is not None else None
    proc = subprocess.Popen(
        cmd, stdout=so, stderr=se, env=env_for(env, trainer), cwd=str(ROOT), preexec_fn=pre
    )
    so.close()
    se.close()
    proc.stdout_path, proc.stderr_path = f"{logs}.out", f"{logs}.err"
    return proc


def finish(proc, timeout: float = 240) -> subprocess.CompletedProcess:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    texts = []
    for path in (proc.stdout_path, proc.stderr_path):
        texts.append(Path(path).read_text())
        os.unlink(path)
    return subprocess.CompletedProcess(proc.args, proc.returncode, *texts)


def run(cfg: str, out: Path, *extra: str, timeout: float = 240, **kw):
    return finish(start(cfg, out, *extra, **kw), timeout)


def tool(*args: str, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python tools/<script> args`` from the repository root."""
    cmd = [sys.executable, str(ROOT / "tools" / args[0]), *args[1:]]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env_for(env, "toy"), cwd=str(ROOT)
    )


def rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    result = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            result.append(json.loads(line))
    return result


def losses(out: Path) -> dict[int, float]:
    return {r["iteration"]: r["total_loss"] for r in rows(out) if "total_loss" in r}


def wait_for(predicate, timeout: float = 120, proc=None, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the run ended (status {proc.returncode}) before {what}:\n"
                + Path(proc.stderr_path).read_text()[-3000:]
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def reached(out: Path, iteration: int):
    return lambda: any(r.get("iteration", -1) >= iteration for r in rows(out))


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def one_sentence(stderr: str, prefix: str = "error: ") -> str:
    """The single ``prefix`` line of ``stderr`` (asserting there is exactly one and no
    traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]
