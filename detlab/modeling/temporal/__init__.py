"""Recurrent memory for event streams: ``TEMPORAL_REGISTRY`` cells and ``RecurrentMemory``."""

from detlab.modeling.temporal.build import TEMPORAL_REGISTRY, build_temporal
from detlab.modeling.temporal.cells import ConvGRU, ConvLSTM
from detlab.modeling.temporal.memory import (
    RecurrentMemory,
    StreamInfo,
    labelled_indices,
    stream_info,
    stream_memories,
)

__all__ = [
    "TEMPORAL_REGISTRY",
    "ConvGRU",
    "ConvLSTM",
    "RecurrentMemory",
    "StreamInfo",
    "build_temporal",
    "labelled_indices",
    "stream_info",
    "stream_memories",
]
