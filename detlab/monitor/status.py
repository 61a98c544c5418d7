"""The state of a training run at a glance, from ``OUTPUT_DIR/metrics.jsonl`` (torch-free).

Used by ``tools/watch.py`` (:mod:`detlab.monitor.cli`): progress, speed and ETA, the loss
trend, NaN skips, rollbacks, gradient-clip events, the last evaluation, and whether the run is
alive: ``finished`` (``final_metrics.json`` written), ``running`` (a live process holds
``OUTPUT_DIR/run.lock``), ``died`` (the lock file remains but its process is gone: killed,
out of memory, node lost) or ``stopped`` (ended without finishing and released the folder: an
error, a preemption).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any

import yaml

from detlab.utils.run_lock import describe_owner, lock_state, read_owner

__all__ = ["format_status", "read_metrics", "summarize_run"]

_EVAL_KEYS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl")


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a line cut by a crash or still being written is ignored."""
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _num(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def summarize_run(run_dir: str, trend_points: int = 8) -> dict[str, Any]:
    """Numbers describing the run in ``run_dir`` (see :func:`format_status`)."""
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    max_iter = None
    cfg_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            max_iter = ((yaml.safe_load(f) or {}).get("SOLVER") or {}).get("MAX_ITER")
    train = [r for r in rows if "total_loss" in r]
    last = train[-1] if train else {}
    it = int(last.get("iteration", -1))
    times = [t for r in train[-20:] if (t := _num(r.get("time"))) is not None]
    sec = _median(times)
    eta = None
    if sec is not None and max_iter:
        eta = datetime.timedelta(seconds=int(sec * max(max_iter - it - 1, 0)))
    losses = [(int(r["iteration"]), _num(r.get("total_loss"))) for r in train]
    losses = [(i, v) for i, v in losses if v is not None]
    trend = []
    if losses:
        chunk = max(1, math.ceil(len(losses) / trend_points))
        for k in range(0, len(losses), chunk):
            part = losses[k : k + chunk]
            trend.append((part[-1][0], sum(v for _, v in part) / len(part)))
    evals = [r for r in rows if any(k in r for k in _EVAL_KEYS)]
    final_path = os.path.join(run_dir, "final_metrics.json")
    finished = os.path.isfile(final_path)
    lock = lock_state(run_dir)
    if lock == "running":
        state = "running"
    elif finished:
        state = "finished"
    else:
        state = "died" if lock == "stale" else "stopped"
    last_ckpt = None
    tag = os.path.join(run_dir, "last_checkpoint")
    if os.path.isfile(tag):
        with open(tag, encoding="utf-8") as f:
            last_ckpt = f.read().strip() or None
    return {
        "run_dir": run_dir,
        "iteration": it,
        "max_iter": max_iter,
        "sec_per_iter": sec,
        "eta": eta,
        "lr": _num(last.get("lr")),
        "loss_trend": trend,
        "nan_skipped": int(_num(last.get("nan/skipped")) or 0),
        "nan_consecutive": int(_num(last.get("nan/consecutive")) or 0),
        "rollbacks": int(_num(last.get("nan/rollbacks")) or 0),
        "clip_events": int(_num(last.get("clip/count")) or 0),
        "last_eval": (
            {
                "iteration": evals[-1]["iteration"],
                **{k: evals[-1][k] for k in _EVAL_KEYS if k in evals[-1]},
            }
            if evals
            else None
        ),
        "finished": finished,
        "state": state,
        "owner": describe_owner(read_owner(run_dir)) if lock != "free" else None,
        "last_checkpoint": last_ckpt,
    }


def format_status(s: dict[str, Any]) -> str:
    """A few lines of plain text for the terminal."""
    lines = [f"run: {s['run_dir']}"]
    done = s["iteration"] + 1
    if s["max_iter"]:
        pct = 100.0 * done / s["max_iter"]
        lines.append(f"progress: {done}/{s['max_iter']} iterations ({pct:.1f} %)")
    else:
        lines.append(f"progress: {done} iterations")
    if s["sec_per_iter"] is not None:
        eta = "done" if s["finished"] else str(s["eta"])
        lines.append(f"speed: {s['sec_per_iter']:.3f} s/iter   eta: {eta}")
    if s["lr"] is not None:
        lines.append(f"lr: {s['lr']:.3e}")
    if s["loss_trend"]:
        trend = "  ".join(f"{v:.3g}@{i}" for i, v in s["loss_trend"])
        first, last = s["loss_trend"][0][1], s["loss_trend"][-1][1]
        arrow = "falling" if last < first else "not falling"
        lines.append(f"loss trend ({arrow}): {trend}")
    lines.append(
        f"NaN skips: {s['nan_skipped']} ({s['nan_consecutive']} in a row)   rollbacks: "
        f"{s['rollbacks']}   clip events: {s['clip_events']}"
    )
    ev = s["last_eval"]
    if ev:
        vals = "  ".join(f"{k.split('/')[-1]} {ev[k]:.2f}" for k in _EVAL_KEYS if k in ev)
        lines.append(f"last evaluation (iteration {ev['iteration']}): {vals}")
    else:
        lines.append("last evaluation: none yet")
    state = s.get("state", "finished" if s["finished"] else "running")
    resume = (
        f"last checkpoint {s['last_checkpoint']}; continue with --resume"
        if s.get("last_checkpoint")
        else "no checkpoint was written"
    )
    if state == "finished":
        lines.append("status: finished (final_metrics.json written)")
    elif state == "running":
        lines.append(f"status: running ({s.get('owner') or 'owner unknown'})")
    elif state == "died":
        lines.append(
            f"status: DIED — the training process ({s.get('owner')}) is gone without finishing "
            f"(killed, out of memory or its machine lost); {resume}"
        )
    else:
        lines.append(f"status: stopped before the end (see log.txt); {resume}")
    return "\n".join(lines)
