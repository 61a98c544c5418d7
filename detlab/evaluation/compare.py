"""Collecting runs and reference numbers into leaderboard entries (torch-free).

A run is a training output directory holding ``final_metrics.json`` (or an evaluation
directory holding ``metrics.json``), or such a JSON file itself: ``{"bbox": {"AP": ..}, ..}``.
A training folder without ``final_metrics.json`` (still running, stopped or killed) enters
with its last evaluation from ``metrics.jsonl`` and status ``unfinished``. A sweep root
(``tools/sweep.sh``'s ``output_root``) stands for all its trials that have metrics: read from
its Optuna study (``study.json``; pruned trials show their last evaluation) or its state file.
A baselines YAML holds reference numbers that have no run folder::

    baselines:
      - {name: 3-scale baseline, AP: 34.02, APs: 17.28}
      - {name: published, AP: 36.1, AP50: 55.0}

(a mapping ``{name: {AP: .., ...}}`` works too).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from detlab.evaluation.coco_io import ensure_output_dir, load_json_file
from detlab.evaluation.leaderboard import leaderboard_rows, metric_columns, to_markdown, write_csv
from detlab.utils.errors import UserError

__all__ = ["compare_runs", "load_baselines", "load_run", "load_runs"]

METRICS_FILES = ("final_metrics.json", "metrics.json")
SUMMARY_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _metrics_path(path: str) -> str:
    if os.path.isdir(path):
        for name in METRICS_FILES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise UserError(
            f"Run folder {path} has no {' or '.join(METRICS_FILES)}; pass a finished run's "
            "folder or a metrics json file."
        )
    if os.path.isfile(path):
        return path
    raise UserError(f"{path} is neither a run folder nor a metrics json file; check the path.")


def _unfinished_run(path: str, name: str) -> dict[str, Any] | None:
    """An entry for a training folder without final metrics: its last evaluation, if any."""
    from detlab.monitor.status import read_metrics

    log = os.path.join(path, "metrics.jsonl")
    if not os.path.isdir(path) or not os.path.isfile(log):
        return None
    evals = [r for r in read_metrics(log) if any(k.startswith("bbox/") for k in r)]
    entry: dict[str, Any] = {"name": name or os.path.basename(os.path.abspath(path))}
    if evals:
        last = evals[-1]
        for key, value in last.items():
            metric = key.removeprefix("bbox/")
            if key.startswith("bbox/") and "/" not in metric and _is_number(value):
                entry[metric] = float(value)
        entry["iteration"] = int(last.get("iteration", -1))
        entry["status"] = f"unfinished (last evaluation at iteration {entry['iteration']})"
    else:
        entry["status"] = "unfinished (no evaluation yet)"
    entry["source"] = log
    return entry


def load_run(item: str) -> dict[str, Any]:
    """A leaderboard entry from ``PATH`` or ``NAME=PATH`` (run folder or metrics json)."""
    name, sep, path = item.partition("=")
    if not sep or os.path.exists(item):
        name, path = "", item
    path = os.path.normpath(os.path.expanduser(path))
    if os.path.isdir(path) and not any(
        os.path.isfile(os.path.join(path, f)) for f in METRICS_FILES
    ):
        unfinished = _unfinished_run(path, name)
        if unfinished is not None:
            return unfinished
    metrics_file = _metrics_path(path)
    data = load_json_file(metrics_file, "metrics file")
    if not isinstance(data, Mapping):
        raise UserError(f"The metrics file {metrics_file} must hold a JSON object.")
    box = data.get("bbox", data)
    if not isinstance(box, Mapping) or not any(_is_number(v) for v in box.values()):
        raise UserError(
            f'The metrics file {metrics_file} has no box metrics; expected {{"bbox": '
            '{"AP": ..., ...}}.'
        )
    if not name:
        if os.path.isdir(path):
            name = os.path.basename(os.path.abspath(path))
        elif os.path.basename(path) in METRICS_FILES:
            name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        else:
            name = os.path.splitext(os.path.basename(path))[0]
    entry: dict[str, Any] = {"name": name}
    entry.update({k: float(v) for k, v in box.items() if _is_number(v)})
    for key in ("iteration", "best_iteration"):
        if _is_number(data.get(key)):
            entry[key] = int(data[key])
    entry["status"] = "ok"
    entry["source"] = metrics_file
    return entry


def load_runs(item: str) -> list[dict[str, Any]]:
    """Entries of ``item``: one run (see :func:`load_run`), or every trial of a sweep root."""
    path = os.path.normpath(os.path.expanduser(item))
    if os.path.isdir(path) and not any(
        os.path.isfile(os.path.join(path, name)) for name in METRICS_FILES
    ):
        from detlab.sweep.study_report import sweep_root_entries

        entries = sweep_root_entries(path)
        if entries is not None:
            if not entries:
                raise UserError(f"The sweep in {path} has no trial with box metrics yet.")
            return entries
    return [load_run(item)]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_baselines(path: str) -> list[dict[str, Any]]:
    """Entries from a baselines YAML (see the module docstring)."""
    from detlab.utils.file_io import read_yaml

    data = read_yaml(path, "The baselines file")
    if isinstance(data, Mapping) and "baselines" in data:
        data = data["baselines"]
    items: list[tuple[Any, Any]]
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, list):
        items = [(d.get("name") if isinstance(d, Mapping) else None, d) for d in data]
    else:
        raise UserError(
            f"The baselines file {path} must hold a list of {{name: ..., AP: ...}} entries."
        )
    entries = []
    for i, (name, values) in enumerate(items):
        if not name or not isinstance(values, Mapping):
            raise UserError(
                f"The baselines file {path}: entry {i + 1} needs a name and metric values "
                "(e.g. {name: baseline, AP: 34.0})."
            )
        entry: dict[str, Any] = {"name": str(name)}
        for key, value in values.items():
            if key == "name":
                continue
            if value is not None and not _is_number(value):
                raise UserError(
                    f"The baselines file {path}: '{name}' has {key} = {value!r}; metric values "
                    "must be numbers (percent) or null."
                )
            if value is not None:
                entry[str(key)] = float(value)
        entry["status"] = "baseline"
        entry["source"] = path
        entries.append(entry)
    return entries


def compare_runs(
    items: Sequence[str],
    baselines_file: str | None = None,
    baseline: str | None = None,
    metric: str = "AP",
    out_dir: str | None = None,
) -> tuple[list[dict], list[str], str]:
    """Leaderboard of runs and baselines: ``(rows, columns, markdown)``.

    Writes ``leaderboard.md`` and ``leaderboard.csv`` into ``out_dir`` when given.
    """
    if out_dir:
        ensure_output_dir(out_dir)
    entries = [entry for item in items for entry in load_runs(item)]
    if baselines_file:
        entries.extend(load_baselines(baselines_file))
    if not entries:
        raise UserError("Nothing to compare; pass run folders, metrics files or --baselines.")
    seen: dict[str, int] = {}
    for e in entries:
        if e["name"] in seen:
            seen[e["name"]] += 1
            e["name"] = f"{e['name']} ({seen[e['name']]})"
        else:
            seen[e["name"]] = 1
    rows = leaderboard_rows(entries, metric=metric, baseline=baseline)
    extra = [c for c in metric_columns(entries) if c not in SUMMARY_COLUMNS]
    extra = [c for c in extra if "-" not in c and not c.startswith("AR")]  # other size buckets
    metrics = [*SUMMARY_COLUMNS, *extra]
    if metric not in metrics:
        metrics.insert(0, metric)
    columns = ["rank", "name", *metrics]
    if baseline is not None:
        columns += [f"delta-{c}" for c in metrics if any(f"delta-{c}" in r for r in rows)]
    columns.append("status")
    md = to_markdown(rows, columns)
    if out_dir:
        with open(os.path.join(out_dir, "leaderboard.md"), "w", encoding="utf-8") as f:
            f.write(md)
        write_csv(rows, [*columns, "source"], os.path.join(out_dir, "leaderboard.csv"))
    return rows, columns, md
