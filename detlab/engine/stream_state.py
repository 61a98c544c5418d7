"""Checkpointing the recurrent state of event streams, so a resumed stream run is exact.

A model with a :class:`~detlab.modeling.temporal.RecurrentMemory` carries each training
stream slot's state from batch to batch. :class:`StreamStateHook` puts that state into every
checkpoint (each process's own, gathered to the one that writes) and restores it on resume;
the trainer adds the hook by itself when the model has such a memory.
"""

from __future__ import annotations

import logging
from typing import Any

from detlab.engine.hooks import HookBase
from detlab.utils import comm

__all__ = ["StreamStateHook"]

logger = logging.getLogger("detlab")


def _memories(trainer: Any) -> list:
    from detlab.engine.checkpoint import unwrap_model
    from detlab.modeling.temporal import stream_memories

    return stream_memories(unwrap_model(trainer.model))


class StreamStateHook(HookBase):
    """Saves and restores the training streams' recurrent states with the checkpoints."""

    def state_dict(self) -> dict[str, Any]:
        """Every process's states (all processes call this while saving a checkpoint)."""
        mine = [m.stream_state() for m in _memories(self.trainer)]
        return {"per_rank": comm.all_gather_object(mine)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        per_rank = state.get("per_rank") or []
        if len(per_rank) != comm.get_world_size():
            logger.warning(
                "The checkpoint holds recurrent stream states of %d processes, this run has %d; "
                "the streams start from a fresh state.",
                len(per_rank),
                comm.get_world_size(),
            )
            return
        saved = per_rank[comm.get_rank()]
        for memory, st in zip(_memories(self.trainer), saved, strict=False):
            memory.load_stream_state(st)
