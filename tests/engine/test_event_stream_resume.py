"""A recurrent model trained on event streams, killed with SIGKILL and resumed, reproduces the
uninterrupted run's losses bit for bit (the stream position and the recurrent state both come
back from the checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from _kill import losses, sigkill_after

from detlab.config import get_cfg
from detlab.data.datasets.builtin_events import generate_synthetic_events
from detlab.data.datasets.synthetic_events import SyntheticEventSpec
from detlab.engine.checkpoint import load_checkpoint_file

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "_event_train.py")


def _config(tmp_path) -> str:
    spec = SyntheticEventSpec(
        num_sequences=3, duration_us=700_000, height=48, width=64, seed=9, objects_per_second=4.0
    )
    spec.classes = {
        "small": ((6.0, 8.0), (10.0, 12.0), (40.0, 60.0)),
        "big": ((16.0, 20.0), (8.0, 10.0), (60.0, 90.0)),
    }
    root = generate_synthetic_events(str(tmp_path / "rec"), spec, workers=1)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "tiny_resnet"
    cfg.MODEL.BACKBONE.NORM = "BN"
    cfg.MODEL.BACKBONE.IN_CHANNELS = 4
    cfg.MODEL.RESNETS.WIDTH_MULT = 0.25
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [0.0] * 4, [1.0] * 4
    cfg.MODEL.FPN.IN_STAGES = [1, 2, 3]
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.FPN.TOP_BLOCK = "none"
    cfg.MODEL.FCOS.NUM_CONVS = 1
    cfg.MODEL.FCOS.NUM_CLASSES = 2
    cfg.MODEL.TEMPORAL.NAME = "ConvLSTM"
    cfg.DATASETS.REGISTER = [
        {
            "name": "kill_ev",
            "format": "events",
            "root": root,
            "classes": ["small", "big"],
            "sensor_size": [48, 64],
        }
    ]
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ["kill_ev"], []
    cfg.DATALOADER.MAPPER = "EventWindowMapper"
    cfg.DATALOADER.SAMPLER_TRAIN = "SequenceSampler"
    cfg.DATALOADER.SEQUENCE.SAMPLING = "stream"
    cfg.DATALOADER.SEQUENCE.LENGTH = 3
    cfg.DATALOADER.NUM_WORKERS = 1
    cfg.INPUT.EVENTS.NUM_BINS = 2
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.WARMUP_ITERS = 5
    cfg.SOLVER.MAX_ITER = 24
    cfg.SOLVER.STEPS = [20]
    cfg.SOLVER.CHECKPOINT_PERIOD = 6
    cfg.TRAINER.EXTRA_HOOKS = ["EventTestSleep"]
    cfg.TRAINER.CPU_THREADS = 1
    cfg.LOGGING.TENSORBOARD = False
    cfg.SEED = 3
    path = tmp_path / "kill.yaml"
    path.write_text(cfg.dump())
    return str(path)


def _env(sleep: float) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", DETLAB_TEST_SLEEP=str(sleep))


@pytest.mark.slow
def test_sigkilled_stream_run_resumes_exactly(tmp_path):
    cfg_file = _config(tmp_path)
    cmd = [sys.executable, SCRIPT, "--config-file", cfg_file]
    ref = subprocess.run(
        [*cmd, "OUTPUT_DIR", str(tmp_path / "ref")],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(0),
    )
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "killed"
    code = sigkill_after([*cmd, "OUTPUT_DIR", str(out)], out, 14, _env(0.4))
    assert code == -signal.SIGKILL
    assert (out / "last_checkpoint").read_text().strip() == "model_0000011.pth"
    state = load_checkpoint_file(str(out / "model_0000011.pth"))["hooks"]
    saved = next(v for k, v in state.items() if k.endswith("StreamStateHook"))
    memory = saved["per_rank"][0][0]["memory"]
    assert memory and all(len(levels) == 3 for levels in memory.values())  # a live state

    resumed = subprocess.run(
        [*cmd, "--resume", "OUTPUT_DIR", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(0),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing at iteration 12" in (out / "log.txt").read_text()
    assert losses(out) == losses(tmp_path / "ref")  # every iteration, bit for bit
    a = load_checkpoint_file(str(tmp_path / "ref" / "model_final.pth"))["model"]
    b = load_checkpoint_file(str(out / "model_final.pth"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_event_tensors_are_drawn_as_pictures():
    from detlab.engine.samples import _viewable, draw_detections

    hist = torch.zeros(10, 8, 12)
    hist[2, 1, 1] = 3  # an OFF event (first half of the channels)
    hist[7, 4, 6] = 5  # an ON event
    pic = _viewable(hist)
    assert pic.shape == (3, 8, 12)
    assert pic[0, 1, 1] > 0 and pic[2, 1, 1] == 0  # OFF: blue (BGR)
    assert pic[2, 4, 6] == 255 and pic[0, 4, 6] == 0  # ON: red
    drawn = draw_detections(pic, torch.tensor([[1.0, 1.0, 6.0, 6.0]]), torch.zeros(0, 4))
    assert drawn.shape == (3, 8, 12) and drawn.dtype == torch.uint8
    rgb = torch.rand(3, 8, 12)
    assert _viewable(rgb) is rgb
