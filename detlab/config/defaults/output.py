"""Run-level defaults: output directory, seed, determinism."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_output_defaults"]


def add_output_defaults(cfg: CN) -> None:
    cfg.OUTPUT_DIR = "./output"
    cfg.SEED = -1  # -1 = draw a random seed and log it
    cfg.CUDNN_BENCHMARK = False
    cfg.DETERMINISTIC = False
    # Version of the config format, bumped when keys change meaning.
    cfg.VERSION = 1
