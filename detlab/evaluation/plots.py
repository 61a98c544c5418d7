"""PNG figures of an evaluation report (matplotlib, Agg canvas, imported only when drawing).

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, without pyplot, so
drawing needs no display and leaves no global state behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from detlab.evaluation.report import EvaluationReport

__all__ = [
    "PLOTTERS",
    "BackgroundPlotter",
    "plot_confusion_matrix",
    "plot_pr_curves",
    "plot_size_ap",
]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> None:
    fig.savefig(os.fspath(path), dpi=100)


def plot_pr_curves(report: EvaluationReport, path: str | os.PathLike) -> None:
    """Precision-recall curves at IoU 0.5 and 0.75 (101 COCO recall points, area all)."""
    m = report.metrics
    fig = _figure(11, 4.8)
    for col, iou in enumerate((0.5, 0.75)):
        ax = fig.add_subplot(1, 2, col + 1)
        t = int(np.argmin(np.abs(m.iou_thrs - iou)))
        prec = m.precision[t, :, :, 0, -1]  # R×K
        valid = [k for k in range(prec.shape[1]) if (prec[:, k] > -1).all()]
        many = len(valid) > 12
        for k in valid:
            ap = prec[:, k].mean() * 100
            ax.plot(m.rec_thrs, prec[:, k], lw=0.8 if many else 1.3, alpha=0.6 if many else 0.9,
                    label=None if many else f"{m.class_names[k]} ({ap:.1f})")  # fmt: skip
        if valid:
            mean = prec[:, valid].mean(axis=1)
            ax.plot(
                m.rec_thrs, mean, color="black", lw=2.5, label=f"mean ({mean.mean() * 100:.1f})"
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"IoU = {iou:g} (AP in legend)")
        ax.grid(alpha=0.3)
        if valid:
            ax.legend(fontsize=7, loc="upper right")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.11, top=0.92, wspace=0.18)
    _save(fig, path)


def plot_size_ap(report: EvaluationReport, path: str | os.PathLike) -> None:
    """Left: overall AP and AR per size bucket; right: class × bucket AP heat map."""
    m = report.metrics
    keys = report.bucket_keys
    buckets = m.bucket_names
    fig = _figure(12, max(4.0, 1.2 + 0.28 * len(m.cat_ids)))
    ax = fig.add_subplot(1, 2, 1)
    x = np.arange(len(buckets))
    ap = [m.summary.get(k, np.nan) for k in keys]
    ar = [m.summary.get("AR" + k[2:], np.nan) for k in keys]
    ax.bar(x - 0.2, ap, 0.4, label="AP")
    ax.bar(x + 0.2, ar, 0.4, label="AR@100")
    for xi, (a, r) in enumerate(zip(ap, ar, strict=True)):
        for dx, v in ((-0.2, a), (0.2, r)):
            ax.text(xi + dx, 0 if np.isnan(v) else v, "n/a" if np.isnan(v) else f"{v:.1f}",
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    labels = [
        f"{b}\n{lo:g}-{'inf' if hi >= 1e10 else f'{hi:g}'}" for b, (lo, hi) in m.area_ranges.items()
    ]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("AP / AR by object size (px²)")
    ax.legend()
    ax2 = fig.add_subplot(1, 2, 2)
    grid = np.array([[np.nan if r.get(k) is None else r[k] for k in keys] for r in m.per_class])
    grid = grid.reshape(len(m.cat_ids), len(keys))
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(under="lightgrey")
    im = ax2.imshow(np.nan_to_num(grid, nan=-1), vmin=0, vmax=100, cmap=cmap, aspect="auto")
    if len(m.cat_ids) <= 40:
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                txt = "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.1f}"
                ax2.text(j, i, txt, ha="center", va="center", fontsize=7, color="white")
        ax2.set_yticks(range(len(m.cat_ids)), m.class_names, fontsize=7)
    ax2.set_xticks(range(len(keys)), buckets, fontsize=8)
    ax2.set_title("AP per class and size (grey: no ground truth)")
    fig.colorbar(im, ax=ax2, label="AP %")
    fig.subplots_adjust(left=0.05, right=0.97, bottom=0.15, top=0.92, wspace=0.25)
    _save(fig, path)


def plot_confusion_matrix(report: EvaluationReport, path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix (rows: ground truth + background) with counts."""
    cm = report.matches.confusion.astype(np.float64)
    names = [*report.metrics.class_names, "background"]
    n = len(names)
    side = min(16.0, max(4.5, 0.45 * n + 2))
    fig = _figure(side + 1.5, side)
    ax = fig.add_subplot(1, 1, 1)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(totals > 0, cm / totals, 0.0)
    im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")  # fmt: skip
    ticks = range(n)
    fs = 8 if n <= 20 else 6
    ax.set_xticks(ticks, names, rotation=90, fontsize=fs)
    ax.set_yticks(ticks, names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    m = report.matches
    ax.set_title(
        f"Confusion (score >= {m.score_thresh:g}, IoU >= {m.iou_thresh:g}); row-normalised"
    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    margin = min(0.3, 0.012 * max(len(n) for n in names) + 0.08)
    fig.subplots_adjust(left=margin, right=0.9, bottom=margin, top=0.94)
    _save(fig, path)


PLOTTERS = {
    "pr_curves.png": plot_pr_curves,
    "size_ap.png": plot_size_ap,
    "confusion_matrix.png": plot_confusion_matrix,
}


def _plot_worker(conn: Any) -> None:
    """Forked process: import matplotlib at once, then draw each (name, report, path) sent."""
    try:
        import matplotlib.backends.backend_agg  # noqa: F401  (the slow part, done early)
        import matplotlib.figure  # noqa: F401

        while (msg := conn.recv()) is not None:
            name, report, path = msg
            PLOTTERS[name](report, path)
        conn.send(("ok", ""))
    except BaseException as err:  # the parent redraws whatever is missing
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


class BackgroundPlotter:
    """Draws the figures in a forked process while the caller keeps computing (Linux only).

    ``draw(name, report, path)`` queues a figure (``report`` is pickled, so pass one without
    the raw ground truth and detections); ``close()`` waits and redraws in this process any
    figure the worker could not produce. Without fork, ``draw`` simply draws in place.
    """

    def __init__(self) -> None:
        import multiprocessing

        self._queued: list[tuple[str, Any, str]] = []
        self._conn = self._proc = None
        if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_plot_worker, args=(child,), daemon=True)
            self._proc.start()
            child.close()

    def draw(self, name: str, report: EvaluationReport, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        if self._conn is None:
            PLOTTERS[name](report, path)
            return
        self._queued.append((name, report, path))
        with contextlib.suppress(OSError):  # worker gone: close() redraws
            self._conn.send((name, report, path))

    def close(self, timeout: float = 300.0) -> None:
        if self._conn is None:
            return
        status = "error"
        try:
            self._conn.send(None)
            if self._conn.poll(timeout):
                status, _ = self._conn.recv()
        except (OSError, EOFError):
            pass
        self._conn.close()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
        self._conn = None
        for name, report, path in self._queued:
            if status != "ok" or not os.path.isfile(path):
                PLOTTERS[name](report, path)
