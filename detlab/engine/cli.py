"""``tools/train_net.py``: parse → check config → launch processes → train/evaluate.

Exit status of :func:`main_from_args`:

* **0** — finished (or ``--eval-only`` done);
* **1** — training diverged (the NaN guard ran out of rollbacks; the message names the last
  healthy checkpoint);
* **2** — a user or environment error, one line on stderr: a bad config value, an
  unusable or busy ``OUTPUT_DIR``, a full disk;
* **75** — preempted: SIGTERM, SIGUSR1 or SIGUSR2 arrived, a checkpoint was saved after the
  current iteration, ``--resume`` continues (a requeued Slurm job does so by itself);
* **130** — interrupted by Ctrl-C (nothing saved beyond the last periodic checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from detlab.config import load_config
from detlab.engine.launch import launch
from detlab.engine.preemption import EXIT_PREEMPTED, TrainingPreempted, requeued_job
from detlab.engine.run_dir import check_output_dir, release_output_dir
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
    if not args.resume and not args.eval_only and requeued_job():
        args.resume = True  # a requeued Slurm job continues where it was stopped
    cfg = load_config(args.config_file, args.opts)
    try:
        cfg = default_setup(cfg, args)
        if args.resume and requeued_job():
            logger.info(
                f"Slurm requeued this job (SLURM_RESTART_COUNT="
                f"{os.environ.get('SLURM_RESTART_COUNT')}): resuming from {cfg.OUTPUT_DIR}."
            )
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
    finally:
        release_output_dir(cfg.OUTPUT_DIR)


def _load_eval_weights(cfg: Any, model: Any) -> None:
    from detlab.modeling import load_model_weights
    from detlab.utils.errors import UserError

    if not cfg.MODEL.WEIGHTS:
        raise UserError("--eval-only needs MODEL.WEIGHTS; pass MODEL.WEIGHTS path/to/model.pth.")
    load_model_weights(model, cfg.MODEL.WEIGHTS)


def main_from_args(args: Any, trainer_cls: Any = None) -> int:
    """Run the job; returns the exit status listed in the module docstring."""
    from detlab.engine.nan_guard import TrainingDivergedError

    def run() -> int:
        # Check the config (keys, types, values) and OUTPUT_DIR before any process starts.
        check_output_dir(load_config(args.config_file, args.opts).OUTPUT_DIR)
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
        except TrainingPreempted as err:
            print(f"stopped: {err}", file=sys.stderr)
            return EXIT_PREEMPTED
        return status if isinstance(status, int) else 0

    return run_tool(run, debug=args.debug)


def main(argv: list[str] | None = None, trainer_cls: Any = None) -> int:
    """Entry point of ``tools/train_net.py``; returns the exit status."""
    parser = default_argument_parser("Train (or evaluate) a detector from a config file.")
    return main_from_args(parser.parse_args(argv), trainer_cls)
