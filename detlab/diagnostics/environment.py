"""Environment checks: Python, package versions, known-bad combinations, devices."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from typing import Any

from detlab.diagnostics.core import FAIL, PASS, WARN, Report
from detlab.utils.env import resolve_device

__all__ = ["check_environment", "check_run_settings", "torchvision_matches"]

# (import name, distribution name, required)
_PACKAGES = (
    ("torch", "torch", True),
    ("torchvision", "torchvision", True),
    ("numpy", "numpy", True),
    ("fvcore", "fvcore", True),
    ("cv2", "opencv-python-headless", True),
    ("albumentations", "albumentations", True),
    ("yaml", "PyYAML", True),
    ("pycocotools", "pycocotools", False),
    ("faster_coco_eval", "faster-coco-eval", False),
    ("tensorboard", "tensorboard", False),
    ("wandb", "wandb", False),
    ("onnxruntime", "onnxruntime", False),
)
S = "environment"


def _version(dist: str, module: Any) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "?"))


def _major_minor(version: str) -> tuple[int, int]:
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def torchvision_matches(torch_version: str, tv_version: str) -> bool:
    """torch 2.N pairs with torchvision 0.(N+15) (the published compatibility table)."""
    t, v = _major_minor(torch_version), _major_minor(tv_version)
    if t[0] != 2 or v[0] != 0:
        return True  # outside the known table: do not guess
    return v[1] == t[1] + 15


def check_environment(cfg: Any, report: Report) -> None:
    """Python, packages (missing / mismatched), NumPy 2 interop, device availability."""
    py = sys.version_info
    status = PASS if py >= (3, 10) else FAIL
    report.add(S, "python", status, f"{sys.version.split()[0]} ({sys.executable})",
               "" if status == PASS else "detlab needs Python >= 3.10.")  # fmt: skip

    versions, missing, broken = {}, [], []
    for mod, dist, required in _PACKAGES:
        if not required:  # versions only: importing e.g. wandb would hook the console
            spec = importlib.util.find_spec(mod)
            versions[dist] = _version(dist, None) if spec else "not installed"
            continue
        try:
            versions[dist] = _version(dist, importlib.import_module(mod))
        except ImportError as err:
            if "numpy" in str(err).lower():
                broken.append(f"{dist}: {str(err).splitlines()[0]}")
            elif required:
                missing.append(dist)
            else:
                versions[dist] = "not installed"
        except Exception as err:  # noqa: BLE001 - a broken install raises anything on import
            broken.append(f"{dist}: {type(err).__name__}: {str(err).splitlines()[0]}")
    if missing or broken:
        report.add(S, "packages", FAIL, "; ".join([f"{m} not installed" for m in missing] + broken),
                   "pip install -e . (installs the required packages); a package built for "
                   "NumPy 1 fails under NumPy 2: pip install 'numpy<2' or upgrade that package.",
                   versions=versions)  # fmt: skip
    else:
        text = ", ".join(f"{k} {v}" for k, v in versions.items())
        report.add(S, "packages", PASS, text, versions=versions)
    if versions.get("faster-coco-eval") == "not installed" == versions.get("pycocotools"):
        report.add(S, "COCO metrics", FAIL, "neither faster-coco-eval nor pycocotools",
                       "pip install faster-coco-eval (or pycocotools).")  # fmt: skip

    if "torch" in missing:
        return
    import numpy as np
    import torch

    _check_numpy(report, np, torch)
    _check_torchvision(report, torch)
    _check_device(cfg, report, torch)
    check_run_settings(cfg, report)


def _check_numpy(report: Report, np: Any, torch: Any) -> None:
    np_major = _major_minor(np.__version__)[0]
    torch_mm = _major_minor(torch.__version__)
    if np_major >= 2 and torch_mm < (2, 3):
        report.add(S, "NumPy/torch", FAIL,
                   f"NumPy {np.__version__} with torch {torch.__version__} (built for NumPy 1)",
                   "pip install 'numpy<2', or upgrade torch to >= 2.3.")  # fmt: skip
        return
    try:
        arr = torch.from_numpy(np.arange(6, dtype=np.float32)).reshape(2, 3).numpy()
        assert float(arr.sum()) == 15.0
    except Exception as err:  # noqa: BLE001
        report.add(S, "NumPy/torch", FAIL, f"torch <-> NumPy conversion fails: {err}",
                   "install a NumPy that matches your torch build (often: pip install "
                   "'numpy<2').")  # fmt: skip
        return
    report.add(S, "NumPy/torch", PASS, f"NumPy {np.__version__} interoperates with torch")


def _check_torchvision(report: Report, torch: Any) -> None:
    try:
        import torchvision
        from torchvision.ops import nms, roi_align

        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
        keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
        roi_align(torch.rand(1, 1, 8, 8), [boxes], output_size=2)
        assert keep.tolist() == [0]
    except Exception as err:  # noqa: BLE001 - e.g. "operator torchvision::nms does not exist"
        report.add(S, "torchvision ops", FAIL, f"nms/roi_align fail: {str(err).splitlines()[0]}",
                   "install the torchvision build made for your torch (torch 2.N pairs with "
                   "torchvision 0.(N+15)).")  # fmt: skip
        return
    if not torchvision_matches(torch.__version__, torchvision.__version__):
        report.add(
            S,
            "torchvision ops",
            WARN,
            f"torch {torch.__version__} with torchvision {torchvision.__version__}",
            "torch 2.N pairs with torchvision 0.(N+15); install the matching pair.",
        )
        return  # fmt: skip
    report.add(S, "torchvision ops", PASS, f"nms and roi_align run (torchvision "
               f"{torchvision.__version__})")  # fmt: skip


def _check_device(cfg: Any, report: Report, torch: Any) -> None:
    want = resolve_device(cfg.MODEL.DEVICE)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    seen = f"CUDA {'yes: ' + ', '.join(gpus) if cuda else 'no'}, MPS {'yes' if mps else 'no'}"
    threads = f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    kind = want.split(":")[0]
    if kind == "cuda" and not cuda:
        report.add(S, "device", FAIL, f"MODEL.DEVICE is {want} but CUDA is not available "
                   f"({seen})", "set MODEL.DEVICE cpu, or install a CUDA build of torch and "
                   "check nvidia-smi / CUDA_VISIBLE_DEVICES.")  # fmt: skip
        return
    if kind == "mps" and not mps:
        report.add(S, "device", FAIL, f"MODEL.DEVICE is mps but MPS is not available ({seen})",
                   "set MODEL.DEVICE cpu.")  # fmt: skip
        return
    try:
        x = torch.ones(4, device=want)
        assert float((x * 2).sum()) == 8.0
    except Exception as err:  # noqa: BLE001
        report.add(
            S,
            "device",
            FAIL,
            f"a tensor operation on {want} fails: {err}",
            "check MODEL.DEVICE (cpu, cuda, cuda:N, mps) and the driver.",
        )
        return  # fmt: skip
    if kind == "cpu" and (cuda or mps):
        report.add(
            S,
            "device",
            WARN,
            f"training on the CPU although a GPU is present ({seen})",
            "set MODEL.DEVICE cuda (or mps) to use it.",
        )
        return  # fmt: skip
    report.add(S, "device", PASS, f"{want} works ({seen}; {threads})")


def check_run_settings(cfg: Any, report: Report) -> None:
    """OUTPUT_DIR writable with free space; schedule keys that cannot act as written."""
    import shutil

    out = os.path.abspath(os.path.expanduser(str(cfg.OUTPUT_DIR)))
    probe = out
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK):
        report.add(S, "OUTPUT_DIR", FAIL, f"{out} cannot be created or written ({probe} is not "
                   "writable)", "set OUTPUT_DIR to a writable folder.")  # fmt: skip
    else:
        free = shutil.disk_usage(probe).free / 2**30
        status = WARN if free < 1.0 else PASS
        report.add(S, "OUTPUT_DIR", status, f"{out} writable, {free:.1f} GB free",
                   "free disk space: checkpoints and logs need room." if status == WARN else "",
                   free_gb=free)  # fmt: skip
    s = cfg.SOLVER
    steps = [int(x) for x in s.STEPS]
    problems = []
    if steps != sorted(steps):
        problems.append(f"SOLVER.STEPS {tuple(steps)} are not increasing")
    late = [x for x in steps if x >= s.MAX_ITER]
    if late and s.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        problems.append(f"SOLVER.STEPS {tuple(late)} are at or after SOLVER.MAX_ITER "
                        f"{s.MAX_ITER} and never lower the LR")  # fmt: skip
    if s.WARMUP_ITERS > s.MAX_ITER:
        problems.append(f"SOLVER.WARMUP_ITERS {s.WARMUP_ITERS} exceeds SOLVER.MAX_ITER")
    if problems:
        report.add(S, "schedule", WARN, "; ".join(problems),
                   "scale SOLVER.STEPS / WARMUP_ITERS with SOLVER.MAX_ITER (e.g. steps at "
                   "2/3 and 8/9 of the run).")  # fmt: skip
    else:
        report.add(S, "schedule", PASS, f"{s.MAX_ITER} iterations, batch {s.IMS_PER_BATCH}, "
                   f"LR {s.BASE_LR} ({s.LR_SCHEDULER_NAME}, steps {tuple(steps)})")  # fmt: skip
