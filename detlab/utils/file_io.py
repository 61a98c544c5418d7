"""Crash-safe file writes: write a temporary file, fsync it, rename it over the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

__all__ = ["atomic_open", "atomic_save", "atomic_write_text", "read_yaml"]


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success it is fsynced and renamed to ``path``.

    If the block raises (or the process dies) ``path`` keeps its previous content.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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


def read_yaml(
    path: str, what: str, error: type[Exception] | None = None, loader: type | None = None
) -> object:
    """``yaml.safe_load`` of a user's file; a missing file or bad YAML raises one sentence.

    ``what`` names the file in the message ("Config file", "Sweep spec", ...); ``error`` is the
    exception class to raise (default :class:`~detlab.utils.errors.UserError`); ``loader`` is a
    ``yaml.SafeLoader`` subclass to read with (default ``yaml.SafeLoader``).
    """
    import yaml

    from detlab.utils.errors import UserError

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
