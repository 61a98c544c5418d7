"""The full box-evaluation report: COCO metrics + matching, as tables and files (torch-free).

:func:`run_evaluation` computes everything from COCO ground truth and detections;
:func:`write_outputs` writes ``metrics.json`` (``{"bbox": results}``, percent, NaN-free),
``per_class.csv``, ``confusion_matrix.csv``, ``report.md`` and, unless disabled, the plots
``pr_curves.png``, ``size_ap.png`` and ``confusion_matrix.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detlab.evaluation.coco_io import ensure_output_dir
from detlab.evaluation.coco_metrics import CocoMetrics, bucket_suffixes, evaluate_coco
from detlab.evaluation.leaderboard import to_markdown
from detlab.evaluation.matching import MatchResult, match_detections
from detlab.utils.errors import UserError

__all__ = ["EvaluationReport", "evaluate_to_dir", "run_evaluation", "write_outputs"]


@dataclass
class EvaluationReport:
    """COCO metrics and matching counts of one evaluation, with its table renderings."""

    metrics: CocoMetrics
    matches: MatchResult
    worst_k: int = 5

    @property
    def bucket_keys(self) -> list[str]:
        """``APs``-style keys of the size buckets, in bucket order."""
        suffix = bucket_suffixes(self.metrics.bucket_names)
        return [f"AP{suffix[n]}" for n in self.metrics.bucket_names]

    def class_rows(self) -> list[dict[str, Any]]:
        """One row per class (category order): counts, AP/AP50/AP75/AP<b>, P/R/F1 (percent)."""
        prf = self.matches.per_class()
        rows = []
        for k, row in enumerate(self.metrics.per_class):
            out = {
                "class": row["class"],
                "category_id": row["category_id"],
                "num_gt": int(self.matches.num_gt[k]),
                "num_det": int(self.matches.num_det[k]),
            }
            out.update({key: row.get(key) for key in ("AP", "AP50", "AP75", *self.bucket_keys)})
            out.update(prf[k])
            rows.append(out)
        return rows

    def worst_first(self) -> list[dict[str, Any]]:
        """Class rows by ascending AP; classes without ground truth (no AP) last."""
        rows = self.class_rows()
        scored = sorted((r for r in rows if r["AP"] is not None), key=lambda r: r["AP"])
        return scored + [r for r in rows if r["AP"] is None]

    def results(self) -> dict[str, float]:
        """The ``bbox`` results dict: summary, ``macro-F1``, then per-class metrics."""
        out = dict(self.metrics.summary)
        macro = self.matches.macro_f1()
        if macro is not None:
            out["macro-F1"] = macro
        per_class_keys = ("AP", "AP50", "AP75", *self.bucket_keys, "precision", "recall", "F1")
        for row in self.class_rows():
            for key in per_class_keys:
                if row.get(key) is not None:
                    out[f"{key}-{row['class']}"] = float(row[key])
        return out

    # ------------------------------------------------------------------ renderings
    def _summary_rows(self) -> tuple[list[dict], list[str], list[dict], list[str]]:
        s = self.metrics.summary
        ap_cols = ["AP", "AP50", "AP75", *self.bucket_keys]
        ar_cols = ["AR1", "AR10", "AR100", *("AR" + k[2:] for k in self.bucket_keys)]
        return [{c: s.get(c) for c in ap_cols}], ap_cols, [{c: s.get(c) for c in ar_cols}], ar_cols

    def _class_columns(self) -> list[str]:
        return ["class", "num_gt", "num_det", "AP", "AP50", "AP75", *self.bucket_keys,
                "precision", "recall", "F1"]  # fmt: skip

    def _header(self) -> str:
        m = self.metrics
        return (
            f"COCO box evaluation ({m.backend}): {len(m.gt['images'])} images, "
            f"{len(m.cat_ids)} classes, {len(m.predictions)} detections; size buckets "
            + ", ".join(f"{n} {_area(lo)}-{_area(hi)} px²" for n, (lo, hi) in m.area_ranges.items())
        )

    def _prf_note(self) -> str:
        macro = self.matches.macro_f1()
        macro_txt = "n/a" if macro is None else f"{macro:.2f}"
        return (
            f"precision/recall/F1 at score >= {self.matches.score_thresh:g} and IoU >= "
            f"{self.matches.iou_thresh:g}; macro F1 = {macro_txt}"
        )

    def console(self) -> str:
        """Readable plain-text tables: summary, then every class with the worst k first."""
        ap_rows, ap_cols, ar_rows, ar_cols = self._summary_rows()
        rows = self.worst_first()
        k = min(self.worst_k, sum(r["AP"] is not None for r in rows))
        parts = [
            self._header(),
            "",
            _text_table(ap_rows, ap_cols),
            _text_table(ar_rows, ar_cols),
            "",
            f"Per class, worst {k} by AP first ({self._prf_note()}):",
            _text_table(rows, self._class_columns(), rule_after=k),
        ]
        return "\n".join(parts)

    def markdown(self) -> str:
        """``report.md``: summary, per-class table (worst first) and the confusion matrix."""
        ap_rows, ap_cols, ar_rows, ar_cols = self._summary_rows()
        names = [*self.metrics.class_names, "background"]
        cm_rows = [
            {"gt \\ predicted": n, **dict(zip(names, map(int, counts), strict=True))}
            for n, counts in zip(names, self.matches.confusion, strict=True)
        ]
        k = min(self.worst_k, sum(r["AP"] is not None for r in self.class_rows()))
        return "\n".join(
            [
                "# Box evaluation report",
                "",
                self._header() + ".",
                "",
                "## Average precision and recall (%)",
                "",
                to_markdown(ap_rows, ap_cols),
                to_markdown(ar_rows, ar_cols),
                f"## Per class, worst {k} by AP first",
                "",
                f"AP columns in %; {self._prf_note()}.",
                "",
                to_markdown(self.worst_first(), self._class_columns()),
                "## Confusion matrix",
                "",
                f"Rows: ground truth, columns: predictions (score >= "
                f"{self.matches.score_thresh:g}, IoU >= {self.matches.iou_thresh:g}); "
                "background = missed boxes (last column) and false alarms (last row).",
                "",
                to_markdown(cm_rows, ["gt \\ predicted", *names]),
            ]
        )


def _area(value: float) -> str:
    return "inf" if value >= 1e10 else f"{value:g}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], rule_after: int = 0):
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in pairs)

    out = [line(columns)]
    for i, row in enumerate(cells):
        if rule_after and i == rule_after and i < len(cells):
            out.append("-" * len(out[0]))
        out.append(line(row))
    return "\n".join(out)


def _dets(metrics: CocoMetrics) -> Any:
    return metrics.det_arrays if metrics.det_arrays is not None else metrics.predictions


def run_evaluation(
    gt: Any,
    predictions: Any,
    *,
    area_ranges: Any = None,
    backend: str = "faster_coco_eval",
    iou_thresh: float = 0.5,
    score_thresh: float = 0.5,
    worst_k: int = 5,
    workers: int = 1,
) -> EvaluationReport:
    """COCO metrics and matching of ``predictions`` against ``gt`` (paths or objects)."""
    metrics = evaluate_coco(
        gt, predictions, area_ranges=area_ranges, backend=backend, workers=workers
    )
    matches = match_detections(
        metrics.gt, _dets(metrics), metrics.cat_ids, iou_thresh, score_thresh
    )
    return EvaluationReport(metrics=metrics, matches=matches, worst_k=worst_k)


def write_outputs(
    report: EvaluationReport, out_dir: str | os.PathLike, plots: bool = True
) -> list[str]:
    """Write the report's files into ``out_dir`` (created); returns the written paths."""
    out_dir = ensure_output_dir(out_dir)
    try:
        return _write_outputs(report, out_dir, plots)
    except OSError as err:
        raise UserError(f"Cannot write the report into {out_dir}: {err}.") from None


