"""``HOOK_REGISTRY`` and the hook interface of the trainer."""

from __future__ import annotations

from detlab.utils.errors import ContractError
from detlab.utils.registry import Registry

__all__ = ["HOOK_REGISTRY", "HookBase"]


def _check_hook(hook: object, label: str) -> None:
    if not isinstance(hook, HookBase):
        raise ContractError(
            f"{label} breaks its contract: it built a {type(hook).__name__}, not a HookBase."
        )


HOOK_REGISTRY = Registry(
    "HOOK",
    doc="""Trainer hooks that a config can add by name (``TRAINER.EXTRA_HOOKS``).

A registered class subclasses :class:`HookBase` (checked when built) and its
``from_config(cfg) -> dict`` returns its constructor's keyword arguments. The trainer sets
``hook.trainer`` before training and calls ``before_train``, ``before_step``,
``after_backward``, ``after_step`` and ``after_train`` in registration order. A hook with
``state_dict()``/``load_state_dict()`` has its state saved in checkpoints under its class name.
""",
    check=_check_hook,
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
