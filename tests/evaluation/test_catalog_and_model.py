"""Ground truth from the data catalog, and tools/eval.py --config-file with a tiny model."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch

from detlab.evaluation import COCOEvaluator, build_evaluator, evaluate_coco
from detlab.evaluation.cli import main
from detlab.structures import Instances


def _model_outputs(gt: dict, dets: list[dict], to_contiguous: dict[int, int]):
    inputs, outputs = [], []
    for img in gt["images"]:
        mine = [d for d in dets if d["image_id"] == img["id"]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)]
        inst = Instances(
            (img["height"], img["width"]),
            boxes=torch.tensor(xyxy, dtype=torch.float64).reshape(-1, 4),
            scores=torch.tensor([d["score"] for d in mine], dtype=torch.float64),
            classes=torch.tensor([to_contiguous[d["category_id"]] for d in mine]),
        )
        inputs.append({"image_id": img["id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_gt_from_registered_coco_json(coco_factory, tmp_path):
    from detlab.data import MetadataCatalog, register_coco_instances

    gt, dets = coco_factory(31, num_images=10)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    name = f"eval_test_json_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    meta = MetadataCatalog.get(name)
    to_contiguous = meta.thing_dataset_id_to_contiguous_id
    assert sorted(to_contiguous) == sorted(c["id"] for c in gt["categories"])
    ev = build_evaluator(_cfg(), name)
    assert isinstance(ev, COCOEvaluator)
    ev.process(*_model_outputs(gt, dets, to_contiguous))
    res = ev.evaluate()["bbox"]
    ref = evaluate_coco(gt, dets).results()
    assert res["AP"] == pytest.approx(ref["AP"], abs=1e-9)
    assert res["AP-cls1"] == pytest.approx(ref["AP-cls1"], abs=1e-9)


def test_gt_converted_from_dataset_dicts(coco_factory):
    from detlab.data import DatasetCatalog, MetadataCatalog

    gt, dets = coco_factory(32, num_images=10)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    to_contiguous = {c: i for i, c in enumerate(cat_ids)}
    dicts = []
    for img in gt["images"]:
        anns = [
            {"bbox": a["bbox"], "category_id": to_contiguous[a["category_id"]],
             "iscrowd": a["iscrowd"], "area": a["area"]}
            for a in gt["annotations"] if a["image_id"] == img["id"]
        ]  # fmt: skip
        d = {k: img[k] for k in ("file_name", "height", "width")}
        dicts.append({**d, "image_id": img["id"], "annotations": anns})
    name = f"eval_test_dicts_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: dicts)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    MetadataCatalog.get(name).set(
        thing_classes=[names[c] for c in cat_ids],
        thing_dataset_id_to_contiguous_id=to_contiguous,
        evaluator_type="coco",
    )
    ev = build_evaluator(_cfg(), name)
    ev.process(*_model_outputs(gt, dets, to_contiguous))
    res = ev.evaluate()["bbox"]
    ref = evaluate_coco(gt, dets).results()
    for key, value in ref.items():
        assert res[key] == pytest.approx(value, abs=1e-9), key


def _cfg():
    from detlab.config import get_cfg

    return get_cfg()


def _write_tiny_coco(root) -> str:
    import cv2

    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(3):
        img = (rng.random((64, 80, 3)) * 60).astype(np.uint8)
        img[10:40, 20:50] = 220
        cv2.imwrite(str(root / f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 80})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 5, "bbox": [20, 10, 30, 30],
                     "area": 900.0, "iscrowd": 0})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": [{"id": 5, "name": "ship"}]}
    path = root / "gt.json"
    path.write_text(json.dumps(gt))
    return str(path)


@pytest.mark.slow
def test_config_file_mode_with_a_tiny_model(tmp_path, capsys):
    from detlab.config import get_cfg
    from detlab.modeling import build_model

    json_file = _write_tiny_coco(tmp_path)
    name = f"eval_tiny_{uuid.uuid4().hex[:8]}"
    cfg_text = f"""
MODEL:
  META_ARCHITECTURE: FCOS
  BACKBONE: {{NAME: tiny_resnet, NORM: BN}}
  RESNETS: {{WIDTH_MULT: 0.25}}
  FPN: {{OUT_CHANNELS: 32, TOP_BLOCK: none}}
  FCOS: {{NUM_CONVS: 1, NUM_CLASSES: 1}}
DATASETS:
  REGISTER: [{{name: {name}, json_file: {json_file}, image_root: {tmp_path}}}]
  TRAIN: [{name}]
  TEST: [{name}]
DATALOADER: {{NUM_WORKERS: 0}}
INPUT: {{MIN_SIZE_TEST: 64, MAX_SIZE_TEST: 128}}
OUTPUT_DIR: {tmp_path / "run"}
"""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(cfg_text)
    cfg = get_cfg()
    cfg.merge_from_file(str(cfg_path))
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, ckpt)
    out = tmp_path / "eval"
    argv = ["--config-file", str(cfg_path), "--out", str(out), "--no-plots",
            "MODEL.WEIGHTS", str(ckpt), "TEST.MATCH_SCORE_THRESH", "0.0"]  # fmt: skip
    assert main(argv) == 0
    model_metrics = json.loads((out / "metrics.json").read_text())["bbox"]
    preds = out / "coco_instances_results.json"
    assert preds.exists() and (out / "report.md").exists()
    assert all(p["category_id"] == 5 for p in json.loads(preds.read_text()))
    # the written predictions evaluate to the same numbers through the results-file mode
    capsys.readouterr()
    assert main(["--gt", json_file, "--pred", str(preds), "--out", str(tmp_path / "again"),
                 "--no-plots", "--score-thresh", "0.0"]) == 0  # fmt: skip
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["bbox"]
    assert again == pytest.approx(model_metrics)
    # a missing checkpoint is one sentence
    assert main(["--config-file", str(cfg_path), "MODEL.WEIGHTS", str(tmp_path / "no.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_weights_files_are_one_sentence(tmp_path):
    from detlab.evaluation.cli import load_model_weights
    from detlab.utils.errors import UserError

    model = torch.nn.Linear(3, 2)
    cases = {
        "shape.pth": {"model": torch.nn.Linear(4, 2).state_dict()},
        "missing.pth": {"model": {"weight": torch.zeros(2, 3)}},
    }
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
    (tmp_path / "garbage.pth").write_text("not a checkpoint")
    expected = {
        "shape.pth": "size mismatch",
        "missing.pth": r"missing \(e.g. bias\)",
        "garbage.pth": "cannot be read \\(UnpicklingError\\)",
        "none.pth": "does not exist",
    }
    for name, text in expected.items():
        with pytest.raises(UserError, match=text) as info:
            load_model_weights(model, str(tmp_path / name))
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="MODEL.WEIGHTS is empty"):
        load_model_weights(model, "")
