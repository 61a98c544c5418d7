"""Run setup shared by tools and the trainer: output dir, logging, env report, seed."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from detlab.config import check_config
from detlab.engine.run_dir import claim_output_dir
from detlab.utils import comm
from detlab.utils.env import collect_env_info, seed_all_rng
from detlab.utils.errors import UserError
from detlab.utils.file_io import atomic_write_text
from detlab.utils.logger import setup_logger

__all__ = ["default_setup", "resolve_seed"]


def resolve_seed(cfg: Any) -> int:
    """``cfg.SEED``, or a random seed (the same on every process) when it is negative."""
    seed = int(cfg.SEED)
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        seed = int(comm.broadcast_object(seed))
    return seed


def default_setup(cfg: Any, args: Any = None) -> Any:
    """Prepare a run; returns the config with ``SEED`` resolved (frozen again if it was).

    Claims ``OUTPUT_DIR`` (checked writable, locked against a second run, temporary files of
    a killed save removed, and for a fresh start from the command line — ``args`` without
    ``--resume`` or ``--eval-only`` — an earlier run's files moved aside; see
    :mod:`detlab.engine.run_dir`), sets up ``log.txt``, writes ``env.txt`` and the resolved
    ``config.yaml`` (main process), seeds every generator with ``SEED + rank`` and applies
    ``DETERMINISTIC``/``CUDNN_BENCHMARK``.
    """
    check_config(cfg)  # a config built in Python gets the checks load_config runs
    rank = comm.get_rank()
    out = cfg.OUTPUT_DIR
    notes: list[str] = []
    error: UserError | None = None
    if comm.is_main_process():
        fresh = args is not None and not getattr(args, "resume", False)
        fresh = fresh and not getattr(args, "eval_only", False)
        try:
            notes = claim_output_dir(out, fresh=fresh)
        except UserError as err:
            error = err
    failed = comm.broadcast_object(str(error) if error is not None else None)
    if error is not None:
        raise error
    if failed:
        raise UserError(str(failed))
    logger = setup_logger(out, rank=rank)
    for note in notes:
        logger.warning(note)
    seed = resolve_seed(cfg)
    frozen = cfg.is_frozen()
    cfg.defrost()
    if int(cfg.SEED) < 0:
        logger.info(f"SEED was -1: using random seed {seed} (saved in config.yaml)")
    cfg.SEED = seed
    if frozen:
        cfg.freeze()
    logger.info(f"Rank {rank} of {comm.get_world_size()}; seed {seed + rank}")
    if args is not None:
        logger.info(f"Command line arguments: {vars(args)}")
    for level, note in getattr(cfg, "load_notes", list)():
        logger.log(level, note)
    if comm.is_main_process():
        env = collect_env_info()
        atomic_write_text(os.path.join(out, "env.txt"), env)
        logger.info("Environment:\n" + env)
        atomic_write_text(os.path.join(out, "config.yaml"), cfg.dump())
        logger.info(f"Full config saved to {os.path.join(out, 'config.yaml')}")
    seed_all_rng(seed + rank)
    if cfg.TRAINER.CPU_THREADS > 0:
        torch.set_num_threads(int(cfg.TRAINER.CPU_THREADS))
    if cfg.DETERMINISTIC:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    logging.getLogger("detlab").setLevel(logging.INFO)
    return cfg
