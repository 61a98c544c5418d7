"""``tools/train_net.py``: parse → check config → launch processes → train/evaluate."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from detlab.config import load_config
from detlab.engine.launch import launch
from detlab.utils import comm
from detlab.utils.cli import default_argument_parser, run_tool
from detlab.utils.file_io import atomic_write_text

__all__ = ["main", "main_from_args", "train_main"]

logger = logging.getLogger("detlab")


def train_main(args: Any, trainer_cls: Any = None) -> dict[str, Any]:
    """One process's job: setup, then ``--eval-only`` evaluation or training."""
    from detlab.engine.defaults import default_setup
    from detlab.engine.trainer import Trainer

    trainer_cls = trainer_cls or Trainer
    cfg = default_setup(load_config(args.config_file, args.opts), args)
    if args.eval_only:
        from detlab.engine.trainer import register_datasets

        register_datasets(cfg)
        model = trainer_cls.build_model(cfg)
        _load_eval_weights(cfg, model)
        results = trainer_cls.test(cfg, model)
        if comm.is_main_process():
            path = os.path.join(cfg.OUTPUT_DIR, "final_metrics.json")
            atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True) + "\n")
        return results
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _load_eval_weights(cfg: Any, model: Any) -> None:
    from detlab.modeling import load_model_weights
    from detlab.utils.errors import UserError

    if not cfg.MODEL.WEIGHTS:
        raise UserError("--eval-only needs MODEL.WEIGHTS; pass MODEL.WEIGHTS path/to/model.pth.")
    load_model_weights(model, cfg.MODEL.WEIGHTS)


def main_from_args(args: Any, trainer_cls: Any = None) -> int:
    """Exit status: 0 success, 2 user error (one line on stderr), 1 divergence."""
    from detlab.engine.nan_guard import TrainingDivergedError

    def run() -> int:
        # Check the config (keys, types, files) here, before any process starts.
        load_config(args.config_file, args.opts)
        try:
            status = launch(
                train_main,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args, trainer_cls),
            )
        except TrainingDivergedError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return status if isinstance(status, int) else 0

    return run_tool(run, debug=args.debug)


def main(argv: list[str] | None = None, trainer_cls: Any = None) -> int:
    """Entry point of ``tools/train_net.py``; returns the exit status."""
    parser = default_argument_parser("Train (or evaluate) a detector from a config file.")
    return main_from_args(parser.parse_args(argv), trainer_cls)
