"""What a published benchmark figure must state: machine, load, library builds, date.

``describe_machine()`` is called before and after a run; the JSON of every benchmark script
carries it so that ``benchmarks/summarize_runs.py`` can print the figures with their context.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
from typing import Any

import torch
import torchvision

__all__ = ["cpu_model", "describe_machine", "load_average", "utc_now"]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The CPU flags that decide which kernels oneDNN may use (bf16 / AMX / AVX-512)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return []
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    flags = set(m.group(1).split()) if m else set()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return [f for f in wanted if f in flags]


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """Machine, device, library builds and the current load, JSON-ready."""
    info: dict[str, Any] = {
        "date": utc_now(),
        "host_cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": _onednn_version(),
        "threads": torch.get_num_threads(),
        "argv": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }
    try:
        import detectron2

        info["detectron2"] = detectron2.__version__
    except ImportError:
        info["detectron2"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _onednn_version() -> str | None:
    m = re.search(r"MKL-DNN v([\d.]+)", torch.__config__.show())
    return m.group(1) if m else None
