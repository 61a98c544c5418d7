"""``LOGGING.*`` defaults: console period and event writers."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_logging_defaults"]


def add_logging_defaults(cfg: CN) -> None:
    cfg.LOGGING = CN()
    cfg.LOGGING.PERIOD = 20  # iterations between console lines
    # Iterations between metrics.jsonl / TensorBoard / wandb writes (1 = every iteration).
    cfg.LOGGING.METRICS_PERIOD = 1
    cfg.LOGGING.TENSORBOARD = True  # write TensorBoard events into OUTPUT_DIR
    # Validation images drawn with ground truth (green) and predictions (red) into TensorBoard
    # at each evaluation; 0 = none.
    cfg.LOGGING.NUM_SAMPLE_IMAGES = 4
    cfg.LOGGING.SAMPLE_SCORE_THRESH = 0.3  # predictions drawn at or above this score
    cfg.LOGGING.WANDB = CN()
    cfg.LOGGING.WANDB.ENABLED = False  # log to Weights & Biases (a failure only warns)
    cfg.LOGGING.WANDB.PROJECT = "detlab"  # wandb project name
    # "offline" | "online" | "disabled"; the WANDB_MODE environment variable wins when set.
    cfg.LOGGING.WANDB.MODE = "offline"
    cfg.LOGGING.WANDB.NAME = ""  # run name; "" = wandb's default
