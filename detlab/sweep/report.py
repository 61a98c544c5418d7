"""The sweep leaderboard: ``leaderboard.md`` and ``leaderboard.csv`` in the sweep root.

Rows are built from the state file and each trial's ``final_metrics.json``; sorting and
rendering are :mod:`detlab.evaluation.leaderboard`'s, the same tables ``tools/eval.py
--compare`` prints. Parameter values are shown as compact text (``0.0001``, ``2-3-4``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from detlab.sweep.spec import SweepSpec, split_metric
from detlab.sweep.state import FINISHED, SweepState, atomic_write_text
from detlab.sweep.trials import Trial, format_value, short_keys
from detlab.utils.file_io import read_json_object

__all__ = [
    "METRIC_COLUMNS",
    "leaderboard_columns",
    "metric_column",
    "read_final_metrics",
    "render_leaderboard",
    "trial_entries",
    "write_leaderboard",
]

METRIC_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def metric_column(spec: SweepSpec, metric: str | None = None) -> str:
    """Leaderboard column of a metric (default: the ranking one): ``bbox/APs`` -> ``APs``,
    ``segm/AP`` as is."""
    task, key = split_metric(metric or spec.metric)
    return key if task == "bbox" else f"{task}/{key}"


def read_final_metrics(output_dir: str) -> dict | None:
    """``OUTPUT_DIR/final_metrics.json`` as a dict, or None if absent or unreadable."""
    return read_json_object(os.path.join(output_dir, "final_metrics.json"))


def _metric_value(metrics: dict, task: str, key: str) -> Any:
    block = metrics.get(task)
    if isinstance(block, dict) and key in block:
        return block[key]
    return metrics.get(f"{task}/{key}")  # flat form, e.g. from metrics.jsonl


def _exact_text(value: Any) -> str:
    """A parameter value as exact text for the CSV (``repr`` of floats, JSON of lists)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def trial_entries(spec: SweepSpec, trials: Sequence[Trial], state: SweepState) -> list[dict]:
    """One flat leaderboard entry per trial: parameters under their full dotted keys (as exact
    text), ``status``, ``AP``..``APl`` and the ranking metric, ``best_iteration``, ``wall_time``
    (seconds)."""
    entries = []
    for trial in trials:
        rec = state.trials.get(trial.name, {})
        entry: dict[str, Any] = {"name": trial.name}
        for k, v in trial.params.items():
            entry[k] = _exact_text(v)
        entry["status"] = rec.get("status", "pending")
        metrics = rec.get("metrics") or {}
        for col in METRIC_COLUMNS:
            entry[col] = _metric_value(metrics, "bbox", col)
        for metric in spec.metrics:
            entry[metric_column(spec, metric)] = _metric_value(metrics, *split_metric(metric))
        entry["best_iteration"] = metrics.get("best_iteration")
        last = metrics.get("iteration")
        entry["iterations"] = last + 1 if isinstance(last, int) else None
        if len(spec.metrics) > 1:  # multi-objective: on the Pareto front of the study?
            entry["pareto"] = "yes" if rec.get("pareto") else ""
        wall = rec.get("wall_time")
        entry["wall_time"] = round(float(wall), 1) if isinstance(wall, (int, float)) else None
        entries.append(entry)
    return entries


def leaderboard_columns(spec: SweepSpec) -> list[str]:
    """``rank, name, <param keys>, status, AP..APl, [metrics], best_iteration, wall_time``;
    a study adds ``iterations`` (trained, fewer for a pruned trial) before ``wall_time``."""
    cols = ["rank", "name", *spec.parameters, "status", *METRIC_COLUMNS]
    for metric in spec.metrics:
        if metric_column(spec, metric) not in cols:
            cols.append(metric_column(spec, metric))
    if len(spec.metrics) > 1:
        cols.append("pareto")
    cols.append("best_iteration")
    if spec.study is not None:
        cols.append("iterations")
    return [*cols, "wall_time"]


def _ranked(entries: list[dict], spec: SweepSpec) -> list[dict]:
    """Finished trials ranked by the metric; then pruned ones (best first, no rank: their
    values are from before the end of training); then the rest in trial order."""
    from detlab.evaluation.leaderboard import leaderboard_rows

    metric = metric_column(spec)
    finished = [e for e in entries if e["status"] == FINISHED]
    pruned = [e for e in entries if e["status"] == "pruned"]
    rest = [e for e in entries if e["status"] not in (FINISHED, "pruned")]
    rows = leaderboard_rows(finished, metric=metric, mode=spec.mode)
    for row in leaderboard_rows(pruned, metric=metric, mode=spec.mode):
        rows.append({**row, "rank": None})
    return rows + [{**e, "rank": None} for e in rest]


def render_leaderboard(
    spec: SweepSpec, trials: Sequence[Trial], state: SweepState
) -> tuple[list[dict], str]:
    """Ranked rows (CSV form) and the markdown page, from the state; writes nothing."""
    from detlab.evaluation.leaderboard import to_markdown

    rows = _ranked(trial_entries(spec, trials, state), spec)
    columns = leaderboard_columns(spec)
    # The markdown table names parameters by their shortest unique suffix, values compact.
    short = short_keys(list(spec.parameters))
    by_name = {t.name: t for t in trials}
    md_rows = []
    for row in rows:
        shown = {k: v for k, v in row.items() if k not in short}
        params = by_name[row["name"]].params
        shown.update({short[k]: format_value(params[k]) for k in short})
        md_rows.append(shown)
    md_columns = [short.get(c, c) for c in columns]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    legend = "\n".join(f"- `{col}` = `{k}`" for k, col in short_keys(list(spec.parameters)).items())
    text = (
        f"# Sweep leaderboard: {os.path.basename(spec.path)}\n\n"
        f"Ranked by `{spec.metric}` ({spec.mode}); {len(rows)} trials: {summary}. "
        f"Updated {time.strftime('%Y-%m-%d %H:%M:%S')}. Metrics in percent, wall time in s.\n\n"
        f"{to_markdown(md_rows, md_columns)}\nParameters:\n{legend}\n"
    )
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        text += "\nFailed trials (see `<trial>/run.log`): "
        text += ", ".join(r["name"] for r in failed) + ".\n"
    return rows, text


def write_leaderboard(
    spec: SweepSpec, trials: Sequence[Trial], state: SweepState, root: str
) -> list[dict]:
    """Rank the trials by the spec's metric and (re)write the two leaderboard files."""
    import socket

    from detlab.evaluation.leaderboard import write_csv

    rows, text = render_leaderboard(spec, trials, state)
    atomic_write_text(os.path.join(root, "leaderboard.md"), text)
    # A name of its own: several workers, on several hosts, may write at once.
    tmp = os.path.join(root, f".leaderboard.csv.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        write_csv(rows, leaderboard_columns(spec), tmp)
        os.replace(tmp, os.path.join(root, "leaderboard.csv"))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return rows


def best_row(rows: Sequence[dict]) -> dict | None:
    """The first ranked, finished row, if any."""
    for row in rows:
        if row.get("rank") is not None and row.get("status") == FINISHED:
            return row
    return None
