"""Training: the trainer loop, hooks, NaN guard, checkpoints and launch."""

from detlab.engine.hooks import HOOK_REGISTRY, HookBase

__all__ = ["HOOK_REGISTRY", "HookBase"]
