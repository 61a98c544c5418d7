"""``SOLVER.*`` defaults: optimizer, schedule, clipping, NaN guard, checkpoints."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_solver_defaults"]


def add_solver_defaults(cfg: CN) -> None:
    cfg.SOLVER = CN()
    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" | "AdamW"
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.NESTEROV = False
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.MAX_ITER = 90000
    cfg.SOLVER.STEPS = (60000, 80000)
    cfg.SOLVER.GAMMA = 0.1
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # or "WarmupCosineLR"
    cfg.SOLVER.WARMUP_ITERS = 1000
    cfg.SOLVER.WARMUP_FACTOR = 0.001
    cfg.SOLVER.WARMUP_METHOD = "linear"  # "linear" | "constant"
    cfg.SOLVER.IMS_PER_BATCH = 16  # total over all processes
    cfg.SOLVER.CHECKPOINT_PERIOD = 5000

    cfg.SOLVER.CLIP_GRADIENTS = CN()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # "value" | "norm" | "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
