"""COCOEvaluator, inference_on_dataset and the DDP gather."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from detlab.evaluation import COCOEvaluator, evaluate_coco, inference_on_dataset
from detlab.structures import Instances


def _outputs_from_dets(gt: dict, dets: list[dict]) -> tuple[list[dict], list[dict]]:
    """Model-style inputs/outputs (XYXY, contiguous classes) holding ``dets``."""
    cats = sorted(c["id"] for c in gt["categories"])
    contiguous = {c: i for i, c in enumerate(cats)}
    inputs, outputs = [], []
    for img in gt["images"]:
        mine = [d for d in dets if d["image_id"] == img["id"]]
        boxes = torch.tensor(
            [[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]
             for d in mine], dtype=torch.float64,
        ).reshape(-1, 4)  # fmt: skip
        inst = Instances(
            (img["height"], img["width"]),
            boxes=boxes,
            scores=torch.tensor([d["score"] for d in mine], dtype=torch.float64),
            classes=torch.tensor([contiguous[d["category_id"]] for d in mine], dtype=torch.int64),
        )
        inputs.append({"image_id": img["id"], "height": img["height"], "width": img["width"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_evaluator_equals_the_metric_core(coco_factory, tmp_path):
    gt, dets = coco_factory(11, num_images=12)
    inputs, outputs = _outputs_from_dets(gt, dets)
    ev = COCOEvaluator("unused", str(tmp_path), gt=gt, plots=False)
    ev.reset()
    for i in range(0, len(inputs), 5):  # several batches
        ev.process(inputs[i : i + 5], outputs[i : i + 5])
    res = ev.evaluate()["bbox"]
    ref = evaluate_coco(gt, dets).results()
    for key, value in ref.items():
        assert res[key] == pytest.approx(value, abs=1e-6), key
    assert "macro-F1" in res and "F1-cls0" in res
    saved = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert len(saved) == len(dets)
    assert json.loads((tmp_path / "metrics.json").read_text())["bbox"] == pytest.approx(res)
    ev.reset()
    with pytest.warns(UserWarning, match="no detections"):
        assert ev.evaluate()["bbox"]["AP"] == 0.0


def test_max_dets_per_image_keeps_top_scores(coco_factory):
    gt, dets = coco_factory(12, num_images=4, dets_per_image=30)
    inputs, outputs = _outputs_from_dets(gt, dets)
    ev = COCOEvaluator("unused", gt=gt, max_dets_per_image=3)
    ev.process(inputs, outputs)
    for img in gt["images"]:
        kept = sorted(p["score"] for p in ev._predictions if p["image_id"] == img["id"])
        scores = sorted(d["score"] for d in dets if d["image_id"] == img["id"])
        assert kept == scores[-3:] if scores else kept == []


class _EchoModel(torch.nn.Module):
    """Returns stored outputs; records the mode and grad state it was called in."""

    def __init__(self, outputs):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.outputs = {id(o): o for o in outputs}
        self.calls = []

    def forward(self, batch):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return [b["_out"] for b in batch]


def test_inference_on_dataset_eval_mode_no_grad_and_restore(coco_factory):
    gt, dets = coco_factory(13, num_images=6)
    inputs, outputs = _outputs_from_dets(gt, dets)
    batches = [[{**i, "_out": o}] for i, o in zip(inputs, outputs, strict=True)]
    model = _EchoModel(outputs)
    model.train()
    ev = COCOEvaluator("unused", gt=gt)
    res = inference_on_dataset(model, batches, ev)
    assert model.training  # restored
    assert model.calls == [(False, False)] * len(batches)
    assert res["bbox"]["AP"] == pytest.approx(evaluate_coco(gt, dets).results()["AP"])
    model.eval()
    inference_on_dataset(model, batches, None)
    assert not model.training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DDP_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
from detlab.evaluation import COCOEvaluator
from detlab.structures import Instances

rank, world, port, data, out = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
gt, dets = json.load(open(data))
cats = sorted(c["id"] for c in gt["categories"])
ev = COCOEvaluator("unused", gt=gt)
for img in gt["images"][rank::world]:
    mine = [d for d in dets if d["image_id"] == img["id"]]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)],
                     dtype=torch.float64)
    inst = Instances((img["height"], img["width"]), boxes=boxes.reshape(-1, 4),
                     scores=torch.tensor([d["score"] for d in mine], dtype=torch.float64),
                     classes=torch.tensor([cats.index(d["category_id"]) for d in mine]))
    ev.process([{"image_id": img["id"]}], [{"instances": inst}])
json.dump(ev.evaluate(), open(f"{out}.{rank}", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_gather_on_two_processes(coco_factory, tmp_path):
    gt, dets = coco_factory(14, num_images=10)
    (tmp_path / "data.json").write_text(json.dumps([gt, dets]))
    script = tmp_path / "worker.py"
    script.write_text(_DDP_SCRIPT)
    out, port = str(tmp_path / "res"), str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), port, str(tmp_path / "data.json"), out]
        )
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with open(out + ".1") as f:
        assert json.load(f) == {}
    with open(out + ".0") as f:
        res0 = json.load(f)["bbox"]
    ref = evaluate_coco(gt, dets).results()
    for key, value in ref.items():
        assert res0[key] == pytest.approx(value, abs=1e-9), key
