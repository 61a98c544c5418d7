"""Ranked tables of runs: the leaderboard shared by ``tools/eval.py --compare`` and sweeps.

Torch-free. An *entry* is a flat dict describing one run: ``name``, any parameters, metric
values (``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ... in percent), ``status``, etc.
:func:`leaderboard_rows` sorts entries by one metric and, given a baseline, adds
``delta-<col>`` fields (entry minus baseline); :func:`to_markdown` and :func:`write_csv` render
rows. A value that is missing, ``None`` or not finite is shown as an empty cell.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from detlab.utils.errors import UserError

__all__ = [
    "DEFAULT_COLUMNS",
    "leaderboard_rows",
    "metric_columns",
    "to_markdown",
    "write_csv",
]

#: The usual leaderboard columns for COCO-style box metrics.
DEFAULT_COLUMNS = ("name", "AP", "AP50", "AP75", "APs", "APm", "APl")

# Fields of an entry that are never metrics, even when numeric.
_NON_METRIC = {"name", "status", "rank", "iteration", "best_iteration", "seed", "run_dir"}


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, text, bool, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric_columns(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Metric-like keys (``AP*``/``AR*`` with a number somewhere), in first-seen order."""
    seen: dict[str, None] = {}
    for entry in entries:
        for key, value in entry.items():
            if key in _NON_METRIC or key.startswith("delta-") or key in seen:
                continue
            if key.startswith(("AP", "AR")) and _number(value) is not None:
                seen[key] = None
    return list(seen)


def leaderboard_rows(
    entries: list[dict],
    metric: str = "AP",
    mode: str = "max",
    baseline: str | None = None,
    *,
    delta_columns: Sequence[str] | None = None,
) -> list[dict]:
    """Entries sorted by ``metric`` (best first), each copied with a 1-based ``rank``.

    Args:
        entries: flat dicts, one per run; each should have a ``name``.
        metric: the column to rank by. Entries without a finite value for it come last, in
            their input order, with ``rank`` None.
        mode: ``"max"`` (higher is better) or ``"min"``.
        baseline: name of the entry to compare against; every row then gets
            ``delta-<col> = row[col] - baseline[col]`` for each column in ``delta_columns``
            (default: the metric-like ``AP*``/``AR*`` columns and ``metric``), or None where
            either value is missing.
        delta_columns: columns to compute deltas for (keyword-only).

    Raises:
        UserError: unknown ``mode``, or ``baseline`` naming no entry.
    """
    if mode not in ("max", "min"):
        raise UserError(f"Leaderboard mode must be 'max' or 'min', got {mode!r}.")
    rows = [dict(e) for e in entries]
    ranked = [r for r in rows if _number(r.get(metric)) is not None]
    unranked = [r for r in rows if _number(r.get(metric)) is None]
    ranked.sort(key=lambda r: _number(r.get(metric)), reverse=(mode == "max"))
    for i, row in enumerate(ranked):
        row["rank"] = i + 1
    for row in unranked:
        row["rank"] = None
    rows = ranked + unranked

    if baseline is not None:
        base = next((r for r in rows if str(r.get("name")) == str(baseline)), None)
        if base is None:
            names = ", ".join(str(r.get("name")) for r in rows[:8]) or "none"
            raise UserError(
                f"Baseline '{baseline}' is not among the compared runs ({names}); pass one of "
                "their names to --baseline."
            )
        cols = list(delta_columns) if delta_columns is not None else metric_columns(rows)
        if delta_columns is None and metric not in cols and _number(base.get(metric)) is not None:
            cols.insert(0, metric)
        for row in rows:
            for col in cols:
                a, b = _number(row.get(col)), _number(base.get(col))
                row[f"delta-{col}"] = None if a is None or b is None else a - b
    return rows


def _cell(value: Any, column: str, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if column.startswith("delta-"):
            return f"{value:+.{digits}f}"
        return f"{value:.{digits}f}"
    return str(value)


def _default_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def to_markdown(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, digits: int = 2
) -> str:
    """A GitHub-flavoured markdown table; floats with ``digits`` decimals, deltas signed.

    ``columns`` defaults to every key of the rows in first-seen order. Numeric columns are
    right-aligned; ``|`` in text is escaped.
    """
    columns = list(columns) if columns is not None else _default_columns(rows)
    if not columns:
        return ""
    numeric = {
        c: any(_number(r.get(c)) is not None for r in rows)
        and all(r.get(c) is None or _number(r.get(c)) is not None for r in rows)
        for c in columns
    }
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"]
    lines.append("|" + "|".join("---:" if numeric[c] else "---" for c in columns) + "|")
    for row in rows:
        cells = [_cell(row.get(c), c, digits).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None, path: str | os.PathLike
) -> None:
    """Write ``rows`` as CSV with a header of ``columns`` (floats to 6 decimals, missing empty)."""
    columns = list(columns) if columns is not None else _default_columns(rows)
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            out = []
            for c in columns:
                v = row.get(c)
                if v is None or (isinstance(v, float) and not math.isfinite(v)):
                    out.append("")
                else:
                    out.append(repr(round(v, 6)) if isinstance(v, float) else str(v))
            writer.writerow(out)
