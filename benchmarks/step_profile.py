"""Where one train step's CPU time goes: ``torch.profiler`` self time by category.

Each op's self time is charged to the first category that the op or one of its callers
matches (so the zero-fill inside a convolution's backward counts as convolution, and the
element-wise updates inside ``Optimizer.step`` as the optimizer step). The profiler's own
overhead inflates every op, so shares are the figure to read; the unprofiled step time is
measured beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile

__all__ = ["CATEGORIES", "categorize", "profile_steps"]

# (category, substrings of the op's or a caller's name), first match wins
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("optimizer step", ("Optimizer.step", "Optimizer.zero_grad")),
    ("RoIAlign", ("roi_align", "WeightedGather")),
    ("convolution", ("conv",)),
    ("linear (FC)", ("aten::mm", "aten::addmm", "aten::bmm", "AddmmBackward", "MmBackward")),
    ("batch/group norm", ("batch_norm", "group_norm", "BatchNorm", "GroupNorm")),
    ("NMS", ("nms",)),
)
MEMORY_OPS = (
    "aten::copy_",
    "aten::fill_",
    "aten::zero_",
    "aten::empty",
    "aten::empty_strided",
    "aten::resize_",
    "aten::clone",
    "aten::contiguous",
    "aten::cat",
    "aten::stack",
    "aten::_to_copy",
    "aten::index",
    "aten::index_put_",
    "aten::_index_put_impl_",
    "aten::masked_fill_",
)


def categorize(name: str, callers: list[str]) -> str:
    """The category of an op named ``name`` called (innermost first) from ``callers``."""
    names = [n.lower() for n in (name, *callers)]
    for category, keys in CATEGORIES:
        if any(k.lower() in n for n in names for k in keys):
            return category
    if name in MEMORY_OPS:
        return "copies, fills, allocation"
    if name.startswith("aten::") or name.startswith("torchvision::"):
        return "element-wise and other ops"
    return "autograd and dispatch"


def _callers(event) -> list[str]:
    out, parent = [], event.cpu_parent
    while parent is not None:
        out.append(parent.name)
        parent = parent.cpu_parent
    return out


def profile_steps(
    steps: dict[str, Callable[[], None]], warmup: int = 1, top: int = 12
) -> dict[str, dict]:
    """Profile one step of each (after ``warmup`` steps); print and return the breakdown."""
    report: dict[str, dict] = {}
    for name, step in steps.items():
        for _ in range(max(warmup, 1)):
            step()
        c = time.process_time()
        step()
        unprofiled = time.process_time() - c
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        by_cat: dict[str, float] = {}
        by_op: dict[str, float] = {}
        for ev in prof.events():
            s = ev.self_cpu_time_total / 1e6
            if s <= 0:
                continue
            cat = categorize(ev.name, _callers(ev))
            by_cat[cat] = by_cat.get(cat, 0.0) + s
            by_op[ev.name] = by_op.get(ev.name, 0.0) + s
        total = sum(by_cat.values())
        report[name] = {
            "unprofiled_cpu_s": unprofiled,
            "profiled_self_s": total,
            "categories_s": dict(sorted(by_cat.items(), key=lambda kv: -kv[1])),
            "top_ops_s": dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:top]),
        }
    _print(report)
    return report


def _print(report: dict[str, dict]) -> None:
    names = list(report)
    cats = []
    for r in report.values():
        cats += [c for c in r["categories_s"] if c not in cats]
    width = max(12, *(len(n) for n in names))
    print("\nShare of profiled self CPU time per category (%):")
    print(f"  {'category':<28}" + "".join(f" {n:>{width}}" for n in names))
    for c in cats:
        row = ""
        for n in names:
            r = report[n]
            row += f" {100 * r['categories_s'].get(c, 0.0) / r['profiled_self_s']:>{width}.1f}"
        print(f"  {c:<28}{row}")
    print(
        f"  {'step CPU s, unprofiled':<28}"
        + "".join(f" {report[n]['unprofiled_cpu_s']:>{width}.2f}" for n in names)
    )
    for n in names:
        print(f"\n  top ops of {n} (profiled self CPU s):")
        for op, s in report[n]["top_ops_s"].items():
            print(f"    {s:8.3f}  {op}")
