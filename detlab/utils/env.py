"""Environment report (``env.txt``): versions, devices, git revision, threads."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

__all__ = ["collect_env_info", "git_revision", "resolve_device", "seed_all_rng"]

_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "fvcore",
    "pycocotools",
    "faster-coco-eval",
    "albumentations",
    "opencv-python-headless",
    "tensorboard",
    "wandb",
)


def git_revision(path: str) -> str:
    """``<hash>[ (dirty)]`` of the git checkout holding ``path``, or "unknown"."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + (" (dirty)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def collect_env_info() -> str:
    """A plain-text table of the software and hardware this run uses."""
    import torch

    import detlab

    rows = [
        ("sys.platform", sys.platform),
        ("platform", platform.platform()),
        ("python", sys.version.replace("\n", " ")),
        ("detlab", f"{detlab.__version__} @ {os.path.dirname(detlab.__file__)}"),
        ("detlab git", git_revision(os.path.dirname(os.path.dirname(detlab.__file__)))),
    ]
    for pkg in _PACKAGES:
        try:
            rows.append((pkg, importlib.metadata.version(pkg)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    rows.append(("cpu count", str(os.cpu_count())))
    rows.append(("torch threads", str(torch.get_num_threads())))
    rows.append(("CUDA available", str(torch.cuda.is_available())))
    if torch.cuda.is_available():
        rows.append(("CUDA", str(torch.version.cuda)))
        for i in range(torch.cuda.device_count()):
            rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
    for var in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "WANDB_MODE", "DETLAB_DATA"):
        if var in os.environ:
            rows.append((var, os.environ[var]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + "\n"


def seed_all_rng(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> str:
    """``MODEL.DEVICE`` as a torch device string: ``"auto"`` is CUDA when present, else CPU."""
    if str(name).strip().lower() != "auto":
        return str(name)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
