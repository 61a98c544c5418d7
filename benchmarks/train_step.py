"""Train-step time of detlab detectors against torchvision's, on CPU, in one run.

Default: batch 2, 512×512 RGB, random init, 80 classes. For each architecture it times, with
the models interleaved step by step so machine load hits them alike:

* ``detlab`` — detlab FCOS-R50-FPN / Faster R-CNN-R50-FPN / RetinaNet-R50-FPN full train
  step (forward with losses, backward, SGD step), contiguous (NCHW) convolutions;
* ``torchvision`` — ``fcos_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` /
  ``retinanet_resnet50_fpn`` configured alike (BatchNorm trained, all layers trainable, same
  head depth, anchors, proposal counts, sampled anchors/RoIs per image, RoIAlign sampling,
  P6/P7 from C5 and the L1 box loss for RetinaNet, normalisation), on the same inputs;
* ``detlab convs`` — the same detlab network's convolutions (and FC layers) alone: backbone,
  neck, head towers and predictors, forward + backward + SGD step on a precomputed normalised
  batch, without target assignment, sampling, RoIAlign, losses or post-processing;
* ``torchvision backbone+FPN`` — torchvision's backbone and FPN alone (reference ratio);
* ``detlab channels_last`` — the detlab model with ``MODEL.CHANNELS_LAST True`` (the
  default).

``--light`` instead times light FCOS configurations for CPU training from scratch
(batch 8, 256×256, one channel).

Usage::

    python benchmarks/train_step.py [--arch fcos rcnn retinanet] [--iters 5] [--threads 2]
                                    [--json out.json]
    python benchmarks/train_step.py --light [--iters 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from detlab.config import get_cfg
from detlab.modeling import build_model
from detlab.structures import Instances

NUM_CLASSES = 80
MEAN = (103.53, 116.28, 123.675)
STD = (57.375, 57.12, 58.395)


def make_inputs(batch: int, size: int, channels: int, boxes_per_image: int, seed: int = 0):
    """Random images on a 0..255 scale with random boxes of 16..256 px (clipped to the image)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(batch):
        img = torch.rand(channels, size, size, generator=g) * 255
        xy = torch.rand(boxes_per_image, 2, generator=g) * (size - 16)
        wh = 16 + torch.rand(boxes_per_image, 2, generator=g) * min(240, size // 2)
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        classes = torch.randint(0, NUM_CLASSES, (boxes_per_image,), generator=g)
        out.append(
            {
                "image": img,
                "instances": Instances((size, size), boxes=boxes, classes=classes),
                "height": size,
                "width": size,
                "image_id": i,
            }
        )
    return out


def detlab_cfg(arch: str):
    cfg = get_cfg()
    cfg.MODEL.CHANNELS_LAST = False  # the "detlab channels_last" variant switches it on
    cfg.MODEL.BACKBONE.NAME = "resnet50"
    cfg.MODEL.BACKBONE.NORM = "BN"  # torchvision without pretrained weights trains BN
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = MEAN, STD
    if arch == "fcos":
        cfg.MODEL.META_ARCHITECTURE = "FCOS"
        cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
        cfg.MODEL.FPN.TOP_BLOCK = "P6P7"
        cfg.MODEL.FCOS.NUM_CLASSES = NUM_CLASSES
        cfg.MODEL.FCOS.NUM_CONVS = 4
        cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6
    elif arch == "retinanet":
        cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
        cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
        cfg.MODEL.FPN.TOP_BLOCK = "P6P7C5"  # torchvision's v1 RetinaNet: P6 from C5
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


def torchvision_model(arch: str, size: int):
    kw = {
        "weights": None,
        "weights_backbone": None,
        "min_size": size,
        "max_size": size,
        "image_mean": [m / 255 for m in MEAN],
        "image_std": [s / 255 for s in STD],
    }
    if arch == "fcos":
        return torchvision.models.detection.fcos_resnet50_fpn(num_classes=NUM_CLASSES, **kw)
    if arch == "retinanet":
        return torchvision.models.detection.retinanet_resnet50_fpn(num_classes=NUM_CLASSES, **kw)
    return torchvision.models.detection.fasterrcnn_resnet50_fpn(num_classes=NUM_CLASSES + 1, **kw)


def sgd(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], 0.001, 0.9)


