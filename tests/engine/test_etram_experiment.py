"""The eTraM experiment as configured: six event-stream configs (3/4-scale x size-aware, and
the memory ablation of the size-aware pair),
an eTraM-layout folder of HDF5 recordings trained on end to end, and the ranked comparison
against the baselines file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from detlab.config import load_config
from detlab.data.events import BBOX_DTYPE, save_labels

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ETRAM = os.path.join(ROOT, "configs", "etram")
VARIANTS = {  # name: (FPN input stages, size-aware loss, recurrent memory)
    "fcos_R50_3scale.yaml": ((2, 3, 4), False, True),
    "fcos_R50_3scale_sizeaware.yaml": ((2, 3, 4), True, True),
    "fcos_R50_4scale.yaml": ((1, 2, 3, 4), False, True),
    "fcos_R50_4scale_sizeaware.yaml": ((1, 2, 3, 4), True, True),
    "fcos_R50_3scale_sizeaware_nomemory.yaml": ((2, 3, 4), True, False),
    "fcos_R50_4scale_sizeaware_nomemory.yaml": ((1, 2, 3, 4), True, False),
    "yolo_s_3scale_sizeaware.yaml": ((2, 3, 4), True, True),
    "yolo_s_4scale_sizeaware.yaml": ((1, 2, 3, 4), True, True),
}


def test_every_etram_config_is_a_listed_variant():
    on_disk = {f for f in os.listdir(ETRAM) if f.endswith(".yaml") and not f.startswith("Base")}
    assert on_disk == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_etram_configs_are_event_stream_models(name):
    from detlab.modeling import build_model

    # the recipe's R50 (YOLO: CSP-Darknet) narrowed to the same stages: builds in a blink
    yolo = name.startswith("yolo")
    if yolo:
        light = ["MODEL.CSP.WIDTH_MULT", "0.125"]
    else:
        light = ["MODEL.BACKBONE.NAME", "tiny_resnet", "MODEL.RESNETS.WIDTH_MULT", "0.25"]
    cfg = load_config(os.path.join(ETRAM, name), ["MODEL.DEVICE", "cpu", *light])
    assert cfg.MODEL.META_ARCHITECTURE == ("YOLO" if yolo else "FCOS")
    assert cfg.MODEL.TEMPORAL.KERNEL_SIZE == 1  # RVT's 1x1 LSTM gates
    stages, size_aware, memory = VARIANTS[name]
    assert tuple(cfg.MODEL.FPN.IN_STAGES) == stages
    assert cfg.MODEL.SIZE_AWARE_LOSS.ENABLED is size_aware
    assert cfg.DATALOADER.SAMPLER_TRAIN == "SequenceSampler"
    assert cfg.DATALOADER.SEQUENCE.SAMPLING == "stream"
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER) == (6, 100000)
    assert cfg.DATASETS.REGISTER[0]["preset"] == "etram"
    assert cfg.DATASETS.REGISTER[0]["format"] == "events"
    assert os.path.isabs(cfg.DATASETS.REGISTER[0]["root"])
    model = build_model(cfg)
    if memory:
        assert model.temporal.levels == [f"res{s + 1}" for s in stages]  # a cell per FPN input
    else:
        assert model.temporal is None
    assert model.backbone.in_channels == 2 * cfg.INPUT.EVENTS.NUM_BINS == 20
    if yolo:
        assert cfg.MODEL.YOLO.NUM_CLASSES == 8 and not cfg.INPUT.MOSAIC.ENABLED
        assert model.head.size_weighting is not None


def _etram_folder(root, seed):
    """Tiny eTraM-style split: *_td.h5 (compressed when hdf5plugin is present) + *_bbox.npy."""
    from detlab.data.datasets.synthetic_events import SyntheticEventSpec, render_recording
    from detlab.data.events import write_h5

    root.mkdir(parents=True)
    spec = SyntheticEventSpec(
        num_sequences=2,
        duration_us=500_000,
        height=72,
        width=128,
        seed=seed,
        objects_per_second=6.0,
    )
    for i in range(2):
        ev, labels = render_recording(spec, i)
        write_h5(str(root / f"rec{i}_td.h5"), ev["x"], ev["y"], ev["p"], ev["t"], 72, 128)
        moved = np.zeros(len(labels), BBOX_DTYPE)
        for f in BBOX_DTYPE.names:
            moved[f] = labels[f]
        moved["class_id"] = [(0, 1, 3)[c] for c in labels["class_id"]]  # pedestrian, car, bus
        save_labels(str(root / f"rec{i}_bbox.npy"), moved)


@pytest.mark.slow
def test_etram_layout_trains_evaluates_and_ranks(tmp_path):
    pytest.importorskip("h5py")
    from detlab.data import DatasetCatalog, MetadataCatalog
    from detlab.data.datasets.events import forget_event_dataset
    from detlab.engine import Trainer, default_setup
    from detlab.evaluation.cli import main as eval_main

    _etram_folder(tmp_path / "etram" / "train", seed=1)
    _etram_folder(tmp_path / "etram" / "val", seed=2)
    runs = []
    light_fcos = [
        "MODEL.BACKBONE.NAME",
        "tiny_resnet",
        "MODEL.RESNETS.WIDTH_MULT",
        "0.25",
        "MODEL.FPN.OUT_CHANNELS",
        "16",
        "MODEL.FPN.TOP_BLOCK",
        "none",  # P6/P7 would be 1x1 on these tiny inputs
        "MODEL.FCOS.NUM_CONVS",
        "1",
    ]
    light_yolo = ["MODEL.CSP.WIDTH_MULT", "0.125", "MODEL.YOLO.REG_MAX", "8"]
    for name in (
        "fcos_R50_3scale.yaml",
        "fcos_R50_4scale_sizeaware.yaml",
        "fcos_R50_3scale_sizeaware_nomemory.yaml",  # stream batches through a memory-less model
        "yolo_s_3scale_sizeaware.yaml",
    ):
        out = tmp_path / name.replace(".yaml", "")
        cfg = load_config(
            os.path.join(ETRAM, name),
            [
                "MODEL.DEVICE",
                "cpu",
                *(light_yolo if name.startswith("yolo") else light_fcos),
                "SOLVER.MAX_ITER",
                "4",
                "SOLVER.STEPS",
                "(3,)",
                "SOLVER.WARMUP_ITERS",
                "1",
                "SOLVER.IMS_PER_BATCH",
                "2",
                "TEST.EVAL_PERIOD",
                "0",
                "DATALOADER.NUM_WORKERS",
                "0",
                "DATALOADER.SEQUENCE.LENGTH",
                "3",
                "LOGGING.WANDB.ENABLED",
                "False",
                "LOGGING.TENSORBOARD",
                "False",
                "INPUT.EVENTS.CACHE_DIR",
                str(tmp_path / "cache"),
                "OUTPUT_DIR",
                str(out),
            ],
        )
        cfg.defrost()
        cfg.DATASETS.REGISTER = [
            {
                "name": "etram_train",
                "format": "events",
                "root": str(tmp_path / "etram" / "train"),
                "preset": "etram",
            },
            {
                "name": "etram_val",
                "format": "events",
                "root": str(tmp_path / "etram" / "val"),
                "preset": "etram",
            },
        ]
        trainer = Trainer(default_setup(cfg))
        trainer.resume_or_load(resume=False)
        final = trainer.train()
        assert np.isfinite(final["bbox"]["AP"])
        runs.append(str(out))
    assert len(os.listdir(tmp_path / "cache" / "repr")) == 4  # train + val, each recording once
    baselines = os.path.join(ROOT, "configs", "sweeps", "etram_baselines.yaml")
    code = eval_main(
        [
            "--compare",
            *runs,
            "--baselines",
            baselines,
            "--baseline",
            "RVT 3-scale (earlier run)",
            "--metric",
            "APs",
            "--out",
            str(tmp_path / "compare"),
        ]
    )
    assert code == 0
    table = (tmp_path / "compare" / "leaderboard.md").read_text()
    assert "RVT 3-scale (earlier run)" in table and "34.02" in table
    assert "fcos_R50_3scale" in table and "delta-APs" in table
    assert "fcos_R50_3scale_sizeaware_nomemory" in table and "yolo_s_3scale_sizeaware" in table
    metrics = json.loads((tmp_path / "fcos_R50_3scale" / "final_metrics.json").read_text())
    assert "AP-car" in metrics["bbox"] and "APs" in metrics["bbox"]
    for n in ("etram_train", "etram_val"):
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)
        forget_event_dataset(n)
