"""End to end: a trained checkpoint from tools/train_net.py feeds export and visualize."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detlab.export.cli import main as export_main
from detlab.visualization.cli import main as visualize_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["FCOS", "FasterRCNN", "YOLO"])
def test_trained_checkpoint_exports_and_draws(tmp_path, tiny_config, arch, capsys):
    cfg = tiny_config(arch)
    out_dir = tmp_path / "run"
    # YOLO trains with its mosaic pipeline, closed for the last 4 iterations
    mosaic = ["INPUT.MOSAIC.ENABLED", "True", "INPUT.MOSAIC.SIZE", "64",
              "INPUT.MOSAIC.CLOSE_ITERS", "4"] if arch == "YOLO" else []  # fmt: skip
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", cfg,
         "SOLVER.MAX_ITER", "12", "SOLVER.CHECKPOINT_PERIOD", "6", "TEST.EVAL_PERIOD", "0",
         "OUTPUT_DIR", str(out_dir), *mosaic],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = str(out_dir / "model_final.pth")
    assert os.path.isfile(weights)

    onnx_path = str(tmp_path / "model.onnx")
    argv = ["--config-file", cfg, "MODEL.WEIGHTS", weights, "--output", onnx_path]
    assert export_main([*argv, "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and all(s["ok"] for s in report["samples"])

    vis = tmp_path / "vis"
    argv = ["--config-file", cfg, "MODEL.WEIGHTS", weights, "--output", str(vis)]
    assert visualize_main([*argv, "--score-thresh", "0.0", "--num-images", "2"]) == 0
    (folder,) = os.listdir(vis)
    assert len(os.listdir(vis / folder)) == 2
