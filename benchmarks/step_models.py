"""Detectors configured alike for the train-step benchmarks, and one timed step of each.

``benchmarks/train_step.py`` (CPU) and ``benchmarks/gpu_suite.py`` (CUDA) build their models
here. Every implementation gets the same images and boxes and the same configuration:
ResNet-50-FPN with BatchNorm trained and every layer trainable (torchvision's setting without
pretrained weights; Detectron2 defaults to FrozenBN and stride in the 1×1 conv, both changed to
match), the same head depth, anchors (32–512, 3 ratios; RetinaNet 3 scales × 3 ratios), RPN
2000 pre-NMS proposals per level and 2000 post-NMS per image in training, 256 sampled anchors
(half positive at most) and 512 sampled RoIs (a quarter foreground at most) per image, RoIAlign
7×7 with sampling ratio 2 and no half-pixel offset, P6/P7 from P5 for FCOS and RetinaNet, the
same pixel normalisation, random init, SGD with momentum.

A *step* is forward with losses, backward and an SGD step; with ``amp`` the forward runs under
``torch.autocast`` (fp16 adds a gradient scaler), as detlab's ``SOLVER.AMP`` does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision

from detlab.config import get_cfg
from detlab.modeling import META_ARCH_REGISTRY, build_model
from detlab.structures import Instances

__all__ = [
    "ARCHS",
    "MEAN",
    "NUM_CLASSES",
    "STD",
    "available_archs",
    "bf16_supported",
    "build_steps",
    "detectron2_inputs",
    "detectron2_model",
    "detectron2_version",
    "detlab_cfg",
    "make_inputs",
    "time_interleaved",
    "torchvision_model",
]

NUM_CLASSES = 80
MEAN = (103.53, 116.28, 123.675)
STD = (57.375, 57.12, 58.395)
ARCHS = ("fcos", "rcnn", "retinanet")
# detlab meta-architecture of each benchmark name (RetinaNet only where detlab has it)
_META = {"fcos": "FCOS", "rcnn": "FasterRCNN", "retinanet": "RetinaNet"}

Step = Callable[[], None]


def available_archs() -> list[str]:
    """The benchmark architectures this detlab build has."""
    return [a for a in ARCHS if _META[a] in META_ARCH_REGISTRY]


def bf16_supported() -> bool:
    """Whether this CPU runs oneDNN bf16 kernels (AVX512-BF16 or AMX); else bf16 is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def detectron2_version() -> str | None:
    """Detectron2's version where the parts used here import, else None.

    Its model zoo imports ``pkg_resources``, which setuptools 81 and later no longer ship: an
    installed Detectron2 without it counts as absent (its variants are skipped, not crashed).
    """
    try:
        import detectron2
        from detectron2 import model_zoo  # noqa: F401
    except ImportError:
        return None
    return str(detectron2.__version__)


def make_inputs(
    batch: int,
    size: tuple[int, int],
    channels: int = 3,
    boxes_per_image: int = 8,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Random images on a 0..255 scale with random boxes of 16..256 px (clipped to the image)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for i in range(batch):
        img = torch.rand(channels, h, w, generator=g) * 255
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([w - 16.0, h - 16.0])
        wh = 16 + torch.rand(boxes_per_image, 2, generator=g) * min(240, min(h, w) // 2)
        boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w * 1.0, h * 1.0]))], 1)
        classes = torch.randint(0, NUM_CLASSES, (boxes_per_image,), generator=g)
        out.append(
            {
                "image": img,
                "instances": Instances((h, w), boxes=boxes, classes=classes),
                "height": h,
                "width": w,
                "image_id": i,
            }
        )
    return out


