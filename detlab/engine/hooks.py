"""``HOOK_REGISTRY`` and the hook interface of the trainer."""

from __future__ import annotations

from detlab.utils.registry import Registry

__all__ = ["HOOK_REGISTRY", "HookBase"]

HOOK_REGISTRY = Registry(
    "HOOK",
    doc="""Trainer hooks that a config can add by name (``TRAINER.EXTRA_HOOKS``).

A registered class subclasses :class:`HookBase` and has ``from_config(cfg) -> dict``. The
trainer sets ``hook.trainer`` before training and calls ``before_train``, ``before_step``,
``after_backward``, ``after_step`` and ``after_train`` in registration order.
""",
)


class HookBase:
    """Base class of trainer hooks; override any of the callbacks."""

    trainer = None

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration (also when training stops early)."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_backward(self) -> None:
        """Called after the backward pass, before clipping and the optimizer step."""

    def after_step(self) -> None:
        """Called after each iteration (also after a skipped one)."""
