"""Live view of training runs from their ``metrics.jsonl`` (torch-free): :mod:`.status` reads
and summarises a run, :mod:`.cli` is ``tools/watch.py``."""

from detlab.monitor.status import format_status, read_metrics, summarize_run

__all__ = ["format_status", "read_metrics", "summarize_run"]
