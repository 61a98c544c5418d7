"""``LOGGING.*`` defaults: console period and event writers."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_logging_defaults"]


def add_logging_defaults(cfg: CN) -> None:
    cfg.LOGGING = CN()
    cfg.LOGGING.PERIOD = 20  # iterations between console/JSON/TensorBoard writes
    cfg.LOGGING.TENSORBOARD = True
    cfg.LOGGING.WANDB = CN()
    cfg.LOGGING.WANDB.ENABLED = False
    cfg.LOGGING.WANDB.PROJECT = "detlab"
    cfg.LOGGING.WANDB.MODE = "offline"  # "offline" | "online" | "disabled"
