"""One live run per output folder: ``OUTPUT_DIR/run.lock`` (torch-free).

The lock file holds the owner's host, PID, start time and command line as JSON, and the owner
keeps an exclusive ``flock`` on it for as long as it runs. The kernel drops that lock when the
process ends in any way (SIGKILL and the OOM killer included), so:

* a second run in the same folder finds the lock taken and is refused in one sentence naming
  the first (:class:`RunLockedError`);
* a lock file left by a dead run is *stale*: the next run takes it over and says so;
* :func:`lock_state` tells a watcher whether a run is alive (``"running"``), died without
  releasing (``"stale"``) or left cleanly (``"free"``).

File systems without ``flock`` (rare; some network mounts) fall back to the recorded host and
PID: a lock naming a live process on this host, or any process on another host, is honoured.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

from detlab.utils.errors import UserError
from detlab.utils.file_io import file_mode, output_write_error

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "RunLockedError",
    "describe_owner",
    "lock_state",
    "read_owner",
    "release_lock",
]

LOCK_NAME = "run.lock"
_HELD: dict[str, RunLock] = {}  # realpath of the folder -> the lock this process holds
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLockedError(UserError):
    """Another live run holds the output folder."""


def read_owner(directory: str) -> dict[str, Any] | None:
    """The owner recorded in ``directory/run.lock`` (None if there is no readable record)."""
    try:
        with open(os.path.join(directory, LOCK_NAME), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_owner(owner: dict[str, Any] | None) -> str:
    """``"pid 123 on host node7, started 2026-11-22 10:01:02"`` (what is known of it)."""
    if not owner:
        return "owner unknown"
    parts = [f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}"]
    if owner.get("started"):
        parts.append(f"started {owner['started']}")
    return ", ".join(parts)


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return isinstance(pid, int)
    return True


def _fallback_owner_alive(owner: dict[str, Any] | None) -> bool:
    """Without flock: is the recorded owner (another process) still running?"""
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot check another machine: honour its lock
    return owner.get("pid") != os.getpid() and _pid_alive(owner.get("pid"))


def lock_state(directory: str) -> str:
    """``"running"`` (a live process holds the lock), ``"stale"`` (a lock file whose owner
    died without releasing it) or ``"free"`` (no lock file)."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "free"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in _BUSY:
            return "running"
        return "running" if _fallback_owner_alive(read_owner(directory)) else "stale"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "stale"
    finally:
        os.close(fd)


class RunLock:
    """The lock of one output folder, held by this process from :meth:`acquire` to
    :meth:`release` (or process exit)."""

    def __init__(self, directory: str, command: str | None = None) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self.command = command if command is not None else " ".join(sys.argv)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, tries: int = 5, wait_s: float = 0.2) -> str | None:
        """Take the lock; return a sentence when a stale lock was taken over, else None.

        Raises :class:`RunLockedError` when a live run holds it. ``tries`` covers the moment
        a watcher probes the lock.
        """
        key = os.path.realpath(self.directory)
        held = _HELD.get(key)
        if held is not None and held.held:  # this process already owns the folder
            self._fd = held._fd
            return None
        for attempt in range(tries):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            except OSError as err:
                raise (output_write_error(err, self.path) or err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flock_works = True
            except OSError as err:
                if err.errno not in _UNSUPPORTED:
                    os.close(fd)
                    if err.errno not in _BUSY:
                        raise
                    if attempt + 1 < tries:
                        time.sleep(wait_s)
                        continue
                    raise self._locked_error() from None
                flock_works = False
            if not _same_file(fd, self.path):  # the previous owner removed it meanwhile
                os.close(fd)
                continue
            previous = read_owner(self.directory)
            if not flock_works and _fallback_owner_alive(previous):
                os.close(fd)
                raise self._locked_error()
            self._write_owner(fd)
            self._fd = fd
            _HELD[key] = self
            os.register_at_fork(after_in_child=self._close_in_child)
            if previous and previous.get("pid") is not None:
                return (
                    f"Took over the lock of {self.directory} from a run that is no longer "
                    f"running ({describe_owner(previous)})."
                )
            return None
        raise self._locked_error()

    def _locked_error(self) -> RunLockedError:
        owner = describe_owner(read_owner(self.directory))
        return RunLockedError(
            f"OUTPUT_DIR {self.directory} is in use by another run ({owner}); wait for it to "
            "finish, stop it, or choose another OUTPUT_DIR."
        )

    def _write_owner(self, fd: int) -> None:
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "command": self.command,
        }
        data = (json.dumps(owner) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        with contextlib.suppress(OSError):
            os.fsync(fd)

    def _close_in_child(self) -> None:
        # A forked child (a DataLoader worker) must not keep the lock alive after we die.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        """Remove the lock file and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        key = os.path.realpath(self.directory)
        if _HELD.get(key) is self:
            del _HELD[key]
            with contextlib.suppress(OSError):
                if _same_file(self._fd, self.path):
                    os.unlink(self.path)
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def release_lock(directory: str) -> None:
    """Release the lock this process holds on ``directory`` (no-op when it holds none)."""
    lock = _HELD.get(os.path.realpath(directory))
    if lock is not None:
        lock.release()