def _write_outputs(report: EvaluationReport, out_dir: str, plots: bool) -> list[str]:
    written = []

    def path(name: str) -> str:
        written.append(os.path.join(out_dir, name))
        return written[-1]

    with open(path("metrics.json"), "w", encoding="utf-8") as f:
        json.dump({"bbox": report.results()}, f, indent=2, allow_nan=False)
    rows = report.class_rows()
    columns = ["class", "category_id", "num_gt", "num_det", "AP", "AP50", "AP75",
               *report.bucket_keys, "precision", "recall", "F1"]  # fmt: skip
    with open(path("per_class.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r[c] for c in columns])
    names = [*report.metrics.class_names, "background"]
    with open(path("confusion_matrix.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["gt \\ predicted", *names])
        for name, counts in zip(names, report.matches.confusion.tolist(), strict=True):
            writer.writerow([name, *counts])
    with open(path("report.md"), "w", encoding="utf-8") as f:
        f.write(report.markdown())
    if plots:
        from detlab.evaluation.plots import plot_confusion_matrix, plot_pr_curves, plot_size_ap

        plot_pr_curves(report, path("pr_curves.png"))
        plot_size_ap(report, path("size_ap.png"))
        plot_confusion_matrix(report, path("confusion_matrix.png"))
    return written


def evaluate_to_dir(
    gt: Any,
    predictions: Any,
    out_dir: str | os.PathLike | None,
    *,
    area_ranges: Any = None,
    backend: str = "faster_coco_eval",
    iou_thresh: float = 0.5,
    score_thresh: float = 0.5,
    worst_k: int = 5,
    plots: bool = True,
    workers: int = 1,
) -> EvaluationReport:
    """:func:`run_evaluation` + :func:`write_outputs`, overlapped with the figure drawing.

    On Linux the figures are drawn by a process forked at the start (it imports matplotlib
    while the files are read, and draws while the matching runs), and with ``workers > 1``
    the COCO evaluation is split by category over that many processes. Results are
    identical to the sequential path. Call it from a plain process (a tool), not from a
    training loop with threads running.
    """
    plotter = None
    if out_dir is not None:
        out_dir = ensure_output_dir(out_dir)
    if out_dir is not None and plots:
        from detlab.evaluation.plots import BackgroundPlotter

        plotter = BackgroundPlotter()
    try:
        metrics = evaluate_coco(
            gt, predictions, area_ranges=area_ranges, backend=backend, workers=workers
        )
        light = dataclasses.replace(
            metrics,
            gt={"images": [], "annotations": [], "categories": []},
            predictions=[],
            det_arrays=None,
        )
        if plotter is not None:
            early = EvaluationReport(light, None, worst_k)  # type: ignore[arg-type]
            for name in ("pr_curves.png", "size_ap.png"):
                plotter.draw(name, early, os.path.join(out_dir, name))
        matches = match_detections(
            metrics.gt, _dets(metrics), metrics.cat_ids, iou_thresh, score_thresh
        )
        report = EvaluationReport(metrics=metrics, matches=matches, worst_k=worst_k)
        if plotter is not None:
            late = EvaluationReport(light, matches, worst_k)
            plotter.draw(
                "confusion_matrix.png", late, os.path.join(out_dir, "confusion_matrix.png")
            )
        if out_dir is not None:
            write_outputs(report, out_dir, plots=plots and plotter is None)
    finally:
        if plotter is not None:
            plotter.close()
    return report
