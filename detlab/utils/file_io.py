"""Crash-safe file writes and readable errors for files the user gives or the run writes.

* :func:`atomic_open` writes a temporary sibling (``.NAME.XXXXXXXX.tmp``), fsyncs it and
  renames it over the target, so a crash mid-write leaves the previous file intact. The file
  gets the mode the user's umask gives a new file (``mkstemp`` alone would leave it 0600).
* A disk-full, quota or permission error while writing becomes an :class:`OutputWriteError`:
  one sentence naming the path and the free space left there.
* :func:`read_torch_file` reads a ``.pth`` file with ``weights_only=True`` and turns every
  failure into one sentence (a file holding pickled code is named as such).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

from detlab.utils.errors import UserError

__all__ = [
    "OutputWriteError",
    "TEMP_FILE_PATTERN",
    "atomic_open",
    "atomic_save",
    "atomic_write_text",
    "file_mode",
    "folder_mode",
    "format_bytes",
    "free_space",
    "output_write_error",
    "read_json_object",
    "read_torch_file",
    "read_yaml",
    "remove_stale_temp_files",
    "torch_load_error",
]

#: Names of the temporary files :func:`atomic_open` writes (``.model_0000099.pth.a1b2c3d4.tmp``).
TEMP_FILE_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
# errno values that mean "this location cannot take the file", not a bug in the program.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


class OutputWriteError(UserError, OSError):
    """A file of the run could not be written (disk full, quota, read-only, permission)."""


def format_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KB"`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def free_space(path: str) -> int | None:
    """Bytes free for this user on the file system holding ``path`` (or its nearest parent)."""
    p = os.path.abspath(path)
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _os_error_in_chain(err: BaseException) -> OSError | None:
    """The first OSError in ``err``'s cause/context chain (torch hides it in a RuntimeError)."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def output_write_error(err: BaseException, path: str) -> OutputWriteError | None:
    """An :class:`OutputWriteError` for ``err`` if it is a disk/permission failure, else None."""
    if isinstance(err, OutputWriteError):
        return err
    os_err = _os_error_in_chain(err)
    if os_err is None or os_err.errno not in _OUTPUT_ERRNOS:
        return None
    where = os.path.dirname(os.path.abspath(path)) or "."
    free = free_space(where)
    left = f"{format_bytes(free)} free there" if free is not None else "free space unknown"
    reason = os.strerror(os_err.errno)
    if os_err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free some space (or raise the quota) or choose another OUTPUT_DIR"
    else:
        fix = "make the folder writable for this user or choose another OUTPUT_DIR"
    out = OutputWriteError(f"Could not write {path}: {reason} ({left}); {fix}.")
    out.errno = os_err.errno
    return out


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # not Linux: read the umask by setting it (restored at once)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets under the current umask (0o644 for umask 022)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode a new folder gets under the current umask (0o755 for umask 022)."""
    return 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success it is fsynced and renamed to ``path``.

    If the block raises (or the process dies) ``path`` keeps its previous content. A full disk
    or a permission problem raises :class:`OutputWriteError` (the temporary file is removed).
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
        )
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        friendly = output_write_error(err, path) if isinstance(err, Exception) else None
        if friendly is not None and friendly is not err:
            raise friendly from None
        raise
    with contextlib.suppress(OSError):  # persist the rename itself
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_save(path: str, write: Callable[[IO], None]) -> None:
    """Call ``write(binary_file)`` and publish the result at ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        write(f)


def remove_stale_temp_files(directory: str) -> list[str]:
    """Delete the temporary files a killed :func:`atomic_open` left in ``directory``.

    Call it only while no other process writes there (e.g. holding the run's lock). Returns
    the names removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if TEMP_FILE_PATTERN.match(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
                    removed.append(name)
    return sorted(removed)


def read_torch_file(path: str, what: str = "Checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-sentence errors.

    ``what`` names the file in messages ("Checkpoint", "MODEL.WEIGHTS file"). A file that holds
    pickled Python objects (code) is refused without the advice to disable ``weights_only``.
    """
    import torch

    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a bad file
        raise torch_load_error(path, what, err) from None


def torch_load_error(path: str, what: str, err: Exception) -> UserError:
    """The one sentence for a failed ``torch.load(path, weights_only=True)``.

    A file holding pickled Python objects (classes, functions) is named as such, without
    torch's advice to load it with ``weights_only=False``; anything else reads as a truncated
    or foreign file.
    """
    import pickle

    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    if isinstance(err, pickle.UnpicklingError) and found:  # a class or function inside
        return UserError(
            f"{what} {path} holds pickled Python objects ({found.group(1)}) besides "
            "tensors, which detlab does not load because unpickling them can run code; "
            "re-save it as a plain state dict (torch.save(model.state_dict(), path)) where "
            "it came from."
        )
    return UserError(
        f"{what} {path} cannot be read ({type(err).__name__}); it is truncated or not a "
        "detlab/PyTorch checkpoint."
    )


def read_json_object(path: str) -> dict | None:
    """A JSON file holding an object, as a dict; None if it is absent or unreadable."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_yaml(
    path: str, what: str, error: type[Exception] | None = None, loader: type | None = None
) -> object:
    """``yaml.safe_load`` of a user's file; a missing file or bad YAML raises one sentence.

    ``what`` names the file in the message ("Config file", "Sweep spec", ...); ``error`` is the
    exception class to raise (default :class:`~detlab.utils.errors.UserError`); ``loader`` is a
    ``yaml.SafeLoader`` subclass to read with (default ``yaml.SafeLoader``).
    """
    import yaml

    error = error or UserError
    loader = loader or yaml.SafeLoader
    if not issubclass(loader, yaml.SafeLoader):
        raise TypeError("read_yaml reads user files with yaml.SafeLoader or a subclass of it")
    if not os.path.isfile(path):
        raise error(f"{what} {path} does not exist; check the path.")
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise error(f"{what} {path} is not valid YAML{pos}: {problem}.") from None
