"""Training: the trainer loop, hooks, NaN guard, checkpoints and launch."""

from detlab.engine.checkpoint import Checkpointer
from detlab.engine.defaults import default_setup
from detlab.engine.hooks import HOOK_REGISTRY, HookBase
from detlab.engine.launch import launch
from detlab.engine.nan_guard import NaNGuard, TrainingDivergedError
from detlab.engine.preflight import PreflightError
from detlab.engine.pruning import SweepPruningHook
from detlab.engine.train_step import TrainStep
from detlab.engine.trainer import Trainer

__all__ = [
    "HOOK_REGISTRY",
    "Checkpointer",
    "HookBase",
    "NaNGuard",
    "PreflightError",
    "SweepPruningHook",
    "TrainStep",
    "Trainer",
    "TrainingDivergedError",
    "default_setup",
    "launch",
]
