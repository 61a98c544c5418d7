"""Byte-identical file groups: size, then the first 64 KiB, then the whole file."""

from __future__ import annotations

import os

from detlab.data.hashing import identical_groups


def test_identical_groups(tmp_path):
    big = os.urandom(200_000)
    files = {
        "a.bin": big,
        "b.bin": big,  # identical copy
        "c.bin": big[:-1] + bytes([big[-1] ^ 1]),  # same size and head, other tail
        "d.bin": bytes([big[0] ^ 1]) + big[1:],  # same size, other head
        "e.bin": b"x" * 10,
        "f.bin": b"x" * 10,  # small identical files
        "g.bin": b"y" * 10,
        "h.bin": b"z" * 11,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    os.symlink(tmp_path / "g.bin", tmp_path / "link.bin")
    names = [*files, "link.bin", "missing.bin"]
    groups = identical_groups([str(tmp_path / n) for n in names])
    assert [[names[i] for i in g] for g in groups] == [
        ["a.bin", "b.bin"],
        ["e.bin", "f.bin"],
        ["g.bin", "link.bin"],
    ]
    st = os.stat(tmp_path / "b.bin")
    (tmp_path / "b.bin").write_bytes(big[:-1] + bytes([big[-1] ^ 2]))  # changed in place
    os.utime(tmp_path / "b.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    groups = identical_groups([str(tmp_path / n) for n in names])  # the cache notices
    assert [[names[i] for i in g] for g in groups] == [["e.bin", "f.bin"], ["g.bin", "link.bin"]]
