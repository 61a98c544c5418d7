"""ONNX export of detlab detectors, verified against eager PyTorch with onnxruntime.

The graph (see :mod:`detlab.export.wrappers`) takes ``image`` 1×C×H×W float32 on the
mapper's 0..255 scale, any H and W, and returns ``boxes`` N×4 (XYXY, input pixels),
``scores`` N and ``classes`` N (int64) after NMS. Export uses PyTorch's TorchScript-based
exporter (``dynamo=False``), which traces the size-dependent parts (top-k counts, NMS) into
dynamic ONNX operators.

Verification: each sample image runs through the eager detector and the ONNX model; detections
are matched one to one (same class, every box coordinate within ``box_tol`` pixels, score within
``score_tol``). A detection without a partner passes only if its score lies within
``score_tol`` of a cut-off (the score threshold, or the lowest kept score when the list is full):
there, rounding decides which side it falls on. So does a pair of unpartnered detections, one
from each side, of one class and equal score (within ``score_tol``) that overlap by more than
the NMS IoU threshold: NMS keeps one of two equal-score boxes by an order neither runtime
defines (a swap, as when sigmoid scores saturate at 1.0).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from detlab.export.wrappers import build_export_wrapper
from detlab.utils.errors import UserError

__all__ = [
    "DEFAULT_BOX_TOL",
    "DEFAULT_SCORE_TOL",
    "SampleCheck",
    "checks_to_dicts",
    "compare_detections",
    "export_onnx",
    "measure_latency",
    "run_onnx",
    "verify_onnx",
]

DEFAULT_BOX_TOL = 0.1  # pixels, per box coordinate
DEFAULT_SCORE_TOL = 1e-3
OUTPUT_NAMES = ("boxes", "scores", "classes")


def export_onnx(model: nn.Module, path: str, sample: torch.Tensor, opset: int = 17) -> nn.Module:
    """Trace ``model``'s export wrapper on ``sample`` (C×H×W) and write ``path``.

    Height and width stay dynamic; the number of detections is dynamic. Returns the wrapper.
    """
    try:
        import onnx
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install -e '.[onnx]'.") from None
    wrapper = build_export_wrapper(model.eval())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values are expected
        torch.onnx.export(
            wrapper,
            (sample[None].float(),),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={
                "image": {2: "height", 3: "width"},
                "boxes": {0: "detections"},
                "scores": {0: "detections"},
                "classes": {0: "detections"},
            },
        )
    onnx.checker.check_model(onnx.load(path))
    return wrapper


def _session(path: str) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("Verification needs onnxruntime: pip install -e '.[onnx]'.") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, scores, classes of one C×H×W image from an onnxruntime session."""
    boxes, scores, classes = session.run(None, {"image": image[None].float().cpu().numpy()})
    return boxes, scores, classes


