"""``tools/eval.py``: evaluate a results file, a trained model, or compare runs.

Three modes, one per invocation:

* ``--gt GT.json --pred PRED.json [--out DIR]``: COCO box evaluation of a results file, with no
  model and no config. This path never imports torch.
* ``--config-file CFG MODEL.WEIGHTS CKPT [KEY VALUE ...]``: inference on ``DATASETS.TEST``;
  predictions json, metrics and report files are written to ``--out`` (default
  ``OUTPUT_DIR/eval``), one sub-folder per dataset when there are several.
* ``--compare RUN_OR_METRICS ... [--baseline NAME] [--baselines FILE.yaml]``: a leaderboard.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.errors import UserError

__all__ = ["build_parser", "main"]


def build_parser() -> DetlabArgumentParser:
    p = DetlabArgumentParser(
        prog="eval.py",
        description="COCO box evaluation by object size and class; leaderboards of runs.",
        epilog="Config overrides follow the options: MODEL.WEIGHTS model_final.pth ...",
    )
    g = p.add_argument_group("results file")
    g.add_argument("--gt", metavar="GT.json", help="COCO ground-truth json")
    g.add_argument("--pred", metavar="PRED.json", help="COCO results json (bbox, score)")
    m = p.add_argument_group("model")
    m.add_argument("--config-file", metavar="FILE", help="config YAML; evaluates DATASETS.TEST")
    c = p.add_argument_group("compare")
    c.add_argument("--compare", nargs="+", metavar="RUN_OR_METRICS",
                   help="run folders or metrics json files (NAME=PATH to name one)")  # fmt: skip
    c.add_argument("--baseline", metavar="NAME", help="entry the deltas are computed against")
    c.add_argument("--baselines", metavar="FILE.yaml", help="reference numbers without a run")
    c.add_argument("--metric", default="AP", help="column to rank by (default AP)")
    o = p.add_argument_group("options")
    o.add_argument("--out", metavar="DIR", help="write metrics, tables and plots here")
    o.add_argument("--area-ranges", metavar="SPEC",
                   help="size buckets in px², e.g. tiny:0:256,small:256:1024,...")  # fmt: skip
    o.add_argument("--backend", choices=("faster_coco_eval", "pycocotools"))
    o.add_argument("--iou-thresh", type=float, help="IoU of P/R/F1 and confusion (0.5)")
    o.add_argument("--score-thresh", type=float, help="score of P/R/F1 and confusion (0.5)")
    o.add_argument("--worst-k", type=int, help="classes listed first (5)")
    o.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    o.add_argument("--workers", type=int,
                   help="processes for the COCO evaluation of --gt/--pred (default: 2 when "
                        "a CPU is idle)")  # fmt: skip
    o.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    p.add_argument("opts", nargs="*", default=[], metavar="KEY VALUE",
                   help="config overrides (with --config-file)")  # fmt: skip
    return p


def _print_warnings(caught: list) -> None:
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


def _default_workers() -> int:
    """2 when this machine has at least two CPUs and one of them is idle, else 1."""
    cpus = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        busy = 0.0
    return 2 if cpus >= 2 and busy <= cpus - 1 else 1


def _eval_files(args: argparse.Namespace) -> int:
    from detlab.evaluation.report import evaluate_to_dir

    if not (args.gt and args.pred):
        raise UserError("--gt and --pred go together: pass both a ground-truth and a results json.")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        report = evaluate_to_dir(
            args.gt,
            args.pred,
            args.out,
            area_ranges=args.area_ranges,
            backend=args.backend or "faster_coco_eval",
            iou_thresh=0.5 if args.iou_thresh is None else args.iou_thresh,
            score_thresh=0.5 if args.score_thresh is None else args.score_thresh,
            worst_k=5 if args.worst_k is None else args.worst_k,
            plots=not args.no_plots,
            workers=args.workers or _default_workers(),
        )
    _print_warnings(caught)
    print(report.console())
    if args.out:
        print(f"\nWrote metrics.json, per_class.csv, report.md and figures to {args.out}")
    return 0


def _config_overrides(args: argparse.Namespace) -> list[str]:
    """Command-line options that map onto TEST.* keys, as config overrides."""
    pairs = {
        "TEST.AREA_RANGES": args.area_ranges and str([args.area_ranges]),
        "TEST.COCO_BACKEND": args.backend,
        "TEST.MATCH_IOU_THRESH": args.iou_thresh,
        "TEST.MATCH_SCORE_THRESH": args.score_thresh,
        "TEST.WORST_K": args.worst_k,
        "TEST.PLOTS": False if args.no_plots else None,
    }
    return [f"{k}={v}" for k, v in pairs.items() if v is not None]


def load_model_weights(model: Any, path: str) -> None:
    """Load the checkpoint to evaluate, strictly: every weight of the model must be in it.

    ``path`` is a file or a ``MODEL.WEIGHTS`` source; detlab checkpoints, Detectron2 ``.pth``
    and ``.pkl`` files and torchvision state dicts are read and renamed by the steps of the
    one loader (:mod:`detlab.modeling.weights`), then loaded strictly.
    """
    from detlab.modeling.weights import map_names, read_spec

    if not path:
        raise UserError("MODEL.WEIGHTS is empty; pass the checkpoint to evaluate: MODEL.WEIGHTS "
                        "path/to/model_final.pth.")  # fmt: skip
    state = map_names(read_spec(path), model)[0]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)
        raise UserError(
            f"MODEL.WEIGHTS file {path} does not fit this model ({first.strip().rstrip('.')}); "
            "check MODEL.* matches the training config."
        ) from None
    missing = list(getattr(result, "missing_keys", []))
    if missing:
        raise UserError(
            f"MODEL.WEIGHTS file {path} does not fit this model: {len(missing)} weights are "
            f"missing (e.g. {', '.join(missing[:3])}); check MODEL.* matches the training config."
        )


def _eval_model(args: argparse.Namespace) -> int:
    from detlab.config import load_config

    cfg = load_config(args.config_file, [*args.opts, *_config_overrides(args)])
    from detlab.data import build_detection_test_loader
    from detlab.data import register_from_config as _register
    from detlab.evaluation.evaluator import build_evaluator, inference_on_dataset
    from detlab.modeling import build_model

    _register(cfg)
    model = build_model(cfg)
    load_model_weights(model, cfg.MODEL.WEIGHTS)
    out = args.out or os.path.join(cfg.OUTPUT_DIR, "eval")
    names = list(cfg.DATASETS.TEST)
    if not names:
        raise UserError("DATASETS.TEST is empty; name the datasets to evaluate on.")
    for name in names:
        out_dir = out if len(names) == 1 else os.path.join(out, name)
        evaluator = build_evaluator(cfg, name, out_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            inference_on_dataset(model, build_detection_test_loader(cfg, name), evaluator)
        _print_warnings(caught)
        report = getattr(evaluator, "last_report", None)
        if report is not None:
            print(f"== {name}\n{report.console()}\n")
        print(f"Wrote predictions, metrics and report for {name} to {out_dir}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from detlab.evaluation.compare import compare_runs

    _, _, md = compare_runs(
        args.compare, args.baselines, args.baseline, metric=args.metric, out_dir=args.out
    )
    print(md, end="")
    if args.out:
        print(f"\nWrote leaderboard.md and leaderboard.csv to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> int:
        modes = [bool(args.gt or args.pred), bool(args.config_file), args.compare is not None]
        if sum(modes) != 1:
            raise UserError(
                "Choose one mode: --gt GT.json --pred PRED.json, --config-file CFG MODEL.WEIGHTS "
                "CKPT, or --compare RUN ... (see --help)."
            )
        if args.opts and not args.config_file:
            raise UserError(f"Unexpected arguments {' '.join(args.opts)}; config overrides "
                            "need --config-file.")  # fmt: skip
        if args.compare is not None or args.baselines:
            return _compare(args)
        if args.config_file:
            return _eval_model(args)
        return _eval_files(args)

    if args.baselines and args.compare is None:
        args.compare = []
    try:
        return run_tool(run, debug=args.debug)
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
