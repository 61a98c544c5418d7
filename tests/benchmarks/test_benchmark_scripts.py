"""The benchmark scripts' own logic: medians over runs, the GPU suite end to end on CPU.

Timings are never asserted (speed is measured by the scripts, not by tests); what is checked
is that the figures are aggregated as documented and that every section of the GPU suite runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import the scripts in benchmarks/ as modules (they import their siblings by name)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import importlib

    return importlib.import_module


def _run_json(step_wall: dict, ratios: dict, load: float, date: str) -> dict:
    """A train_step.py --json report with the given per-variant wall medians and ratios."""
    return {
        "args": {"threads": 1, "batch": 2, "size": 512, "iters": 3, "warmup": 1},
        "machine": {
            "date": date,
            "host_cpu": "Test CPU",
            "cpu_count": 2,
            "cpu_flags": ["avx2"],
            "load_average": [load, 1.0, 1.0],
            "python": "3.11",
            "torch": "2.x",
            "torchvision": "0.x",
            "onednn": "3.x",
            "detectron2": None,
            "argv": f"python /somewhere/benchmarks/train_step.py --json run{load}.json --iters 3",
        },
        "load_average_after": [load + 1, 1.0, 1.0],
        "finished": date,
        "results": {
            "fcos": {
                "steps": {
                    k: {"wall_median_s": v, "cpu_median_s": 2 * v} for k, v in step_wall.items()
                },
                "ratios": {k: {"wall": v, "cpu": v + 0.01} for k, v in ratios.items()},
            },
            "light": {"tiny": {"wall_median_s": load, "cpu_median_s": load}},
        },
    }


def test_summary_is_the_median_over_runs_with_its_spread(bench):
    summarize = bench("summarize_runs")
    walls = [3.0, 2.0, 9.0]  # one outlier run: the median ignores it, the spread shows it
    ratios = [0.9, 0.8, 1.4]
    runs = [
        _run_json({"detlab": w, "torchvision": w / r}, {"detlab / torchvision": r}, i, f"d{i}")
        for i, (w, r) in enumerate(zip(walls, ratios, strict=True))
    ]
    runs[1]["results"]["fcos"]["steps"]["extra"] = {"wall_median_s": 1, "cpu_median_s": 1}
    agg = summarize.aggregate(runs)
    assert set(agg) == {"fcos"}  # the light configurations are no architecture
    assert summarize.aggregate_light(runs)["tiny"]["wall"] == {"median": 1, "min": 0, "max": 2}
    assert set(agg["fcos"]["steps"]) == {"detlab", "torchvision"}  # only what every run has
    wall = agg["fcos"]["steps"]["detlab"]["wall"]
    assert wall == {"median": statistics.median(walls), "min": min(walls), "max": max(walls)}
    assert agg["fcos"]["steps"]["detlab"]["cpu"]["median"] == 2 * statistics.median(walls)
    ratio = agg["fcos"]["ratios"]["detlab / torchvision"]
    assert ratio["wall"]["median"] == statistics.median(ratios)
    assert ratio["cpu"]["max"] == pytest.approx(max(ratios) + 0.01)
    text = summarize.render(runs)
    assert "3 separate runs of `python benchmarks/train_step.py --iters 3`" in text
    assert "0 → 1" in text and "2 → 3" in text  # every run's load before → after
    row = next(line for line in text.splitlines() if line.startswith("| detlab |"))
    assert "3.00 (2.00–9.00)" in row and "0.90 (0.80–1.40)" in row


def test_publishing_refuses_fewer_than_three_runs(tmp_path):
    proc = subprocess.run(
        ["bash", str(BENCH / "publish_figures.sh"), str(tmp_path / "out")],
        env={"RUNS": "2", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "at least 3" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_train_step_interleaves_and_reports_ratios_per_round(bench):
    train_step = bench("train_step")
    wall = {"detlab": [1.0, 2.0, 3.0], "torchvision": [2.0, 2.0, 2.0], "detlab convs": [1, 1, 1]}
    cpu = {k: [2 * x for x in v] for k, v in wall.items()}
    res = train_step.summarize(wall, cpu)
    per_round = [a / b for a, b in zip(wall["detlab"], wall["torchvision"], strict=True)]
    assert res["ratios"]["detlab / torchvision"]["wall"] == statistics.median(per_round)
    assert res["ratios"]["detlab full / convs"]["cpu"] == statistics.median([1.0, 2.0, 3.0])
    assert "detlab convs / torchvision" not in res["ratios"]  # a part is not a peer


@pytest.mark.slow
def test_gpu_suite_runs_every_section_on_cpu(tmp_path):
    """``benchmarks/gpu.sh --device cpu --quick``: every section, one JSON and Markdown."""
    out = tmp_path / "gpu"
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu.sh"), "--device", "cpu", "--quick", "--arch", "fcos", "rcnn",
         "--workers", "1"],
        env={**os.environ, "OUT": str(out), "OMP_NUM_THREADS": "1",
             "GPU_SUITE_LIMIT_S": "1500"},  # a loaded CPU, not the GPU's 8 minutes
        capture_output=True,
        text=True,
        timeout=1600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "gpu.json").read_text())
    assert set(report["section_s"]) == {"train", "inference", "data"}
    for arch in ("fcos", "rcnn"):
        train = report["train"][arch]
        for variant in ("detlab", "detlab bf16", "detlab fp16", "detlab NCHW", "torchvision"):
            assert train[variant]["step_s"] > 0, variant
        assert report["inference"][arch]["detlab"]["images_per_s"] > 0
    assert report["data"]["images_per_s"] > 0 and report["data"]["workers"] == 1
    text = (out / "gpu.md").read_text()
    assert "**Train step, rcnn**" in text and "**Data pipeline**" in text


def test_gpu_suite_refuses_cuda_without_a_gpu(bench):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    gpu_suite = bench("gpu_suite")
    with pytest.raises(SystemExit) as err:
        gpu_suite.main(["--device", "cuda"])
    assert err.value.code == 2
