"""Detectron2 config files read as detlab configs: key names, builder names, defaults.

:func:`translate_detectron2` rewrites a nested mapping read from a YAML file (or the command
line) into detlab's keys before the checked merge:

* **Names.** ``META_ARCHITECTURE: GeneralizedRCNN`` → ``FasterRCNN`` (``RetinaNet`` is
  detlab's own name); the backbone builders ``build_resnet_fpn_backbone`` (ResNet + FPN with a
  max-pooled P6) and ``build_retinanet_resnet_fpn_backbone`` (ResNet + FPN with P6/P7 computed
  from C5) become ``MODEL.BACKBONE.NAME resnet<DEPTH>``, ``MODEL.NECK.NAME FPN`` and
  ``MODEL.FPN.TOP_BLOCK``.
* **Keys.** ``RESNETS.DEPTH`` (18/34/50/101/152) picks the ResNet; ``RESNETS.OUT_FEATURES``
  and ``FPN.IN_FEATURES`` (``res2..res5``) become ``FPN.IN_STAGES`` (1..4); ``RESNETS.NORM`` →
  ``BACKBONE.NORM``; ``PROPOSAL_GENERATOR.MIN_SIZE`` → ``RPN.MIN_SIZE``; ``SOLVER.BASE_LR_END``
  → ``SOLVER.COSINE_END_FACTOR``. Keys that only restate what detlab does
  (``RPN.HEAD_NAME: StandardRPNHead``, ``ROI_BOX_HEAD.NAME: FastRCNNConvFCHead``,
  ``FPN.FUSE_TYPE: sum``, ...) are accepted at those values; any other value is a problem.
* **Features detlab does not have** (masks, keypoints, precomputed proposals, crops,
  test-time augmentation, ...) are accepted while switched off and listed as ignored; switched
  on, each is one problem.
* **Detectron2 defaults underneath.** A file marked ``VERSION: 2`` (every Detectron2 config)
  means what it means on top of Detectron2's defaults, so where those differ from detlab's
  (``PIXEL_STD`` 1, ``FREEZE_AT`` 2, stride in the 1×1 conv, RPN top-k, ...) and the file does
  not set the key, Detectron2's value is used, unless the config already holds a non-default
  value there.

Problems are collected, not raised: the caller reports all of them at once.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from detlab.config.values import MISSING, lookup, parse_literal

__all__ = ["DETECTRON2_DEFAULTS", "Translation", "is_detectron2_config", "translate_detectron2"]

D2_VERSION = 2

# Detectron2 defaults that differ from detlab's, for keys a Detectron2 file may leave unset.
DETECTRON2_DEFAULTS: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.PIXEL_STD": (1.0, 1.0, 1.0),
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.ANCHOR_GENERATOR.SIZES": ((32, 64, 128, 256, 512),),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 12000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 2000,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 0,
    "SOLVER.BASE_LR": 0.001,
    "SOLVER.MAX_ITER": 40000,
    "SOLVER.STEPS": (30000,),
}

_META_ARCHS = {"GeneralizedRCNN": "FasterRCNN", "RetinaNet": "RetinaNet"}
_UNSUPPORTED_META = {
    "ProposalNetwork": "an RPN-only network",
    "PanopticFPN": "panoptic segmentation",
    "SemanticSegmentor": "semantic segmentation",
}
# Detectron2 backbone builder -> (neck, FPN top block)
_BUILDERS = {
    "build_resnet_fpn_backbone": ("FPN", "P6pool"),
    "build_retinanet_resnet_fpn_backbone": ("FPN", "P6P7C5"),
}
_DEPTHS = (18, 34, 50, 101, 152)
_RESNET_NAME = re.compile(r"^resnet(\d+)$")

# Keys that restate detlab's behaviour at these values (anything else is a problem).
_ACCEPTED: dict[str, tuple[Any, ...]] = {
    "MODEL.RPN.HEAD_NAME": ("StandardRPNHead",),
    "MODEL.ROI_BOX_HEAD.NAME": ("FastRCNNConvFCHead",),
    "MODEL.ANCHOR_GENERATOR.NAME": ("DefaultAnchorGenerator",),
    "MODEL.RPN.IOU_LABELS": ((0, -1, 1),),
    "MODEL.ROI_HEADS.IOU_LABELS": ((0, 1), (0, -1, 1)),
    "MODEL.RPN.BOUNDARY_THRESH": (-1,),
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": ("smooth_l1",),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": ("smooth_l1",),
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": (1.0,),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": (1.0,),
    "MODEL.RPN.CONV_DIMS": ((-1,),),
    "MODEL.FPN.FUSE_TYPE": ("sum",),
    "MODEL.RESNETS.NUM_GROUPS": (1,),
    "MODEL.RESNETS.WIDTH_PER_GROUP": (64,),
    "MODEL.RESNETS.RES5_DILATION": (1,),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": (64,),
    "DATALOADER.REPEAT_SQRT": (True,),
    "SOLVER.REFERENCE_WORLD_SIZE": (0,),
    "SOLVER.BIAS_LR_FACTOR": (1.0,),
}
_ACCEPTED_WHY = {
    "MODEL.RESNETS.NUM_GROUPS": "ResNeXt backbones are not available",
    "MODEL.RESNETS.WIDTH_PER_GROUP": "ResNeXt backbones are not available",
    "MODEL.RESNETS.RES5_DILATION": "dilated (DC5) backbones are not available",
    "SOLVER.REFERENCE_WORLD_SIZE": "automatic rescaling of the schedule is not available",
}

# (switch, its "off" value, keys or key prefixes of the feature, what the feature is)
_SWITCHED: tuple[tuple[str, Any, tuple[str, ...], str], ...] = (
    ("MODEL.MASK_ON", False, ("MODEL.ROI_MASK_HEAD.", "INPUT.MASK_FORMAT"), "instance masks"),
    (
        "MODEL.KEYPOINT_ON",
        False,
        ("MODEL.ROI_KEYPOINT_HEAD.", "TEST.KEYPOINT_OKS_SIGMAS"),
        "keypoints",
    ),
    (
        "MODEL.LOAD_PROPOSALS",
        False,
        ("DATASETS.PROPOSAL_FILES_", "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_"),
        "precomputed proposals",
    ),
    ("INPUT.CROP.ENABLED", False, ("INPUT.CROP.",), "random crops (use INPUT.AUGMENTATIONS)"),
    ("TEST.AUG.ENABLED", False, ("TEST.AUG.",), "test-time augmentation"),
    ("TEST.PRECISE_BN.ENABLED", False, ("TEST.PRECISE_BN.",), "precise BatchNorm statistics"),
    ("MODEL.ROI_BOX_HEAD.USE_FED_LOSS", False, ("MODEL.ROI_BOX_HEAD.FED_LOSS_",), "federated loss"),
    ("MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE", False, (), "sigmoid cross-entropy in the box head"),
    ("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", False, (), "training on predicted boxes"),
    (
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
        (False, False, False, False),
        ("MODEL.RESNETS.DEFORM_",),
        "deformable convolutions",
    ),
)
# Keys of features that their own name switches on (a meta-architecture or head detlab does
# not have, which is reported where that name is used) or that change nothing in training.
_ALWAYS_IGNORED = (
    "MODEL.SEM_SEG_HEAD.",
    "MODEL.PANOPTIC_FPN.",
    "MODEL.ROI_BOX_CASCADE_HEAD.",
    "MODEL.ANCHOR_GENERATOR.ANGLES",
    "SOLVER.NUM_DECAYS",
    "SOLVER.RESCALE_INTERVAL",
    "TEST.EXPECTED_RESULTS",
    "VIS_PERIOD",
    "FLOAT32_PRECISION",
    "GLOBAL.",
)


@dataclass
class Translation:
    """Result of :func:`translate_detectron2`.

    Attributes:
        data: the nested mapping in detlab's keys (unknown keys left for the checked merge).
        mapped: one line per Detectron2 name or key read as a detlab one.
        defaults: Detectron2 defaults applied under a ``VERSION: 2`` file, ``KEY=value``.
        ignored: Detectron2 keys of features detlab does not have, all switched off.
        problems: sentences describing what cannot be read (reported together by the caller).
    """

    data: dict
    mapped: list[str] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out


def _lookup(node: Any, dotted: str) -> Any:
    """The value at a dotted key of a nested mapping, or None."""
    value = lookup(node, dotted)
    return None if value is MISSING else value


def _literal(value: Any) -> Any:
    """Text written in Python literal syntax (``(640, 800)``) as its value; lists as tuples."""
    if isinstance(value, str):
        value = parse_literal(value)
    if isinstance(value, list):
        return tuple(_literal(v) for v in value)
    return value


def is_detectron2_config(data: Mapping) -> bool:
    """True for a mapping read from a Detectron2 config file: it says ``VERSION: 2``.

    Only such a file gets Detectron2's defaults underneath; Detectron2 names and keys are
    translated in any file (a detlab file using ``RESNETS.DEPTH`` keeps detlab's defaults).
    """
    version = data.get("VERSION") if isinstance(data, Mapping) else None
    return version is not None and _literal(version) == D2_VERSION


class _Translator:
    def __init__(self, data: Mapping, current: Mapping, detlab_defaults: Mapping | None) -> None:
        self.flat = _flatten(copy.deepcopy(dict(data)))
        self.current = current
        self.out = Translation(data={})
        self.detlab_defaults = detlab_defaults

    # ------------------------------------------------------------------ helpers
    def value(self, key: str) -> Any:
        """The value the merged config will hold: this mapping's, else the current config's."""
        return (
            _literal(self.flat[key]) if key in self.flat else _literal(_lookup(self.current, key))
        )

    def pop(self, key: str) -> Any:
        return _literal(self.flat.pop(key))

    def set(self, key: str, value: Any, why: str) -> None:
        """Set a detlab key from a Detectron2 one, unless this mapping sets it differently."""
        if key in self.flat and _literal(self.flat[key]) != _literal(value):
            self.problem(
                f"{why} sets {key} to {value!r}, but the file also sets it to {self.flat[key]!r}; "
                "keep one of them"
            )
            return
        self.flat[key] = value

    def problem(self, text: str) -> None:
        self.out.problems.append(text)

    def note(self, text: str) -> None:
        self.out.mapped.append(text)

    # ------------------------------------------------------------------ steps
    def run(self) -> Translation:
        d2_file = is_detectron2_config(_unflatten(self.flat))
        if d2_file:
            self.flat.pop("VERSION")
        if d2_file and self.detlab_defaults is not None:
            self.apply_defaults()
        self.meta_architecture()
        self.backbone()
        self.fpn_inputs()
        self.renames()
        self.accepted()
        self.switched()
        self.feature_names()
        self.out.data = _unflatten(self.flat)
        return self.out

    def apply_defaults(self) -> None:
        detlab_defaults = self.detlab_defaults
        for key, value in DETECTRON2_DEFAULTS.items():
            if key in self.flat:
                continue
            here = _lookup(self.current, key)
            if here is not None and _literal(here) != _literal(_lookup(detlab_defaults, key)):
                continue  # the config already holds a deliberate value
            self.flat[key] = value
            self.out.defaults.append(f"{key}={value!r}")

    def meta_architecture(self) -> None:
        key = "MODEL.META_ARCHITECTURE"
        name = self.flat.get(key)
        if name in _META_ARCHS and _META_ARCHS[name] != name:
            self.flat[key] = _META_ARCHS[name]
            self.note(f"{key} {name} -> {_META_ARCHS[name]}")
        elif name in _UNSUPPORTED_META:
            self.problem(
                f"{key} {name} ({_UNSUPPORTED_META[name]}) is not available in detlab; its "
                "detectors are FasterRCNN (GeneralizedRCNN), RetinaNet and FCOS"
            )
            self.flat.pop(key)

    def backbone(self) -> None:
        name_key, depth_key = "MODEL.BACKBONE.NAME", "MODEL.RESNETS.DEPTH"
        builder = self.flat.get(name_key)
        depth = self.pop(depth_key) if depth_key in self.flat else None
        if isinstance(builder, str) and builder.startswith("build_"):
            self.flat.pop(name_key)
            if builder not in _BUILDERS:
                self.problem(
                    f"{name_key} {builder} is not available in detlab"
                    + (
                        " (C4/DC5 ResNets without an FPN); use an FPN config such as "
                        "Base-RCNN-FPN.yaml"
                        if builder == "build_resnet_backbone"
                        else f"; Detectron2 builders it reads: {', '.join(_BUILDERS)}"
                    )
                )
                return
            neck, top = _BUILDERS[builder]
            current = _RESNET_NAME.match(str(_lookup(self.current, name_key) or ""))
            depth = depth if depth is not None else int(current.group(1)) if current else 50
            if self._depth_ok(depth):
                self.set(name_key, f"resnet{depth}", builder)
            self.set("MODEL.NECK.NAME", neck, builder)
            self.set("MODEL.FPN.TOP_BLOCK", top, builder)
            self.note(f"{name_key} {builder} -> resnet{depth} + {neck} (top block {top})")
        elif depth is not None:
            name = self.value(name_key)
            if not _RESNET_NAME.match(str(name)):
                self.problem(
                    f"{depth_key} {depth} sets the depth of a ResNet, but {name_key} is {name!r}; "
                    f"use {name_key} resnet{depth} or drop {depth_key}"
                )
            elif self._depth_ok(depth):
                self.flat[name_key] = f"resnet{depth}"
                self.note(f"{depth_key} {depth} -> {name_key} resnet{depth}")
        if "MODEL.RESNETS.RES2_OUT_CHANNELS" in self.flat:
            match = _RESNET_NAME.match(str(self.value(name_key)))
            want = 64 if match and int(match.group(1)) in (18, 34) else 256
            got = self.pop("MODEL.RESNETS.RES2_OUT_CHANNELS")
            if got != want:
                self.problem(
                    f"MODEL.RESNETS.RES2_OUT_CHANNELS is {got!r}; the ResNet has {want} (stage "
                    "widths are scaled with MODEL.RESNETS.WIDTH_MULT)"
                )

    def _depth_ok(self, depth: Any) -> bool:
        if depth in _DEPTHS:
            return True
        self.problem(
            f"MODEL.RESNETS.DEPTH is {depth!r}; detlab's ResNets have depths "
            f"{', '.join(map(str, _DEPTHS))}"
        )
        return False

    def fpn_inputs(self) -> None:
        out_key, in_key = "MODEL.RESNETS.OUT_FEATURES", "MODEL.FPN.IN_FEATURES"
        out_f = self.pop(out_key) if out_key in self.flat else None
        in_f = self.pop(in_key) if in_key in self.flat else None
        names = in_f or out_f
        if not names:
            return
        names = (names,) if isinstance(names, str) else tuple(names)
        bad = [n for n in names if not re.fullmatch(r"res[2-5]", str(n))]
        if bad:
            self.problem(
                f"{in_key if in_f else out_key} names {list(bad)}; the FPN reads ResNet stages "
                "res2..res5"
            )
            return
        if in_f and out_f and not set(in_f) <= set(out_f):
            self.problem(
                f"{in_key} {list(in_f)} reads stages that {out_key} {list(out_f)} does not "
                "output; list the same stages in both"
            )
            return
        stages = tuple(sorted(int(n[3]) - 1 for n in names))
        self.set("MODEL.FPN.IN_STAGES", stages, in_key if in_f else out_key)
        self.note(f"{in_key if in_f else out_key} {list(names)} -> MODEL.FPN.IN_STAGES {stages}")

    def renames(self) -> None:
        for old, new in (
            ("MODEL.RESNETS.NORM", "MODEL.BACKBONE.NORM"),
            ("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", "MODEL.RPN.MIN_SIZE"),
        ):
            if old in self.flat:
                value = self.pop(old)
                self.set(new, value, old)
                self.note(f"{old} -> {new}")
        if "SOLVER.BASE_LR_END" in self.flat:
            end = self.pop("SOLVER.BASE_LR_END")
            base = self.value("SOLVER.BASE_LR")
            if end and base:
                self.set("SOLVER.COSINE_END_FACTOR", float(end) / float(base), "SOLVER.BASE_LR_END")
                self.note("SOLVER.BASE_LR_END -> SOLVER.COSINE_END_FACTOR (= END / BASE_LR)")

    def accepted(self) -> None:
        for key, allowed in _ACCEPTED.items():
            if key not in self.flat:
                continue
            value = self.pop(key)
            if value in allowed:
                continue
            why = _ACCEPTED_WHY.get(key, "detlab implements only that")
            shown = " or ".join(repr(a) for a in allowed)
            self.problem(f"{key} is {value!r}; detlab reads only {shown} ({why})")

    def switched(self) -> None:
        ignored: list[str] = []
        for switch, off, prefixes, feature in _SWITCHED:
            on = switch in self.flat and self.value(switch) != off
            keys = [k for k in list(self.flat) if k == switch or k.startswith(prefixes or ("\0",))]
            for k in keys:
                self.flat.pop(k)
            if on:
                self.problem(f"{switch} is on, but detlab has no {feature}; switch it off")
            else:
                ignored += keys
        for k in list(self.flat):
            if k.startswith(_ALWAYS_IGNORED):
                self.flat.pop(k)
                ignored.append(k)
        self.out.ignored = ignored

    def feature_names(self) -> None:
        for key in ("MODEL.RPN.IN_FEATURES", "MODEL.ROI_HEADS.IN_FEATURES"):
            names = self.value(key) if key in self.flat else None
            if not names:
                continue
            names = (names,) if isinstance(names, str) else names
            c4 = [n for n in names if str(n).startswith("res")]
            if c4:
                self.problem(
                    f"{key} names {list(c4)}, backbone stages read directly (a C4 model); detlab "
                    "reads FPN levels p2..p7 there"
                )


def translate_detectron2(
    data: Mapping, current: Mapping | None = None, *, detlab_defaults: Mapping | None = None
) -> Translation:
    """Rewrite Detectron2 names and keys in ``data`` into detlab's (see the module docstring).

    Args:
        data: nested mapping from a YAML file (after ``_BASE_``) or from overrides.
        current: the config it will be merged into (to resolve keys ``data`` does not set).
        detlab_defaults: ``get_cfg()``, to apply Detectron2's defaults underneath a
            ``VERSION: 2`` file where ``current`` still holds detlab's; None applies none (the
            command line changes single keys).
    """
    return _Translator(data, current or {}, detlab_defaults).run()
