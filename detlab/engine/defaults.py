"""Run setup shared by tools and the trainer: output dir, logging, env report, seed."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from detlab.utils import comm
from detlab.utils.env import collect_env_info, seed_all_rng
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

    Creates ``OUTPUT_DIR``, sets up ``log.txt``, writes ``env.txt`` and the resolved
    ``config.yaml`` (main process), seeds every generator with ``SEED + rank`` and applies
    ``DETERMINISTIC``/``CUDNN_BENCHMARK``.
    """
    rank = comm.get_rank()
    out = cfg.OUTPUT_DIR
    if comm.is_main_process():
        os.makedirs(out, exist_ok=True)
    comm.synchronize()
    logger = setup_logger(out, rank=rank)
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
