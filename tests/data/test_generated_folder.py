"""Folders generated once on first use (the built-in synthetic sets, event caches)."""

from __future__ import annotations

import os

import pytest

from detlab.data.datasets.generated import build_folder_once
from detlab.utils.errors import UserError


def _fill(folder: str) -> None:
    with open(os.path.join(folder, "a.txt"), "w", encoding="utf-8") as f:
        f.write("x")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o002, 0o775), (0o077, 0o700)])
def test_generated_folder_follows_the_umask(tmp_path, umask, mode):
    """A shared data cache must be readable by the others the umask lets in (not mkdtemp's 0700)."""
    old = os.umask(umask)
    try:
        out = build_folder_once(str(tmp_path / "set"), "v1", _fill, "test set")
    finally:
        os.umask(old)
    assert oct(os.stat(out).st_mode & 0o777) == oct(mode)
    assert os.path.isfile(os.path.join(out, "a.txt"))


def test_second_call_reuses_the_folder_and_a_different_fingerprint_is_refused(tmp_path):
    calls = []

    def fill(folder: str) -> None:
        calls.append(folder)
        _fill(folder)

    out = str(tmp_path / "set")
    assert build_folder_once(out, "v1", fill, "test set") == out
    assert build_folder_once(out, "v1", fill, "test set") == out
    assert len(calls) == 1
    with pytest.raises(UserError, match="already holds a different test set"):
        build_folder_once(out, "v2", fill, "test set")
