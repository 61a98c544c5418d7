"""Sequence sampling for recurrent models: ``random``, ``stream`` and ``mixed`` (as RVT).

A training batch has ``batch_size`` *slots*; each slot contributes a clip of up to ``L``
consecutive windows of one recording (``DATALOADER.SEQUENCE.LENGTH``), so a batch holds up
to ``batch_size · L`` window dicts. Each mapped window carries ``slot`` (its slot in this
process's batch), ``step`` (its position in the clip) and ``is_first`` (the model resets that
slot's recurrent state before this window).

* ``stream``: every slot plays its own endless stream of recordings, clip after clip, so the
  recurrent state carries over from batch to batch; ``is_first`` marks the first window of
  each recording (piece). For training, recordings are cut RVT-style into *pieces* whose
  labelled windows are at most ``L`` apart (a piece starts ``L - 1`` windows before its first
  label and ends at its last), so every clip holds a label. Each epoch deals a fresh
  seeded permutation of the pieces to the slots of all processes.
* ``random``: every clip ends at a labelled window drawn uniformly (a seeded permutation per
  epoch, like ``TrainingSampler``) and starts a fresh state (``is_first`` on its first window).
* ``mixed``: the first ``round(B · w_stream / (w_stream + w_random))`` slots stream (at least
  one), the rest are random, as RVT's mixed mode splits its batch.

Everything is a pure function of (seed, rank, world size, batch index): batch ``k`` is the
same whether the run started at 0 or resumed at ``k``, with any number of workers. All
windows of one stream pass of a piece (or of one random clip) share one augmentation seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from detlab.utils.errors import UserError

__all__ = ["SequenceBatchStream", "SequenceLayout", "sequence_starts", "split_pieces"]

Key = tuple[tuple[int, ...], int, bool, dict[str, Any]]


class SequenceLayout:
    """Dataset indices of each recording's windows, in window order, and their labels."""

    def __init__(self, dicts: Sequence[dict]) -> None:
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for i, d in enumerate(dicts):
            if "window_index" not in d:
                raise UserError(
                    f"Sequence sampling needs event-window datasets, but dict {i} "
                    f"({d.get('file_name')}) has no window_index; use DATALOADER.SAMPLER_TRAIN "
                    "TrainingSampler for image datasets."
                )
            key = (d["file_name"], d.get("sequence_id"))
            groups.setdefault(key, []).append((int(d["window_index"]), i))
        self.windows: list[np.ndarray] = []
        self.labelled: list[np.ndarray] = []
        for key in groups:
            order = sorted(groups[key])
            idx = np.array([i for _, i in order], dtype=np.int64)
            self.windows.append(idx)
            self.labelled.append(np.array([_has_labels(dicts[i]) for i in idx], dtype=bool))

    def __len__(self) -> int:
        return len(self.windows)


def _has_labels(d: dict) -> bool:
    return bool(d.get("labelled", True)) and bool(d.get("annotations"))


def split_pieces(labelled: np.ndarray, length: int) -> list[tuple[int, int]]:
    """RVT's training pieces of one recording: ``[start, stop)`` window ranges whose
    labelled windows are at most ``length`` apart, each starting ``length - 1`` windows
    before its first label and ending at its last label."""
    pos = np.flatnonzero(labelled)
    if not len(pos):
        return []
    cuts = np.flatnonzero(np.diff(pos) > length)
    firsts = np.concatenate([[0], cuts + 1])
    lasts = np.concatenate([cuts, [len(pos) - 1]])
    return [
        (max(int(pos[a]) - length + 1, 0), int(pos[b]) + 1)
        for a, b in zip(firsts, lasts, strict=True)
    ]