def detlab_cfg(arch: str, device: str = "cpu", channels_last: bool = True):
    """detlab's config for ``arch``; detlab defaults except what is matched to the peers."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = device
    cfg.MODEL.CHANNELS_LAST = channels_last
    cfg.MODEL.BACKBONE.NAME = "resnet50"
    cfg.MODEL.BACKBONE.NORM = "BN"  # torchvision without pretrained weights trains BN
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = MEAN, STD
    if arch == "fcos":
        cfg.MODEL.META_ARCHITECTURE = "FCOS"
        cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
        cfg.MODEL.FPN.TOP_BLOCK = "P6P7"  # from P5, as torchvision's and Detectron2's FCOS
        cfg.MODEL.FCOS.NUM_CLASSES = NUM_CLASSES
        cfg.MODEL.FCOS.NUM_CONVS = 4
        cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6
    elif arch == "retinanet":
        cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
        cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
        cfg.MODEL.FPN.TOP_BLOCK = "P6P7"  # torchvision's retinanet_resnet50_fpn: P6 from P5
        cfg.MODEL.RETINANET.NUM_CLASSES = NUM_CLASSES
        cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.0  # torchvision's L1 box loss
    else:
        cfg.MODEL.META_ARCHITECTURE = "FasterRCNN"
        cfg.MODEL.FPN.IN_STAGES = (1, 2, 3, 4)
        cfg.MODEL.FPN.TOP_BLOCK = "P6pool"
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = ((32,), (64,), (128,), (256,), (512,))
        cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000  # torchvision's default
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2  # torchvision's MultiScaleRoIAlign
    return cfg


def torchvision_model(arch: str, size: tuple[int, int]) -> torch.nn.Module:
    kw = {
        "weights": None,
        "weights_backbone": None,
        "min_size": min(size),
        "max_size": max(size),
        "image_mean": [m / 255 for m in MEAN],
        "image_std": [s / 255 for s in STD],
    }
    det = torchvision.models.detection
    if arch == "fcos":
        return det.fcos_resnet50_fpn(num_classes=NUM_CLASSES, **kw)
    if arch == "retinanet":
        return det.retinanet_resnet50_fpn(num_classes=NUM_CLASSES, **kw)
    return det.fasterrcnn_resnet50_fpn(num_classes=NUM_CLASSES + 1, **kw)


def detectron2_model(arch: str, device: str) -> torch.nn.Module:
    """Detectron2's own model-zoo config, changed only where the others differ."""
    from detectron2 import model_zoo
    from detectron2.config import LazyConfig, instantiate

    if arch == "rcnn":
        from detectron2.config import get_cfg as d2_cfg
        from detectron2.modeling import build_model as d2_build

        cfg = d2_cfg()
        cfg.merge_from_file(
            model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml")
        )
        cfg.MODEL.DEVICE = device
        cfg.MODEL.WEIGHTS = ""
        cfg.MODEL.RESNETS.NORM = "BN"
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = list(MEAN), list(STD)
        cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
        cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlign"  # torchvision's: no half-pixel offset
        cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
        return d2_build(cfg)
    name = {"fcos": "fcos_R_50_FPN_1x.py", "retinanet": "retinanet_R_50_FPN_1x.py"}[arch]
    cfg = LazyConfig.load(model_zoo.get_config_file(f"COCO-Detection/{name}"))
    m = cfg.model
    m.backbone.bottom_up.stem.norm = "BN"
    m.backbone.bottom_up.stages.norm = "BN"
    m.backbone.bottom_up.stages.stride_in_1x1 = False
    m.backbone.bottom_up.freeze_at = 0
    m.backbone.top_block.in_feature = "p5"  # Detectron2's RetinaNet takes C5; the others P5
    m.backbone.top_block.in_channels = 256
    m.pixel_mean, m.pixel_std = list(MEAN), list(STD)
    m.num_classes = NUM_CLASSES
    if arch == "retinanet":
        m.smooth_l1_beta = 0.0  # torchvision's L1 box loss
    return instantiate(m).to(device)


def _autocast(device: str, amp: str | None):
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, amp))


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in params if p.requires_grad], 0.001, 0.9)


def _step(module, forward: Callable[[], torch.Tensor], device: str, amp: str | None) -> Step:
    """forward → backward → SGD step (fp16 through a gradient scaler)."""
    opt = _sgd(module.parameters())
    scaler = torch.amp.GradScaler(torch.device(device).type) if amp == "float16" else None

    def step() -> None:
        with _autocast(device, amp):
            loss = forward()
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return step


def _sum_losses(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(v.float() for v in losses.values())


def _mean_sum(tensors) -> torch.Tensor:
    return sum(t.float().mean() for t in tensors)


def _detlab_convs_forward(model, inputs, arch: str) -> Callable[[], torch.Tensor]:
    """Backbone, neck, head towers and predictors only (no assignment, losses, RoIAlign)."""
    with torch.no_grad():
        images, _ = model.preprocess(inputs)
    if arch in ("fcos", "retinanet"):
        return lambda: _mean_sum(sum(model.head.predict(model.features(images)), []))
    roi = model.roi_heads
    n_rois = roi.batch_size_per_image * len(inputs)
    # Pooled RoI features stand in for RoIAlign; they take a gradient as in the full step.
    pooled = torch.randn(n_rois, model.neck.out_channels, 7, 7, device=images.device)
    pooled.requires_grad_(True)

    def forward() -> torch.Tensor:
        feats = model.neck(model.backbone(images))
        logits, deltas = model.proposal_generator.predict([feats[n] for n in model.rpn_in_features])
        x = roi.box_head(pooled)
        return _mean_sum([*logits, *deltas, roi.cls_score(x), roi.bbox_pred(x)])

    return forward


def detectron2_inputs(inputs, device: str):
    from detectron2.structures import Boxes
    from detectron2.structures import Instances as D2Instances

    out = []
    for x in inputs:
        inst = D2Instances(x["instances"].image_size)
        inst.gt_boxes = Boxes(x["instances"].boxes.to(device))
        inst.gt_classes = x["instances"].classes.to(device)
        out.append(
            {"image": x["image"], "instances": inst, "height": x["height"], "width": x["width"]}
        )
    return out


AMP_SUFFIXES = {" bf16": "bfloat16", " fp16": "float16"}


def _split_amp(name: str) -> tuple[str, str | None]:
    """``"detlab bf16"`` → ``("detlab", "bfloat16")``; no suffix → (name, None)."""
    for suffix, dtype in AMP_SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], dtype
    return name, None


