"""Fixtures of the fault tier: reference runs, a SIGKILLed run, tiny file systems.

Every test module here sets ``pytestmark = pytest.mark.faults`` (run them with
``pytest -m faults``; CI does). Runs are real ``train_net`` processes (``_train.py``: the toy
detector of ``tests/engine/_toy.py``, the real loader with worker processes, or a linear
regressor that diverges); faults are real: signals to real processes, a tmpfs of a few MB, a
read-only mount, two concurrent runs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "engine"))


from _run import finish, losses, reached, run, start, wait_for, write_cfg  # noqa: E402


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted toy run: ``(output_dir, config file, {iteration: loss})``."""
    root = tmp_path_factory.mktemp("reference")
    cfg = write_cfg(root / "toy.yaml")
    out = root / "out"
    res = run(cfg, out)
    assert res.returncode == 0, res.stderr[-3000:]
    got = losses(out)
    assert sorted(got) == list(range(30))
    return out, cfg, got


@pytest.fixture
def copy_of(tmp_path):
    """``copy_of(folder) -> Path``: a private copy of a run folder."""

    def make(folder: Path) -> Path:
        dest = tmp_path / f"copy-{folder.name}-{uuid.uuid4().hex[:4]}"
        shutil.copytree(folder, dest)
        return dest

    return make


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(name, size="3m", read_only=False) -> Path``: a real tmpfs (skipped where
    mounting is not permitted); unmounted afterwards."""
    mounted: list[Path] = []

    def make(name: str, size: str = "3m", read_only: bool = False) -> Path:
        where = tmp_path / name
        where.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})")
        mounted.append(where)
        return where

    yield make
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="session")
def killed_run(tmp_path_factory, reference):
    """A run SIGKILLed after iteration 22 (checkpoints model_0000009 and model_0000019)."""
    _, cfg, _ = reference
    out = tmp_path_factory.mktemp("killed") / "run"
    proc = start(cfg, out)
    wait_for(reached(out, 22), proc=proc, what="iteration 22")
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert (out / "run.lock").is_file(), "a killed run leaves its lock file"
    return out
