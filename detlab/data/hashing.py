"""Byte-identical files: content digests, computed only where two files have the same size.

Two files can only be byte-identical when their sizes agree, so :func:`identical_groups` stats
every path, compares the first 64 KiB of the files whose size is shared with another one, and
hashes (BLAKE2b, 128-bit) whole files only where those agree too. Copies under another name
always get that far; distinct images rarely do. Whole-file digests are cached per path and
recomputed when size or mtime change.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["file_digest", "identical_groups"]

_CHUNK = 1 << 20
_HEAD = 1 << 16  # bytes compared before hashing whole files
_CACHE: dict[str, tuple[int, int, str]] = {}
_HEAD_CACHE: dict[str, tuple[int, int, str]] = {}


def file_digest(path: str) -> str | None:
    """Hex BLAKE2b-128 digest of the file's bytes, or None if it cannot be read."""
    try:
        st = os.stat(path)
        hit = _CACHE.get(path)
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            return hit[2]
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    digest = h.hexdigest()
    _CACHE[path] = (st.st_mtime_ns, st.st_size, digest)
    return digest


def identical_groups(paths: Sequence[str]) -> list[list[int]]:
    """Indices into ``paths`` of files with identical bytes, one list per group of two or more.

    The same path (or the same file under two paths) counts as identical too. Unreadable or
    missing files are left out. Groups and their members are in the order of ``paths``.
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        try:
            by_size[os.stat(p).st_size].append(i)
        except OSError:
            continue
    by_head: dict[tuple[int, str], list[int]] = defaultdict(list)
    for size, members in by_size.items():
        if len(members) < 2:
            continue
        for i in members:  # files of equal size usually differ in their first bytes already
            head = _head_digest(paths[i])
            if head is not None:
                by_head[size, head].append(i)
    by_digest: dict[str, list[int]] = defaultdict(list)
    for (size, _), members in by_head.items():
        if len(members) < 2:
            continue
        for i in members:
            digest = file_digest(paths[i]) if size > _HEAD else _head_digest(paths[i])
            if digest is not None:
                by_digest[digest].append(i)
    groups = [sorted(m) for m in by_digest.values() if len(m) > 1]
    return sorted(groups)


def _head_digest(path: str) -> str | None:
    try:
        st = os.stat(path)
        hit = _HEAD_CACHE.get(path)
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            return hit[2]
        with open(path, "rb") as f:
            digest = hashlib.blake2b(f.read(_HEAD), digest_size=16).hexdigest()
    except OSError:
        return None
    _HEAD_CACHE[path] = (st.st_mtime_ns, st.st_size, digest)
    return digest