def _detectron2_step(model, inputs, device: str, amp: str | None) -> Step:
    from detectron2.utils.events import EventStorage

    d2_inputs = detectron2_inputs(inputs, device)

    def forward() -> torch.Tensor:
        with EventStorage(0):  # Detectron2's heads log training statistics here
            return _sum_losses(model(d2_inputs))

    return _step(model, forward, device, amp)


def build_steps(
    arch: str,
    variants: list[str],
    inputs: list[dict[str, Any]],
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Step]:
    """One step closure per variant name (unknown or unavailable ones are skipped).

    Variants: ``detlab`` (detlab defaults: channels-last convolutions, RoIAlign by the
    bilinear-matrix product on CPU), ``detlab NCHW`` (``MODEL.CHANNELS_LAST False``),
    ``detlab tv-RoIAlign`` (two-stage only: ``MODEL.ROI_BOX_HEAD.POOLER_KERNEL torchvision``),
    ``torchvision``, ``detectron2`` (where importable), ``detlab convs`` and ``torchvision
    backbone+FPN`` (the networks' convolutions alone, for the overhead ratios); a `` bf16`` or
    `` fp16`` suffix runs the same under autocast.
    """
    size = (int(inputs[0]["image"].shape[-2]), int(inputs[0]["image"].shape[-1]))
    steps: dict[str, Step] = {}
    shared: dict[str, torch.nn.Module] = {}

    def detlab(channels_last: bool = True, **overrides) -> torch.nn.Module:
        key = f"detlab {channels_last} {sorted(overrides.items())}"
        if key in shared:  # the autocast variant trains the same model
            return shared[key]
        cfg = detlab_cfg(arch, device, channels_last)
        for key, value in overrides.items():
            node = cfg
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        torch.manual_seed(seed)
        shared[key] = build_model(cfg).train()
        return shared[key]

    def peer(name: str) -> torch.nn.Module:
        """torchvision's or Detectron2's model, one per run (the autocast variant shares it)."""
        if name not in shared:
            torch.manual_seed(seed)
            m = torchvision_model(arch, size) if name == "tv" else detectron2_model(arch, device)
            shared[name] = m.to(device).train()
        return shared[name]

    tv_images = [(x["image"] / 255).to(device) for x in inputs]
    offset = 1 if arch == "rcnn" else 0  # torchvision's Faster R-CNN: label 0 = background
    tv_targets = [
        {
            "boxes": x["instances"].boxes.to(device),
            "labels": (x["instances"].classes + offset).to(device),
        }
        for x in inputs
    ]
    for name in variants:
        base, amp = _split_amp(name)
        if base == "detlab":
            m = detlab()
        elif base == "detlab NCHW":
            m = detlab(channels_last=False)
        elif base == "detlab tv-RoIAlign" and arch == "rcnn":
            m = detlab(**{"MODEL.ROI_BOX_HEAD.POOLER_KERNEL": "torchvision"})
        elif base == "detlab convs":
            m = detlab()
            steps[name] = _step(m, _detlab_convs_forward(m, inputs, arch), device, amp)
            continue
        elif base == "torchvision":
            m = peer("tv")
            steps[name] = _step(m, lambda m=m: _sum_losses(m(tv_images, tv_targets)), device, amp)
            continue
        elif base == "torchvision backbone+FPN":
            m = peer("tv")
            with torch.no_grad():
                mean = torch.tensor([v / 255 for v in MEAN], device=device).view(-1, 1, 1)
                std = torch.tensor([v / 255 for v in STD], device=device).view(-1, 1, 1)
                batch = (torch.stack(tv_images) - mean) / std
            steps[name] = _step(
                m.backbone, lambda m=m, b=batch: _mean_sum(m.backbone(b).values()), device, amp
            )
            continue
        elif base == "detectron2" and detectron2_version() is not None:
            steps[name] = _detectron2_step(peer("d2"), inputs, device, amp)
            continue
        else:
            continue
        steps[name] = _step(m, lambda m=m: _sum_losses(m(inputs)), device, amp)
    return steps


def time_interleaved(
    steps: dict[str, Step], warmup: int, iters: int, device: str = "cpu"
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, int]]:
    """Wall and process-CPU seconds per step, the steps interleaved round by round.

    On a shared machine the CPU time (``time.process_time``) is the steadier figure: it
    excludes time the process waited for a core. Single-threaded it is the compute cost. On
    CUDA each step is synchronised and the third result is each step's peak allocated GPU
    memory in bytes (empty on CPU).
    """
    cuda = torch.device(device).type == "cuda"
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    peak: dict[str, int] = {}
    for i in range(warmup + iters):
        for name, fn in steps.items():
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            t, c = time.perf_counter(), time.process_time()
            fn()
            if cuda:
                torch.cuda.synchronize(device)
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device))
            if i >= warmup:
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    return wall, cpu, peak