def step_detlab(model, inputs) -> Callable[[], None]:
    opt = sgd(model)

    def step():
        losses = model(inputs)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def step_torchvision(model, inputs, arch) -> Callable[[], None]:
    opt = sgd(model)
    images = [x["image"] / 255 for x in inputs]
    offset = 1 if arch == "rcnn" else 0  # Faster R-CNN's label 0 is the background
    targets = [
        {"boxes": x["instances"].boxes, "labels": x["instances"].classes + offset} for x in inputs
    ]

    def step():
        losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step


def _mean_sum(tensors) -> torch.Tensor:
    return sum(t.float().mean() for t in tensors)


def step_detlab_convs(model, inputs, arch) -> Callable[[], None]:
    """Backbone, neck, head towers and predictors only (no assignment, losses, RoIAlign)."""
    opt = sgd(model)
    with torch.no_grad():
        images, _ = model.preprocess(inputs)
    if arch == "fcos":

        def forward():
            logits, deltas, ctr = model.head.predict(model.features(images))
            return _mean_sum(logits + deltas + ctr)

    elif arch == "retinanet":

        def forward():
            logits, deltas = model.head.predict(model.features(images))
            return _mean_sum(logits + deltas)

    else:
        roi = model.roi_heads
        n_rois = roi.batch_size_per_image * len(inputs)
        c = model.neck.out_channels
        # Pooled RoI features stand in for RoIAlign; they take a gradient as in the full step.
        pooled = torch.randn(n_rois, c, 7, 7, requires_grad=True)

        def forward():
            feats = model.neck(model.backbone(images))
            logits, deltas = model.proposal_generator.predict(
                [feats[n] for n in model.rpn_in_features]
            )
            x = roi.box_head(pooled)
            return _mean_sum([*logits, *deltas, roi.cls_score(x), roi.bbox_pred(x)])

    def step():
        loss = forward()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_tv_backbone(model, inputs) -> Callable[[], None]:
    opt = sgd(model.backbone)
    with torch.no_grad():
        images = torch.stack([(x["image"] / 255) for x in inputs])
        mean = torch.tensor([m / 255 for m in MEAN]).view(-1, 1, 1)
        std = torch.tensor([s / 255 for s in STD]).view(-1, 1, 1)
        images = (images - mean) / std

    def step():
        loss = _mean_sum(model.backbone(images).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_interleaved(steps: dict[str, Callable[[], None]], warmup: int, iters: int):
    """Wall and process-CPU seconds per step, the steps interleaved round by round.

    On a shared machine the CPU time (``time.process_time``) is the steadier figure: it
    excludes time the process waited for a core. Single-threaded it is the compute cost.
    """
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(warmup + iters):
        for name, fn in steps.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            if i >= warmup:
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    return wall, cpu


def light_configs():
    """Light FCOS configurations for CPU training from scratch on 1-channel 256² chips."""
    base = {
        "MODEL.META_ARCHITECTURE": "FCOS",
        "MODEL.BACKBONE.IN_CHANNELS": 1,
        "MODEL.BACKBONE.NORM": "BN",
        "MODEL.PIXEL_MEAN": (128.0,),
        "MODEL.PIXEL_STD": (64.0,),
        "MODEL.FCOS.NUM_CLASSES": 1,
        "MODEL.FPN.IN_STAGES": (2, 3, 4),
        "MODEL.FPN.TOP_BLOCK": "none",
    }
    variants = {
        "tiny_resnet x0.25, FPN 32, 1 conv": {
            "MODEL.BACKBONE.NAME": "tiny_resnet",
            "MODEL.RESNETS.WIDTH_MULT": 0.25,
            "MODEL.FPN.OUT_CHANNELS": 32,
            "MODEL.FCOS.NUM_CONVS": 1,
        },
        "same, channels_last": {
            "MODEL.BACKBONE.NAME": "tiny_resnet",
            "MODEL.RESNETS.WIDTH_MULT": 0.25,
            "MODEL.FPN.OUT_CHANNELS": 32,
            "MODEL.FCOS.NUM_CONVS": 1,
            "MODEL.CHANNELS_LAST": True,
        },
        "tiny_resnet x0.25, FPN 64, 2 convs": {
            "MODEL.BACKBONE.NAME": "tiny_resnet",
            "MODEL.RESNETS.WIDTH_MULT": 0.25,
            "MODEL.FPN.OUT_CHANNELS": 64,
            "MODEL.FCOS.NUM_CONVS": 2,
        },
        "tiny_resnet x0.5, FPN 64, 2 convs": {
            "MODEL.BACKBONE.NAME": "tiny_resnet",
            "MODEL.RESNETS.WIDTH_MULT": 0.5,
            "MODEL.FPN.OUT_CHANNELS": 64,
            "MODEL.FCOS.NUM_CONVS": 2,
        },
        "resnet18, FPN 64, 2 convs": {
            "MODEL.BACKBONE.NAME": "resnet18",
            "MODEL.FPN.OUT_CHANNELS": 64,
            "MODEL.FCOS.NUM_CONVS": 2,
        },
    }
    out = {}
    for name, v in variants.items():
        cfg = get_cfg()
        nested: dict = {}
        for key, val in {**base, **v}.items():
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = val
        cfg.merge_from_dict(nested)
        out[name] = cfg
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    archs = ["fcos", "rcnn", "retinanet"]
    parser.add_argument("--arch", nargs="+", default=archs, choices=archs)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--light", action="store_true", help="time light 1-channel FCOS configs")
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"threads={args.threads}, load average before={load}"
    )
    results: dict[str, dict] = {}
    if args.light:
        batch, size = 8, 256
        inputs = make_inputs(batch, size, 1, boxes_per_image=6)
        for x in inputs:
            x["instances"].classes.zero_()
        steps = {}
        for name, cfg in light_configs().items():
            torch.manual_seed(0)
            steps[name] = step_detlab(build_model(cfg).train(), inputs)
        wall, cpu = time_interleaved(steps, args.warmup, args.iters)
        print(f"\nLight FCOS, batch {batch}, {size}x{size}, 1 channel: s/iter")
        print(f"  {'config':<40} {'wall med':>9} {'wall min':>9} {'cpu med':>9}")
        for name in steps:
            r = {
                "wall_median_s": statistics.median(wall[name]),
                "wall_min_s": min(wall[name]),
                "cpu_median_s": statistics.median(cpu[name]),
            }
            results[name] = r
            print(
                f"  {name:<40} {r['wall_median_s']:>9.3f} {r['wall_min_s']:>9.3f} "
                f"{r['cpu_median_s']:>9.3f}"
            )
    else:
        for arch in args.arch:
            inputs = make_inputs(args.batch, args.size, 3, boxes_per_image=8)
            torch.manual_seed(0)
            ours = build_model(detlab_cfg(arch)).train()
            torch.manual_seed(0)
            theirs = torchvision_model(arch, args.size).train()
            cfg_cl = detlab_cfg(arch)
            cfg_cl.MODEL.CHANNELS_LAST = True
            torch.manual_seed(0)
            ours_cl = build_model(cfg_cl).train()
            steps = {
                "detlab": step_detlab(ours, inputs),
                "detlab channels_last": step_detlab(ours_cl, inputs),
                "torchvision": step_torchvision(theirs, inputs, arch),
                "detlab convs": step_detlab_convs(ours, inputs, arch),
                "torchvision backbone+FPN": step_tv_backbone(theirs, inputs),
            }
            wall, cpu = time_interleaved(steps, args.warmup, args.iters)
            r = {"wall_median_s": {}, "wall_min_s": {}, "cpu_median_s": {}}
            for k in steps:
                r["wall_median_s"][k] = statistics.median(wall[k])
                r["wall_min_s"][k] = min(wall[k])
                r["cpu_median_s"][k] = statistics.median(cpu[k])
            for stat in ("wall_median_s", "wall_min_s", "cpu_median_s"):
                m = r[stat]
                r[f"ratios ({stat})"] = {
                    "detlab / torchvision": m["detlab"] / m["torchvision"],
                    "detlab channels_last / torchvision": m["detlab channels_last"]
                    / m["torchvision"],
                    "detlab full / convs": m["detlab"] / m["detlab convs"],
                    "torchvision full / backbone+FPN": m["torchvision"]
                    / m["torchvision backbone+FPN"],
                }
            results[arch] = r
            print(f"\n{arch}: batch {args.batch}, {args.size}x{args.size}, {args.iters} iters")
            print(f"  {'step':<28} {'wall med':>9} {'wall min':>9} {'cpu med':>9}")
            for k in steps:
                print(
                    f"  {k:<28} {r['wall_median_s'][k]:>9.3f} {r['wall_min_s'][k]:>9.3f} "
                    f"{r['cpu_median_s'][k]:>9.3f}"
                )
            for stat in ("wall_median_s", "wall_min_s", "cpu_median_s"):
                ratios = ", ".join(f"{k} {v:.2f}" for k, v in r[f"ratios ({stat})"].items())
                print(f"  ratios by {stat}: {ratios}")
    print(f"load average after={os.getloadavg() if hasattr(os, 'getloadavg') else None}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
