"""Process-group helpers that also work without ``torch.distributed`` initialised."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_object",
    "all_reduce_any",
    "all_reduce_mean",
    "broadcast_object",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "synchronize",
]


def _on() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if _on() else 1


def get_rank() -> int:
    return dist.get_rank() if _on() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across processes (no-op when single-process)."""
    if _on() and get_world_size() > 1:
        dist.barrier()


def all_reduce_any(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every process if ``flag`` is True on any process."""
    if not _on() or get_world_size() == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over the processes of the group (``x`` itself when there is none or it
    has one process), so that every process divides a loss by the same normaliser, as with one
    large batch."""
    if not _on() or get_world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / get_world_size()


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` of process ``src`` on every process."""
    if not _on() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: object) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not _on() or get_world_size() == 1:
        return [obj]
    out: list = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out