class SequenceBatchStream:
    """Batches of window keys ``(augmentation seed, dataset index, False, {slot, step,
    is_first})`` (the loader's key layout; ``False``: no late mapper).

    Args:
        layout: the recordings' windows.
        batch_size: slots per process.
        length: windows per clip (``L``).
        sampling: ``"random"``, ``"stream"`` or ``"mixed"``.
        seed, rank, world_size: the stream is a pure function of these and the batch index.
        stream_weight, random_weight: the ``mixed`` split.
    """

    def __init__(
        self,
        layout: SequenceLayout,
        batch_size: int,
        length: int,
        sampling: str = "stream",
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        stream_weight: float = 1.0,
        random_weight: float = 1.0,
    ) -> None:
        if sampling not in ("random", "stream", "mixed"):
            raise UserError(
                f"DATALOADER.SEQUENCE.SAMPLING must be random, stream or mixed, got '{sampling}'."
            )
        if length < 1 or batch_size < 1:
            raise UserError("DATALOADER.SEQUENCE.LENGTH and the batch size must be >= 1.")
        self.layout, self.length, self.seed = layout, int(length), int(seed)
        self.rank, self.world = int(rank), int(world_size)
        self.batch_size = int(batch_size)
        if sampling == "mixed":
            if batch_size < 2:
                raise UserError("Mixed sequence sampling needs at least 2 slots per batch.")
            total = stream_weight + random_weight
            n_rand = min(round(batch_size * random_weight / total), batch_size - 1)
            self.n_stream = batch_size - n_rand
        else:
            self.n_stream = batch_size if sampling == "stream" else 0
        self.n_random = batch_size - self.n_stream
        self.pieces = [
            (s, a, b)
            for s, lab in enumerate(layout.labelled)
            for a, b in split_pieces(lab, self.length)
        ]
        self.targets = [
            (s, int(j)) for s, lab in enumerate(layout.labelled) for j in np.flatnonzero(lab)
        ]
        if not self.pieces:
            raise UserError(
                "Sequence sampling found no labelled window with boxes in the training set; "
                "check the label files (<base>_bbox.npy next to each event file)."
            )
        self._epochs: dict[int, tuple[list[int], list[int]]] = {}  # slot -> (starts, pieces)

    @classmethod
    def from_config(
        cls, cfg: Any, dicts: Sequence[dict], *, seed: int, rank: int = 0, world_size: int = 1
    ) -> dict[str, Any]:
        """Arguments from ``DATALOADER.SEQUENCE`` and ``SOLVER.IMS_PER_BATCH`` (total slots)."""
        seq = cfg.DATALOADER.SEQUENCE
        return {
            "layout": SequenceLayout(dicts),
            "batch_size": int(cfg.SOLVER.IMS_PER_BATCH) // world_size,
            "length": seq.LENGTH,
            "sampling": seq.SAMPLING,
            "seed": seed,
            "rank": rank,
            "world_size": world_size,
            "stream_weight": seq.MIXED_STREAM_WEIGHT,
            "random_weight": seq.MIXED_RANDOM_WEIGHT,
        }

    # ------------------------------------------------------------------ stream slots
    def _slot_epoch(self, g: int, epoch: int) -> list[int]:
        """Pieces of global stream slot ``g`` in ``epoch`` (indices into ``self.pieces``)."""
        n_slots = self.n_stream * self.world
        perm = np.random.default_rng([self.seed, 7, epoch]).permutation(len(self.pieces))
        if len(perm) >= n_slots:
            return perm[g::n_slots].tolist()
        shift = (g * len(perm)) // n_slots
        return np.roll(perm, -shift).tolist()

    def _clips(self, piece: int) -> int:
        _, a, b = self.pieces[piece]
        return math.ceil((b - a) / self.length)

    def _stream_clip(self, g: int, k: int) -> tuple[int, int, int, int]:
        """(piece, clip number, epoch, piece order) at position ``k`` of slot ``g``."""
        starts, lens = self._epochs.setdefault(g, ([0], []))
        while starts[-1] <= k:
            e = len(lens)
            n = sum(self._clips(p) for p in self._slot_epoch(g, e))
            lens.append(max(n, 1))
            starts.append(starts[-1] + lens[-1])
        e = int(np.searchsorted(starts, k, side="right")) - 1
        offset = k - starts[e]
        for order, piece in enumerate(self._slot_epoch(g, e)):
            c = self._clips(piece)
            if offset < c:
                return piece, offset, e, order
            offset -= c
        raise AssertionError("unreachable: position beyond its epoch")

    def _stream_keys(self, slot: int, k: int) -> list[Key]:
        g = self.rank * self.n_stream + slot
        piece, c, epoch, order = self._stream_clip(g, k)
        s, a, b = self.pieces[piece]
        first = a + c * self.length
        windows = self.layout.windows[s][first : min(first + self.length, b)]
        aug = (1, g, epoch, order)
        return [
            (aug, int(w), False, {"slot": slot, "step": i, "is_first": c == 0 and i == 0})
            for i, w in enumerate(windows.tolist())
        ]

    # ------------------------------------------------------------------ random slots
    def _random_keys(self, slot: int, k: int) -> list[Key]:
        n = self.n_random * self.world
        q = k * n + self.rank * self.n_random + (slot - self.n_stream)
        epoch, offset = divmod(q, len(self.targets))
        perm = self._perm(epoch)
        s, j = self.targets[int(perm[offset])]
        start = max(j - self.length + 1, 0)
        windows = self.layout.windows[s][start : j + 1]
        return [
            ((2, q), int(w), False, {"slot": slot, "step": i, "is_first": i == 0})
            for i, w in enumerate(windows.tolist())
        ]

    def _perm(self, epoch: int) -> np.ndarray:
        cached = getattr(self, "_perm_cache", None)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, 11, epoch])
            self._perm_cache = (epoch, rng.permutation(len(self.targets)))
        return self._perm_cache[1]

    # ------------------------------------------------------------------ batches
    def batch_keys(self, k: int) -> list[Key]:
        keys: list[Key] = []
        for slot in range(self.batch_size):
            if slot < self.n_stream:
                keys.extend(self._stream_keys(slot, int(k)))
            else:
                keys.extend(self._random_keys(slot, int(k)))
        return keys

    def iter_from(self, start: int = 0) -> Iterator[list[Key]]:
        k = start
        while True:
            yield self.batch_keys(k)
            k += 1


def sequence_starts(dicts: Sequence[dict], indices: Sequence[int]) -> list[bool]:
    """For windows visited in the order ``indices``: True where the recurrent state must be
    reset — a new recording starts, the visit starts mid-recording, or a window is missing."""
    out, prev = [], None
    for p in indices:
        d = dicts[p]
        first = (
            prev is None
            or d.get("file_name") != prev.get("file_name")
            or int(d["window_index"]) != int(prev["window_index"]) + 1
        )
        out.append(first)
        prev = d
    return out
