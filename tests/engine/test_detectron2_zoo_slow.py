"""Detectron2's model-zoo configs, unchanged, train 2 iterations on the built-in data with
only DATASETS.*, MODEL.WEIGHTS and sizes overridden on the command line of tools/train_net.py.

The configs are copies in Detectron2's syntax written by the test (``tests/d2_zoo.py``). The
R-50 files keep ``MODEL.WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl``: the test puts
a Caffe2-format ``R-50.pkl`` (random weights, Caffe2 names, no BN statistics) where the cache
holds that file and runs offline, so the zoo path, the restricted unpickler and the Caffe2
names are all on the way.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SIZES = ["INPUT.MIN_SIZE_TRAIN", "(224,)", "INPUT.MAX_SIZE_TRAIN", "256",
         "INPUT.MIN_SIZE_TEST", "224", "INPUT.MAX_SIZE_TEST", "256",
         "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Private data and weight caches, offline, with a Caffe2-format R-50.pkl in place."""
    from detlab.config import get_cfg
    from detlab.modeling import build_model
    from detlab.modeling.weight_names import export_state_dict

    base = tmp_path_factory.mktemp("d2zoo")
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "FasterRCNN"
    cfg.MODEL.BACKBONE.NAME = "resnet50"
    names = export_state_dict(build_model(cfg), "caffe2")
    blobs = {
        k: v.numpy()
        for k, v in names.items()
        if k.startswith(("res", "conv1")) and not k.endswith(("_rm", "_riv"))
    }
    pkl = base / "torch" / "hub" / "checkpoints" / "detectron2" / "ImageNetPretrained" / "MSRA"
    pkl.mkdir(parents=True)
    (pkl / "R-50.pkl").write_bytes(pickle.dumps(blobs, protocol=2))
    out = dict(os.environ)
    out.update(
        TORCH_HOME=str(base / "torch"),
        DETLAB_OFFLINE="1",
        DETLAB_DATA=str(base / "data"),
        PYTHONPATH=os.path.abspath(ROOT),
    )
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    import sys as _sys

    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    if here not in _sys.path:
        _sys.path.insert(0, here)
    import d2_zoo

    return d2_zoo.write_zoo(tmp_path_factory.mktemp("configs"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, weights",
    [
        ("faster_rcnn_R_50_FPN_1x", None),
        ("faster_rcnn_R_50_FPN_3x", None),
        ("faster_rcnn_R_101_FPN_3x", ""),
        ("retinanet_R_50_FPN_1x", None),
        ("retinanet_R_50_FPN_3x", None),
    ],
)
def test_zoo_config_trains_two_iterations(env, zoo, tmp_path, name, weights):
    out = tmp_path / "out"
    opts = [*SIZES, "DATASETS.TRAIN", "('sar_ships_synth_val',)", "DATASETS.TEST", "()",
            "OUTPUT_DIR", str(out)]  # fmt: skip
    if weights is not None:  # R-101.pkl is not in the test's cache: start from scratch
        opts += ["MODEL.WEIGHTS", weights]
    cmd = [sys.executable, "tools/train_net.py", "--config-file",
           str(zoo / "COCO-Detection" / f"{name}.yaml"), *opts]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "total_loss" in r]
    assert [r["iteration"] for r in losses] == [0, 1]
    assert all(r["total_loss"] == r["total_loss"] for r in losses)  # finite, not NaN
    log = (out / "log.txt").read_text()
    saved = (out / "config.yaml").read_text()
    if name.startswith("faster"):
        assert "META_ARCHITECTURE: FasterRCNN" in saved
        assert log.count("Ignored in") == 1 and "MODEL.MASK_ON" in log
    else:
        assert "META_ARCHITECTURE: RetinaNet" in saved and "TOP_BLOCK: P6P7C5" in saved
    assert ("resnet101" if "101" in name else "resnet50") in saved
    if weights is None:
        assert "Loaded weights from detectron2://ImageNetPretrained/MSRA/R-50.pkl" in log
        assert "(Caffe2 names)" in log
    assert (out / "model_final.pth").exists()