def _eager(model: nn.Module, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = int(image.shape[-2]), int(image.shape[-1])
    with torch.no_grad():
        inst = model([{"image": image, "height": h, "width": w}])[0]["instances"]
    return inst.boxes.cpu().numpy(), inst.scores.cpu().numpy(), inst.classes.cpu().numpy()


@dataclass
class SampleCheck:
    """Agreement of eager and ONNX detections on one image."""

    height: int
    width: int
    eager_detections: int
    onnx_detections: int
    matched: int
    max_box_diff: float
    max_score_diff: float
    unmatched_borderline: int
    unmatched: int
    eager_ms: float = 0.0
    onnx_ms: float = 0.0
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = self.unmatched == 0


def compare_detections(
    eager: Sequence[np.ndarray],
    onnx_out: Sequence[np.ndarray],
    *,
    score_thresh: float,
    max_detections: int,
    box_tol: float = DEFAULT_BOX_TOL,
    score_tol: float = DEFAULT_SCORE_TOL,
    nms_thresh: float | None = None,
) -> dict[str, Any]:
    """Match two (boxes, scores, classes) sets one to one; see the module docstring.

    ``nms_thresh``: the detector's NMS IoU threshold; None leaves equal-score NMS swaps
    counted as unmatched.
    """
    eb, es, ec = (np.asarray(a) for a in eager)
    ob, os_, oc = (np.asarray(a) for a in onnx_out)
    eb, ob = eb.reshape(-1, 4), ob.reshape(-1, 4)
    used = np.zeros(len(ob), bool)
    matched, box_diff, score_diff = 0, 0.0, 0.0
    unmatched_eager: list[int] = []
    for i in np.argsort(-es, kind="stable"):
        cand = (~used) & (oc == ec[i]) & (np.abs(os_ - es[i]) <= score_tol)
        if cand.any():
            d = np.abs(ob - eb[i]).max(axis=1)
            d[~cand] = np.inf
            j = int(np.argmin(d))
            if d[j] <= box_tol:
                used[j] = True
                matched += 1
                box_diff = max(box_diff, float(d[j]))
                score_diff = max(score_diff, float(abs(os_[j] - es[i])))
                continue
        unmatched_eager.append(int(i))
    unmatched_onnx = [int(j) for j in np.flatnonzero(~used)]
    swapped = 0
    if nms_thresh is not None:
        swapped = _nms_swaps(
            (eb, es, ec), (ob, os_, oc), unmatched_eager, unmatched_onnx, score_tol, nms_thresh
        )
    unmatched_scores = [float(es[i]) for i in unmatched_eager]
    unmatched_scores += [float(os_[j]) for j in unmatched_onnx]
    cutoffs = [score_thresh]
    for scores in (es, os_):
        if len(scores) >= max_detections and len(scores):
            cutoffs.append(float(scores.min()))
    at_cutoff = sum(any(abs(s - c) <= score_tol for c in cutoffs) for s in unmatched_scores)
    return {
        "eager_detections": len(es),
        "onnx_detections": len(os_),
        "matched": matched,
        "max_box_diff": box_diff,
        "max_score_diff": score_diff,
        "unmatched_borderline": at_cutoff + swapped,
        "unmatched": len(unmatched_scores) - at_cutoff,
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two XYXY boxes."""
    w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = w * h
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def _nms_swaps(
    eager: Sequence[np.ndarray],
    onnx_out: Sequence[np.ndarray],
    eager_left: list[int],
    onnx_left: list[int],
    score_tol: float,
    nms_thresh: float,
) -> int:
    """Pair unpartnered eager and ONNX detections that NMS may have swapped (same class,
    equal score, IoU above ``nms_thresh``), removing them from the two lists; returns the
    number of detections so paired (2 per pair)."""
    (eb, es, ec), (ob, os_, oc) = eager, onnx_out
    paired = 0
    for i in list(eager_left):
        for j in onnx_left:
            same = ec[i] == oc[j] and abs(es[i] - os_[j]) <= score_tol
            if same and _iou(eb[i], ob[j]) > nms_thresh:
                eager_left.remove(i)
                onnx_left.remove(j)
                paired += 2
                break
    return paired


def measure_latency(fn: Any, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _limits(model: nn.Module) -> tuple[float, int, float]:
    head = getattr(model, "head", None) or getattr(model, "roi_heads", None)
    return float(head.score_thresh), int(head.detections_per_image), float(head.nms_thresh)


def verify_onnx(
    model: nn.Module,
    path: str,
    images: Sequence[torch.Tensor],
    *,
    box_tol: float = DEFAULT_BOX_TOL,
    score_tol: float = DEFAULT_SCORE_TOL,
    repeats: int = 0,
) -> list[SampleCheck]:
    """Compare eager and onnxruntime detections on C×H×W ``images``; optionally time both.

    ``repeats`` > 0 measures the median latency of each over that many runs per image.
    """
    model.eval()
    session = _session(path)
    score_thresh, max_dets, nms_thresh = _limits(model)
    checks = []
    for img in images:
        img = img.float().cpu()
        res = compare_detections(
            _eager(model, img),
            run_onnx(session, img),
            score_thresh=score_thresh,
            max_detections=max_dets,
            box_tol=box_tol,
            score_tol=score_tol,
            nms_thresh=nms_thresh,
        )
        check = SampleCheck(height=int(img.shape[-2]), width=int(img.shape[-1]), **res)
        if repeats > 0:
            check.eager_ms = measure_latency(lambda img=img: _eager(model, img), repeats)
            check.onnx_ms = measure_latency(lambda img=img: run_onnx(session, img), repeats)
        checks.append(check)
    return checks


def checks_to_dicts(checks: Sequence[SampleCheck]) -> list[dict]:
    """Plain dicts for JSON output."""
    return [asdict(c) for c in checks]
