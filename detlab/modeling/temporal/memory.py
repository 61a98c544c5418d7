"""``RecurrentMemory``: per-level recurrent cells whose state follows the windows of a stream.

A batch of event windows comes with stream keys per window (set by the sequence loaders):
``slot`` (which stream), ``step`` (order within the batch's clip) and ``is_first`` (reset the
slot's state first). Steps run in order; at each step the windows present are stacked, each
level's cell updates their slots' states, and the outputs replace the backbone features.
Windows without stream keys (plain image loaders) each start from a fresh, unsaved state.

Truncated backpropagation through time: gradients flow through the steps of one batch; the
stored state is detached at the end of every forward pass (so the next batch continues from
its values without a graph) and, with ``detach_every = K``, after every ``K`` windows of a
slot. States that turn non-finite are reset (and counted). Training and evaluation keep
separate memories, so evaluating in the middle of training does not disturb the training
streams; :meth:`stream_state` / :meth:`load_stream_state` save and restore the training one
(checkpoints carry it, so a resumed stream continues exactly).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from detlab.utils.errors import UserError

__all__ = [
    "RecurrentMemory",
    "StreamInfo",
    "labelled_indices",
    "stream_info",
    "stream_memories",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamInfo:
    """Per window of a batch: its slot (None: no stream), step and reset flag."""

    slots: tuple[int | None, ...]
    steps: tuple[int, ...]
    is_first: tuple[bool, ...]


def stream_info(batched_inputs: Sequence[Mapping[str, Any]]) -> StreamInfo:
    """Stream keys of a batch of mapper outputs (see the module docstring)."""
    slots, steps, first = [], [], []
    for x in batched_inputs:
        if "slot" in x:
            slots.append(int(x["slot"]))
            steps.append(int(x.get("step", 0)))
            first.append(bool(x.get("is_first", False)))
        else:
            slots.append(None)
            steps.append(0)
            first.append(True)
    seen = set()
    for s, t in zip(slots, steps, strict=True):
        if s is not None and (s, t) in seen:
            raise UserError(
                f"Two windows of one batch share slot {s} and step {t}; a stream batch holds "
                "one window per slot and step (check the loader's stream keys)."
            )
        seen.add((s, t))
    return StreamInfo(tuple(slots), tuple(steps), tuple(first))


class RecurrentMemory(nn.Module):
    """Recurrent cells on chosen feature levels with a state memory per stream slot.

    Args:
        cells: level name → cell (``TEMPORAL_REGISTRY`` contract).
        detach_every: detach a slot's state after every this many windows (0: only between
            forward passes).
    """

    def __init__(self, cells: Mapping[str, nn.Module], detach_every: int = 0) -> None:
        super().__init__()
        if detach_every < 0:
            raise UserError(f"MODEL.TEMPORAL.DETACH_EVERY must be >= 0, got {detach_every}.")
        self.cells = nn.ModuleDict(dict(cells))
        self.detach_every = int(detach_every)
        # memory[training][slot][level] = state tuple of C×H×W tensors
        self._memory: dict[bool, dict[int, dict[str, tuple[torch.Tensor, ...]]]] = {
            True: {},
            False: {},
        }
        self._since: dict[bool, dict[int, int]] = {True: {}, False: {}}
        self.resets_nonfinite = 0

    @property
    def levels(self) -> list[str]:
        return list(self.cells)

    def reset(self) -> None:
        """Forget every stored state (training and evaluation)."""
        for mode in (True, False):
            self._memory[mode].clear()
            self._since[mode].clear()

    def forward(
        self, features: Mapping[str, torch.Tensor], stream: StreamInfo
    ) -> dict[str, torch.Tensor]:
        n = len(stream.slots)
        memory, since = self._memory[self.training], self._since[self.training]
        outs: dict[str, list[torch.Tensor | None]] = {lvl: [None] * n for lvl in self.cells}
        for step in sorted(set(stream.steps)):
            idx = [i for i in range(n) if stream.steps[i] == step]
            slots = [stream.slots[i] for i in idx]
            for i, s in zip(idx, slots, strict=True):
                if s is not None and stream.is_first[i]:
                    memory.pop(s, None)
                    since.pop(s, None)
            index = torch.tensor(idx, device=next(iter(features.values())).device)
            for lvl, cell in self.cells.items():
                x = features[lvl].index_select(0, index)
                h, new = cell(x, self._gather(memory, slots, lvl, x))
                for j, i in enumerate(idx):
                    outs[lvl][i] = h[j]
                    if slots[j] is not None:
                        memory.setdefault(slots[j], {})[lvl] = tuple(s[j] for s in new)
            for s in slots:
                if s is None:
                    continue
                since[s] = since.get(s, 0) + 1
                if self.detach_every and since[s] >= self.detach_every:
                    memory[s] = _detached(memory[s])
                    since[s] = 0
        out = dict(features)
        for lvl in self.cells:
            out[lvl] = torch.stack(outs[lvl])  # type: ignore[arg-type]
            if features[lvl].is_contiguous(memory_format=torch.channels_last):
                out[lvl] = out[lvl].contiguous(memory_format=torch.channels_last)
        for s in list(memory):
            state = _detached(memory[s])
            if not all(bool(torch.isfinite(t).all()) for st in state.values() for t in st):
                self.resets_nonfinite += 1
                logger.warning("Recurrent state of stream slot %d became non-finite; reset.", s)
                memory.pop(s)
                since.pop(s, None)
                continue
            memory[s] = state
        return out

    @staticmethod
    def _gather(memory, slots, lvl: str, x: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        states = []
        for s in slots:
            st = memory.get(s, {}).get(lvl) if s is not None else None
            if st is not None and st[0].shape != x.shape[1:]:
                logger.warning(
                    "Stream slot %s: input size changed from %s to %s; its state is reset.",
                    s,
                    tuple(st[0].shape[1:]),
                    tuple(x.shape[2:]),
                )
                st = None
            states.append(st)
        if all(st is None for st in states):
            return None
        width = len(next(st for st in states if st is not None))
        parts = []
        for k in range(width):
            parts.append(
                torch.stack(
                    [
                        st[k] if st is not None else torch.zeros_like(x[j])
                        for j, st in enumerate(states)
                    ]
                )
            )
        return tuple(parts)

    # ------------------------------------------------------------------ checkpoints
    def stream_state(self) -> dict[str, Any]:
        """The training memory as CPU tensors (what a checkpoint stores)."""
        return {
            "memory": {
                int(s): {lvl: [t.detach().cpu() for t in st] for lvl, st in levels.items()}
                for s, levels in self._memory[True].items()
            },
            "since": {int(s): int(v) for s, v in self._since[True].items()},
        }

    def load_stream_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`stream_state` (onto this module's device)."""
        device = next(self.parameters()).device
        self._memory[True] = {
            int(s): {lvl: tuple(t.to(device) for t in st) for lvl, st in levels.items()}
            for s, levels in state.get("memory", {}).items()
        }
        self._since[True] = {int(s): int(v) for s, v in state.get("since", {}).items()}


def _detached(levels: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, tuple[torch.Tensor, ...]]:
    return {lvl: tuple(t.detach() for t in st) for lvl, st in levels.items()}


def labelled_indices(batched_inputs: Sequence[Mapping[str, Any]]) -> list[int]:
    """Positions of the windows that carry ground truth (``labelled`` not False)."""
    return [i for i, x in enumerate(batched_inputs) if x.get("labelled", True) is not False]


def stream_memories(model: nn.Module) -> list[RecurrentMemory]:
    """Every :class:`RecurrentMemory` inside ``model``."""
    return [m for m in model.modules() if isinstance(m, RecurrentMemory)]
