"""Medians and spread over separate runs of ``benchmarks/train_step.py --json``, as Markdown.

Each figure is the median over the runs of that run's own median (per-round medians for the
ratios), with the smallest and largest run value as the spread. The header states the date,
machine, library builds, thread count and the load average before and after every run.

Usage::

    python benchmarks/summarize_runs.py run1.json run2.json run3.json [--out figures.md]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

__all__ = ["ARCH_TITLES", "aggregate", "aggregate_light", "main", "render"]

ARCH_TITLES = {
    "fcos": "FCOS-R50-FPN (P3–P7, 4-conv GN towers)",
    "rcnn": "Faster R-CNN-R50-FPN (P2–P6, 2000/2000 proposals, 512 RoIs per image)",
    "retinanet": "RetinaNet-R50-FPN (P3–P7, 9 anchors, 4-conv towers)",
}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(runs: list[dict]) -> dict:
    """``{arch: {"steps": {variant: {wall, cpu}}, "ratios": {label: {wall, cpu}}}}`` of spreads.

    Only variants and ratios present in every run are kept.
    """
    out: dict = {}
    archs = [a for a in runs[0]["results"] if all(a in r["results"] for r in runs)]
    for arch in archs:
        res = [r["results"][arch] for r in runs]
        if "steps" not in res[0]:
            continue
        steps = [v for v in res[0]["steps"] if all(v in r["steps"] for r in res)]
        ratios = [k for k in res[0]["ratios"] if all(k in r["ratios"] for r in res)]
        out[arch] = {
            "steps": {
                v: {
                    "wall": _spread([r["steps"][v]["wall_median_s"] for r in res]),
                    "cpu": _spread([r["steps"][v]["cpu_median_s"] for r in res]),
                }
                for v in steps
            },
            "ratios": {
                k: {
                    "wall": _spread([r["ratios"][k]["wall"] for r in res]),
                    "cpu": _spread([r["ratios"][k]["cpu"] for r in res]),
                }
                for k in ratios
            },
        }
    return out


def aggregate_light(runs: list[dict]) -> dict:
    """``{config: {"wall": spread, "cpu": spread}}`` of ``train_step.py --light`` runs."""
    if not all("light" in r["results"] for r in runs):
        return {}
    res = [r["results"]["light"] for r in runs]
    names = [n for n in res[0] if all(n in r for r in res)]
    return {
        n: {
            "wall": _spread([r[n]["wall_median_s"] for r in res]),
            "cpu": _spread([r[n]["cpu_median_s"] for r in res]),
        }
        for n in names
    }


def _fmt(s: dict[str, float], digits: int) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _command(argv: str) -> str:
    """The run's command line without its own ``--json FILE`` (which differs per run)."""
    argv = re.sub(r"\S*/(benchmarks/\w+\.py)", r"\1", argv)  # as run from the repository
    return re.sub(r" --json \S+", "", argv)


def _header(runs: list[dict]) -> list[str]:
    m = runs[0]["machine"]
    dates = sorted(r["machine"]["date"] for r in runs)
    loads = ", ".join(
        f"{(r['machine']['load_average'] or ['?'])[0]} → {(r['load_average_after'] or ['?'])[0]}"
        for r in runs
    )
    flags = ", ".join(m.get("cpu_flags") or []) or "none of AVX-512/AMX"
    d2 = m.get("detectron2") or "not installed"
    args = runs[0]["args"]
    return [
        f"Measured {dates[0]} – {runs[-1].get('finished', dates[-1])}, {len(runs)} separate runs "
        f"of `{_command(m['argv'])}`.",
        "",
        f"- Machine: {m['host_cpu']}, {m['cpu_count']} CPUs ({flags}); "
        f"intra-op threads: {args.get('threads')}.",
        f"- Builds: torch {m['torch']}, torchvision {m['torchvision']}, Detectron2 {d2}, "
        f"oneDNN {m.get('onednn')}, Python {m['python']}.",
        f"- Load average (1 min) before → after each run: {loads}.",
        (
            "- Light FCOS configurations, "
            if args.get("light")
            else f"- Batch {args.get('batch')}, {args.get('size')}×{args.get('size')}, "
        )
        + f"timed rounds per run: {args.get('iters')} after {args.get('warmup')} warm-up; each "
        "figure is the median of the runs' medians, the range in brackets is the smallest and "
        "largest run.",
    ]


def render(runs: list[dict]) -> str:
    agg = aggregate(runs)
    lines = _header(runs)
    for arch, a in agg.items():
        lines += ["", f"**{ARCH_TITLES.get(arch, arch)}**", ""]
        lines += [
            "| variant | wall s/step | CPU s/step | / torchvision, wall | / torchvision, CPU |",
            "|---|---|---|---|---|",
        ]
        for v, s in a["steps"].items():
            ratio = a["ratios"].get(f"{v} / torchvision")
            rw = _fmt(ratio["wall"], 2) if ratio else ("1" if v == "torchvision" else "")
            rc = _fmt(ratio["cpu"], 2) if ratio else ("1" if v == "torchvision" else "")
            lines.append(f"| {v} | {_fmt(s['wall'], 2)} | {_fmt(s['cpu'], 2)} | {rw} | {rc} |")
        other = {k: r for k, r in a["ratios"].items() if not k.endswith(" / torchvision")}
        if other:
            lines += ["", "| ratio | wall | CPU |", "|---|---|---|"]
            for k, r in other.items():
                lines.append(f"| {k} | {_fmt(r['wall'], 2)} | {_fmt(r['cpu'], 2)} |")
    light = aggregate_light(runs)
    if light:
        lines += ["", "**Light FCOS** (batch 8, 256×256, one channel)", ""]
        lines += ["| configuration | wall s/iter | CPU s/iter |", "|---|---|---|"]
        for n, r in light.items():
            lines.append(f"| {n} | {_fmt(r['wall'], 3)} | {_fmt(r['cpu'], 3)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="JSON files written by train_step.py --json")
    parser.add_argument("--out", default="", help="also write the Markdown here")
    args = parser.parse_args(argv)
    runs = [json.loads(Path(p).read_text()) for p in args.runs]
    text = render(runs)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
