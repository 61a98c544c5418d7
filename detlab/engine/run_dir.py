"""Taking possession of ``OUTPUT_DIR`` before a run writes anything there.

:func:`claim_output_dir` (main process, from :func:`~detlab.engine.default_setup`):

1. checks the folder can be a run folder: not a file, creatable, writable (one sentence
   naming the folder and the free space otherwise);
2. takes its lock (:mod:`detlab.utils.run_lock`): a second live run is refused, a stale lock
   of a dead run is taken over;
3. removes temporary files a killed save left behind;
4. for a fresh start (no ``--resume``) in a folder holding an earlier run, moves that run's
   files into ``OUTPUT_DIR/previous-<time>/`` so nothing is overwritten or appended to.

:func:`release_output_dir` drops the lock at the end of the run; :func:`trim_metrics` drops
the ``metrics.jsonl`` rows a killed run wrote after the checkpoint a resume starts from.
"""

from __future__ import annotations

import datetime
import errno
import glob
import json
import os
import tempfile

from detlab.utils.errors import UserError
from detlab.utils.file_io import (
    atomic_write_text,
    format_bytes,
    free_space,
    remove_stale_temp_files,
)
from detlab.utils.run_lock import RunLock, release_lock

__all__ = [
    "RUN_FILES",
    "check_output_dir",
    "claim_output_dir",
    "release_output_dir",
    "trim_metrics",
]

#: What a training run writes into OUTPUT_DIR (moved aside together on a fresh start).
RUN_FILES = (
    "metrics.jsonl",
    "last_checkpoint",
    "model_*.pth",
    "final_metrics.json",
    "events.out.tfevents.*",
    "log.txt",
    "log.txt.rank*",
    "config.yaml",
    "env.txt",
    "inference",
    "wandb",
)
# Any of these means the folder holds an earlier run.
_RUN_MARKERS = ("metrics.jsonl", "last_checkpoint", "model_*.pth", "final_metrics.json")


def check_output_dir(path: str) -> None:
    """Raise one sentence unless ``path`` is (or can be created as) a writable folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"OUTPUT_DIR {path} is a file, not a folder; choose another OUTPUT_DIR.")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=path)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        free = free_space(path)
        left = f", {format_bytes(free)} free" if free is not None else ""
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = "free some space" if full else "make it writable for this user"
        raise UserError(
            f"OUTPUT_DIR {path} is not writable ({err.strerror or err}{left}); {fix} or choose "
            "another OUTPUT_DIR."
        ) from None


def _earlier_run_files(path: str) -> list[str]:
    found: list[str] = []
    for pattern in RUN_FILES:
        found.extend(sorted(glob.glob(os.path.join(path, pattern))))
    return found


def move_earlier_run(path: str) -> str | None:
    """Move an earlier run's files into ``path/previous-<time>/``; return a sentence saying
    so, or None when ``path`` holds no earlier run."""
    if not any(glob.glob(os.path.join(path, m)) for m in _RUN_MARKERS):
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = os.path.join(path, f"previous-{stamp}")
    n = 1
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(path, f"previous-{stamp}-{n}")
    os.makedirs(dest)
    files = _earlier_run_files(path)
    for f in files:
        os.replace(f, os.path.join(dest, os.path.basename(f)))
    return (
        f"{path} held an earlier run; starting from scratch as asked (no --resume), its "
        f"{len(files)} files were moved to {dest}."
    )


def claim_output_dir(path: str, fresh: bool = False) -> list[str]:
    """Check, lock and prepare ``path`` for a run; return sentences worth logging.

    ``fresh``: a new run (not resuming) that must not mix with an earlier one.
    """
    check_output_dir(path)
    notes = []
    took_over = RunLock(path).acquire()
    if took_over:
        notes.append(took_over)
    removed = remove_stale_temp_files(path)
    if removed:
        notes.append(
            f"Removed {len(removed)} temporary file(s) of an interrupted save: "
            f"{', '.join(removed[:3])}."
        )
    if fresh:
        moved = move_earlier_run(path)
        if moved:
            notes.append(moved)
    return notes


def release_output_dir(path: str) -> None:
    """Drop this process's lock on ``path`` (no-op when it holds none)."""
    release_lock(path)


def trim_metrics(path: str, start_iter: int) -> None:
    """Drop metrics.jsonl lines a killed run wrote after its last checkpoint."""
    if not os.path.isfile(path):
        return
    keep = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line).get("iteration", -1) < start_iter:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by the crash
    atomic_write_text(path, "".join(keep))
