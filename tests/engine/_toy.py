"""A tiny detector, loaders and evaluator for trainer tests (no dataset files, CPU, seconds).

Images are 1×32×32 noise with one bright rectangle; the detector regresses the rectangle's
normalised box. Batches are a pure function of (global batch index, rank), so a loader built
with ``start_iter=k`` yields exactly the batches an uninterrupted one yields from k on, and two
processes with half the batch each see together what one process sees with the full batch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from detlab.config import get_cfg
from detlab.engine import HOOK_REGISTRY, HookBase, Trainer
from detlab.modeling import META_ARCH_REGISTRY
from detlab.structures import Instances
from detlab.utils import comm

SIZE = 32


def make_sample(index: int, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    img = torch.rand(1, SIZE, SIZE, generator=g) * 60.0
    w, h = (int(v) for v in torch.randint(6, 16, (2,), generator=g))
    x0 = int(torch.randint(0, SIZE - w, (1,), generator=g))
    y0 = int(torch.randint(0, SIZE - h, (1,), generator=g))
    img[:, y0 : y0 + h, x0 : x0 + w] += 180.0
    boxes = torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32)
    inst = Instances((SIZE, SIZE), boxes=boxes, classes=torch.zeros(1, dtype=torch.int64))
    return {"image": img, "instances": inst, "height": SIZE, "width": SIZE, "image_id": index}


class ToyTrainLoader:
    """Infinite; batch ``b`` of rank ``r`` holds samples ``b*total + r*per + j``."""

    def __init__(self, ims_per_batch: int, start_iter: int = 0, seed: int = 0) -> None:
        self.world = comm.get_world_size()
        self.total = ims_per_batch
        self.per = ims_per_batch // self.world
        self.start_iter = start_iter
        self.seed = seed

    def __iter__(self):
        b = self.start_iter
        rank = comm.get_rank()
        while True:
            base = b * self.total + rank * self.per
            yield [make_sample(base + j, self.seed) for j in range(self.per)]
            b += 1


@META_ARCH_REGISTRY.register()
class ToyDetector(nn.Module):
    """conv → GroupNorm → pool → linear: one box (normalised XYXY) and one score per image."""

    def __init__(self, in_channels: int = 1, pixel_mean=(0.0,), pixel_std=(1.0,)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.norm1 = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8 * 16 * 16, 5)
        self.register_buffer("mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        return {
            "in_channels": len(cfg.MODEL.PIXEL_MEAN),
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
        }

    def forward(self, batch: list[dict]) -> Any:
        x = torch.stack([(d["image"] - self.mean) / self.std for d in batch])
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        out = self.head(x.flatten(1))
        boxes = out[:, :4].sigmoid()
        if self.training:
            target = torch.stack([d["instances"].boxes[0] / SIZE for d in batch])
            return {
                "loss_box": F.smooth_l1_loss(boxes, target, beta=0.05),
                "loss_cls": F.binary_cross_entropy_with_logits(out[:, 4], torch.ones(len(batch))),
            }
        results = []
        for d, b, s in zip(batch, boxes, out[:, 4].sigmoid(), strict=True):
            scale = torch.tensor([d["width"], d["height"], d["width"], d["height"]])
            inst = Instances(
                (d["height"], d["width"]),
                boxes=(b * scale)[None],
                scores=s[None],
                classes=torch.zeros(1, dtype=torch.int64),
            )
            results.append({"instances": inst})
        return results


class ToyEvaluator:
    """``bbox/AP50`` = % of images whose box has IoU ≥ 0.5; ``bbox/AP`` = mean IoU × 100."""

    def reset(self) -> None:
        self.ious: list[float] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for i, o in zip(inputs, outputs, strict=True):
            self.ious.append(float(box_iou(o["instances"].boxes, i["instances"].boxes)[0, 0]))

    def evaluate(self) -> dict[str, Any]:
        n = max(len(self.ious), 1)
        return {
            "bbox": {
                "AP": 100.0 * sum(self.ious) / n,
                "AP50": 100.0 * sum(v >= 0.5 for v in self.ious) / n,
            }
        }


class ToyTrainer(Trainer):
    @classmethod
    def build_train_loader(cls, cfg: Any, start_iter: int = 0) -> Any:
        return ToyTrainLoader(cfg.SOLVER.IMS_PER_BATCH, start_iter, seed=0)

    @classmethod
    def build_test_loader(cls, cfg: Any, dataset_name: str) -> Any:
        return [[make_sample(10_000 + 2 * i + j) for j in range(2)] for i in range(8)]

    @classmethod
    def build_evaluator(cls, cfg: Any, dataset_name: str, output_dir: str | None = None) -> Any:
        return ToyEvaluator()

    @classmethod
    def inference(cls, model: nn.Module, data_loader: Any, evaluator: Any) -> dict:
        was = model.training
        model.eval()
        evaluator.reset()
        with torch.no_grad():
            for batch in data_loader:
                evaluator.process(batch, model(batch))
        model.train(was)
        return evaluator.evaluate()


def toy_cfg(output_dir: str, **overrides: Any):
    """A config for ToyTrainer: 30 iterations, batch 4, checkpoints every 10."""
    cfg = get_cfg()
    cfg.merge_from_dict(
        {
            "OUTPUT_DIR": str(output_dir),
            "SEED": 0,
            "MODEL": {
                "META_ARCHITECTURE": "ToyDetector",
                "PIXEL_MEAN": (100.0,),
                "PIXEL_STD": (80.0,),
            },
            "DATASETS": {"TRAIN": ("toy_train",), "TEST": ("toy_val",)},
            "SOLVER": {
                "BASE_LR": 0.1,
                "MAX_ITER": 30,
                "STEPS": (20,),
                "WARMUP_ITERS": 5,
                "IMS_PER_BATCH": 4,
                "CHECKPOINT_PERIOD": 10,
                "WEIGHT_DECAY": 0.0,
            },
            "TEST": {"EVAL_PERIOD": 10},
            "LOGGING": {"TENSORBOARD": False, "PERIOD": 10},
        }
    )
    flat: list[str] = []
    for k, v in overrides.items():
        flat += [k, repr(v) if not isinstance(v, str) else v]
    if flat:
        cfg.merge_from_list(flat)
    return cfg


class SleepHook(HookBase):
    """Slows each iteration down so a test can kill the process mid-run."""

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        return {}

    def after_step(self) -> None:
        time.sleep(0.05)


if "SleepHook" not in HOOK_REGISTRY:
    HOOK_REGISTRY.register(SleepHook)
