"""detlab's weights under other libraries' names: Detectron2, Caffe2/Detectron1, torchvision.

For a built detlab model, :func:`foreign_names` gives every state-dict key its name(s) in each
naming scheme, derived from the model's own structure (which FPN stage a lateral conv reads,
which layer of the box head is ``fc1``, ...):

detlab → Detectron2 → Caffe2/Detectron1, for example::

    backbone.conv1.weight             backbone.bottom_up.stem.conv1.weight   conv1_w
    backbone.bn1.weight               ...bottom_up.stem.conv1.norm.weight    res_conv1_bn_s
    backbone.layer1.0.conv2.weight    ...bottom_up.res2.0.conv2.weight       res2_0_branch2b_w
    backbone.layer2.0.bn1.bias        ...bottom_up.res3.0.conv1.norm.bias    res3_0_branch2a_bn_b
    backbone.layer2.0.downsample.0.*  ...bottom_up.res3.0.shortcut.*         res3_0_branch1_*
    neck.lateral.<i>.*                backbone.fpn_lateral<s>.*              fpn_inner_res<s>_*
    neck.output.<i>.*                 backbone.fpn_output<s>.*               fpn_res<s>_<b>_sum_*
    neck.top.<j>.*                    backbone.top_block.p<6+j>.*            fpn_<6+j>_*
    proposal_generator.conv.*         proposal_generator.rpn_head.conv.*     conv_rpn_fpn2_*
    roi_heads.box_head.layers.<n>.*   roi_heads.box_head.fc<m>.*             fc<5+m>_*
    roi_heads.cls_score.* (*)         roi_heads.box_predictor.cls_score.*    cls_score_*
    head.cls_subnet.<n>.* (RetinaNet) head.cls_subnet.<n>.*                  retnet_cls_conv_n<k>_*

(*) Caffe2 and torchvision put the background class first in ``cls_score`` and give it box
deltas in ``bbox_pred``; loading moves it last / drops its deltas, exporting does the reverse.
Bare backbone files (``stem.conv1.weight``, ``res2.0.conv1.weight``; torchvision or timm
``conv1.weight``, ``layer1.0...``) match too. Detectron2's and Caffe2's normalisations
without running statistics (affine-only, Caffe2's ``AffineChannel``) get mean 0 and var 1.

:func:`map_state_dict` picks the scheme that names most of a file's tensors and renames them
onto the model; :func:`export_state_dict` writes the model's weights under a scheme's names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "SCHEMES",
    "Alias",
    "MappedState",
    "export_state_dict",
    "foreign_names",
    "map_state_dict",
]

SCHEMES = ("detectron2", "caffe2", "torchvision")
_C2_NORM = {"weight": ("s",), "bias": ("b",), "running_mean": ("rm",), "running_var": ("riv",)}
_C2_PARAM = {"weight": "w", "bias": "b"}
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)


@dataclass(frozen=True)
class Alias:
    """A foreign name of one detlab tensor; ``load``/``save`` convert layouts if they differ."""

    name: str
    load: Callable[[torch.Tensor], torch.Tensor] | None = None
    save: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class MappedState:
    """Result of :func:`map_state_dict`.

    Attributes:
        state: tensors renamed onto the model's keys; tensors no scheme names keep their own
            name (so they show as unexpected).
        scheme: ``"detlab"`` (already the model's names) or one of :data:`SCHEMES`.
        adapted: notes on tensors that were converted or filled in.
    """

    state: dict[str, torch.Tensor]
    scheme: str
    adapted: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- layout conversions
def _bg_last(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[1:], x[:1]])


def _bg_first(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[-1:], x[:-1]])


def _drop_bg_deltas(x: torch.Tensor) -> torch.Tensor:
    return x[4:]


def _add_bg_deltas(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(x[:4]), x])


def _c2_norm(base: str, param: str) -> list[str]:
    kinds = ("bn", "gn") if param in ("weight", "bias") else ("bn",)
    return [f"{base}_{kind}_{s}" for kind in kinds for s in _C2_NORM.get(param, ())]


def _c2_param(base: str, param: str) -> list[str]:
    return [f"{base}_{_C2_PARAM[param]}"] if param in _C2_PARAM else []


# ---------------------------------------------------------------------- components
Names = dict[str, list[Alias]]  # scheme -> aliases of one key


def _names(d2: list[str] = (), c2: list[str] = (), tv: list[str] = (), **conv) -> Names:
    load, save = conv.get("load"), conv.get("save")
    tv_load, tv_save = conv.get("tv_load", load), conv.get("tv_save", save)
    return {
        "detectron2": [Alias(n) for n in d2],
        "caffe2": [Alias(n, load, save) for n in c2],
        "torchvision": [Alias(n, tv_load, tv_save) for n in tv],
    }


def _resnet(key: str) -> Names | None:
    """Names of one key of detlab's ResNet (torchvision layout), without the module prefix."""
    if key == "conv1.weight":
        return _names(["stem.conv1.weight"], ["conv1_w"], [key])
    if m := re.fullmatch(r"bn1\.(\w+)", key):
        return _names([f"stem.conv1.norm.{m[1]}"], _c2_norm("res_conv1", m[1]), [key])
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.conv(\d)\.weight", key):
        s, b, c = int(m[1]) + 1, m[2], int(m[3])
        return _names(
            [f"res{s}.{b}.conv{c}.weight"], [f"res{s}_{b}_branch2{'abc'[c - 1]}_w"], [key]
        )
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)", key):
        s, b, c, p = int(m[1]) + 1, m[2], int(m[3]), m[4]
        base = f"res{s}_{b}_branch2{'abc'[c - 1]}"
        return _names([f"res{s}.{b}.conv{c}.norm.{p}"], _c2_norm(base, p), [key])
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.0\.weight", key):
        s, b = int(m[1]) + 1, m[2]
        return _names([f"res{s}.{b}.shortcut.weight"], [f"res{s}_{b}_branch1_w"], [key])
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)", key):
        s, b, p = int(m[1]) + 1, m[2], m[3]
        return _names([f"res{s}.{b}.shortcut.norm.{p}"], _c2_norm(f"res{s}_{b}_branch1", p), [key])
    return None


def _backbone_names(model: nn.Module, key: str) -> Names | None:
    sub = key.removeprefix("backbone.")
    backbone = model.backbone
    if type(backbone).__name__ == "TimmBackbone" and sub.startswith("body."):
        return _names(tv=[sub.removeprefix("body.")])
    names = _resnet(sub) if hasattr(backbone, "layer1") else None
    if names is None:
        return None
    names["detectron2"] = [Alias(f"backbone.bottom_up.{a.name}") for a in names["detectron2"]] + [
        *names["detectron2"]
    ]
    names["torchvision"] = [Alias(f"backbone.body.{sub}"), Alias(sub)]
    return names


def _stage_blocks(model: nn.Module, stage: int) -> int:
    layer = getattr(model.backbone, f"layer{stage}", None)
    return len(layer) if layer is not None else 1


def _neck_names(model: nn.Module, key: str) -> Names | None:
    neck, sub = model.neck, key.removeprefix("neck.")
    stages = list(getattr(neck, "in_stages", ()))
    if m := re.fullmatch(r"(lateral|output)\.(\d+)\.(?:([01])\.)?(\w+)", sub):
        kind, i, part, p = m[1], int(m[2]), m[3], m[4]
        if i >= len(stages):
            return None
        s = stages[i] + 1
        is_norm = part == "1"
        d2 = f"backbone.fpn_{kind}{s}" + (".norm" if is_norm else "") + f".{p}"
        tv_block = "inner_blocks" if kind == "lateral" else "layer_blocks"
        tv = [f"backbone.fpn.{tv_block}.{i}.{part or '0'}.{p}"]
        if part is None:
            tv.append(f"backbone.fpn.{tv_block}.{i}.{p}")  # torchvision before 0.13
        c2: list[str] = []
        if not is_norm:
            last = _stage_blocks(model, stages[i]) - 1
            if kind == "lateral":
                tail = "" if i == len(stages) - 1 else "_lateral"
                c2 = _c2_param(f"fpn_inner_res{s}_{last}_sum{tail}", p)
            else:
                c2 = _c2_param(f"fpn_res{s}_{last}_sum", p)
        return _names([d2], c2, tv)
    if m := re.fullmatch(r"top\.(\d)\.(\w+)", sub):
        level, p = 6 + int(m[1]), m[2]
        return _names(
            [f"backbone.top_block.p{level}.{p}"],
            _c2_param(f"fpn_{level}", p),
            [f"backbone.fpn.extra_blocks.p{level}.{p}"],
        )
    return None


_RPN = {
    "conv": ("conv_rpn_fpn2", ["rpn.head.conv.0.0", "rpn.head.conv"]),
    "objectness_logits": ("rpn_cls_logits_fpn2", ["rpn.head.cls_logits"]),
    "anchor_deltas": ("rpn_bbox_pred_fpn2", ["rpn.head.bbox_pred"]),
}


def _rpn_names(model: nn.Module, key: str) -> Names | None:
    m = re.fullmatch(r"proposal_generator\.(\w+)\.(weight|bias)", key)
    if not m or m[1] not in _RPN:
        return None
    c2, tv = _RPN[m[1]]
    return _names(
        [f"proposal_generator.rpn_head.{m[1]}.{m[2]}"],
        _c2_param(c2, m[2]),
        [f"{t}.{m[2]}" for t in tv],
    )


def _numbered_layers(seq: nn.Module) -> dict[int, tuple[str, int]]:
    """Index in a Sequential -> ("conv" | "norm" | "fc", ordinal of its conv/fc, from 1)."""
    out: dict[int, tuple[str, int]] = {}
    convs = fcs = 0
    for idx, layer in enumerate(seq):
        if isinstance(layer, nn.Conv2d):
            convs += 1
            out[idx] = ("conv", convs)
        elif isinstance(layer, nn.Linear):
            fcs += 1
            out[idx] = ("fc", fcs)
        elif isinstance(layer, _NORMS) or "Norm" in type(layer).__name__:
            out[idx] = ("norm", convs)
    return out


def _roi_names(model: nn.Module, key: str) -> Names | None:
    roi, sub = model.roi_heads, key.removeprefix("roi_heads.")
    if m := re.fullmatch(r"box_head\.layers\.(\d+)\.(\w+)", sub):
        kind, n = _numbered_layers(roi.box_head.layers).get(int(m[1]), (None, 0))
        p = m[2]
        if kind == "fc":
            return _names(
                [f"roi_heads.box_head.fc{n}.{p}"],
                _c2_param(f"fc{5 + n}", p),
                [f"roi_heads.box_head.fc{5 + n}.{p}"],
            )
        if kind == "conv":
            return _names([f"roi_heads.box_head.conv{n}.{p}"], _c2_param(f"head_conv{n}", p))
        if kind == "norm":
            return _names([f"roi_heads.box_head.conv{n}.norm.{p}"], _c2_norm(f"head_conv{n}", p))
        return None
    if m := re.fullmatch(r"cls_score\.(weight|bias)", sub):
        return _names(
            [f"roi_heads.box_predictor.cls_score.{m[1]}"],
            _c2_param("cls_score", m[1]),
            [f"roi_heads.box_predictor.cls_score.{m[1]}"],
            load=_bg_last,
            save=_bg_first,
        )
    if m := re.fullmatch(r"bbox_pred\.(weight|bias)", sub):
        agnostic = getattr(roi, "cls_agnostic", False)
        return _names(
            [f"roi_heads.box_predictor.bbox_pred.{m[1]}"],
            _c2_param("bbox_pred", m[1]),
            [] if agnostic else [f"roi_heads.box_predictor.bbox_pred.{m[1]}"],
            load=_drop_bg_deltas,
            save=_add_bg_deltas,
        )
    return None


def _head_names(model: nn.Module, key: str) -> Names | None:
    head, sub = model.head, key.removeprefix("head.")
    if hasattr(head, "cls_subnet"):  # RetinaNet: Detectron2's own names
        level = min(int(s).bit_length() - 1 for s in getattr(head, "strides", [8]))
        if m := re.fullmatch(r"(cls|bbox)_subnet\.(\d+)\.(\w+)", sub):
            branch, idx, p = m[1], int(m[2]), m[3]
            kind, n = _numbered_layers(getattr(head, f"{branch}_subnet")).get(idx, (None, 0))
            tv_head = "classification_head" if branch == "cls" else "regression_head"
            if kind == "conv":
                return _names(
                    [key],
                    _c2_param(f"retnet_{branch}_conv_n{n - 1}_fpn{level}", p),
                    [f"head.{tv_head}.conv.{n - 1}.0.{p}"],
                )
            if kind == "norm":
                return _names([key], tv=[f"head.{tv_head}.conv.{n - 1}.1.{p}"])
            return None
        if m := re.fullmatch(r"(cls_score|bbox_pred)\.(weight|bias)", sub):
            c2 = "retnet_cls_pred" if m[1] == "cls_score" else "retnet_bbox_pred"
            tv = (
                "classification_head.cls_logits"
                if m[1] == "cls_score"
                else "regression_head.bbox_reg"
            )
            return _names([key], _c2_param(f"{c2}_fpn{level}", m[2]), [f"head.{tv}.{m[2]}"])
        return None
    if hasattr(head, "cls_tower"):  # FCOS: torchvision's FCOS and Detectron2's FCOS names
        towers = {"cls_tower": ("cls_subnet", "classification_head.conv"),
                  "box_tower": ("bbox_subnet", "regression_head.conv")}  # fmt: skip
        preds = {
            "cls_logits": ("cls_score", "classification_head.cls_logits"),
            "bbox_pred": ("bbox_pred", "regression_head.bbox_reg"),
            "centerness": ("ctrness", "regression_head.bbox_ctrness"),
        }
        if m := re.fullmatch(r"(cls_tower|box_tower)\.(.+)", sub):
            d2, tv = towers[m[1]]
            return _names([f"head.{d2}.{m[2]}"], tv=[f"head.{tv}.{m[2]}"])
        if m := re.fullmatch(r"(cls_logits|bbox_pred|centerness)\.(weight|bias)", sub):
            d2, tv = preds[m[1]]
            return _names([f"head.{d2}.{m[2]}"], tv=[f"head.{tv}.{m[2]}"])
    return None


_PARTS: tuple[tuple[str, str, Callable[[nn.Module, str], Names | None]], ...] = (
    ("backbone.", "backbone", _backbone_names),
    ("neck.", "neck", _neck_names),
    ("proposal_generator.", "proposal_generator", _rpn_names),
    ("roi_heads.", "roi_heads", _roi_names),
    ("head.", "head", _head_names),
)


def _model_keys(model: nn.Module) -> Iterator[str]:
    yield from model.state_dict()


def foreign_names(model: nn.Module) -> dict[str, dict[str, list[Alias]]]:
    """``{scheme: {detlab key: [Alias, ...]}}`` for every key the schemes have a name for."""
    table: dict[str, dict[str, list[Alias]]] = {s: {} for s in SCHEMES}
    for key in _model_keys(model):
        for prefix, attr, fn in _PARTS:
            if key.startswith(prefix) and hasattr(model, attr):
                names = fn(model, key)
                if names:
                    for scheme, aliases in names.items():
                        if aliases:
                            table[scheme][key] = aliases
                break
    return table


def _canonical(scheme: str, name: str) -> str:
    """Caffe2 names up to the parts Detectron2 ignores too (FPN block index, head level)."""
    if scheme != "caffe2":
        return name
    name = re.sub(r"^fpn_(inner_)?res(\d)_\d+_sum", r"fpn_\1res\2_sum", name)
    return re.sub(r"_fpn\d+_", "_fpn_", name)


def map_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> MappedState:
    """Rename ``state`` onto ``model``'s keys using the scheme that names most of its tensors.

    Tensors already named as the model's keys win ties. See the module docstring.
    """
    target = dict(model.state_dict())
    best_scheme, best_hits, best_index = "detlab", sum(k in target for k in state), None
    table = foreign_names(model)
    for scheme in SCHEMES:
        index = {
            _canonical(scheme, a.name): (key, a)
            for key, aliases in table[scheme].items()
            for a in aliases
        }
        hits = sum(_canonical(scheme, k) in index for k in state)
        if hits > best_hits:
            best_scheme, best_hits, best_index = scheme, hits, index
    if best_index is None:
        return MappedState(dict(state), "detlab")
    out: dict[str, torch.Tensor] = {}
    unmatched: dict[str, torch.Tensor] = {}
    prefixes: Counter[str] = Counter()
    for name, tensor in state.items():
        hit = best_index.get(_canonical(best_scheme, name))
        if hit is None:
            if not name.endswith("num_batches_tracked"):  # a counter, not a weight
                unmatched[name] = tensor
            continue
        key, alias = hit
        out[key] = alias.load(tensor) if alias.load else tensor
        prefixes[key[: -len(name)] if key.endswith("." + name) else ""] += 1
    # Tensors no scheme names keep their name, under the prefix the file's names were read
    # with (a classifier's fc.weight read onto the backbone shows as backbone.fc.weight).
    prefix = prefixes.most_common(1)[0][0] if prefixes else ""
    out.update({prefix + name: tensor for name, tensor in unmatched.items()})
    adapted = _fill_running_stats(out, target) if best_scheme in ("detectron2", "caffe2") else []
    return MappedState(out, best_scheme, adapted)


def _fill_running_stats(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> list:
    """Affine-only norms (Caffe2 AffineChannel, old Detectron2 FrozenBN): mean 0, var 1.

    Returns one summary line for the load report (empty when nothing was filled)."""
    filled = []
    for key in list(out):
        if not key.endswith(".weight"):
            continue
        base = key.removesuffix(".weight")
        mean, var = f"{base}.running_mean", f"{base}.running_var"
        if mean in target and var in target and mean not in out and var not in out:
            out[mean] = torch.zeros_like(target[mean])
            out[var] = torch.ones_like(target[var])
            filled.append(base)
    if not filled:
        return []
    return [
        f"running_mean/var = 0/1 in {len(filled)} norms without statistics in the file "
        f"({filled[0]}, ...)"
    ]


def export_state_dict(model: nn.Module, scheme: str) -> dict[str, torch.Tensor]:
    """The model's weights under ``scheme``'s names (first alias; layouts converted).

    Keys the scheme has no name for are left out. Detectron2's and torchvision's detector
    names are used for detector parts (``backbone.bottom_up.*``, ``backbone.body.*``).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown naming scheme {scheme!r}; use one of {SCHEMES}")
    state = model.state_dict()
    out = {}
    for key, aliases in foreign_names(model)[scheme].items():
        alias = aliases[0]
        tensor = state[key].detach().cpu()
        out[alias.name] = alias.save(tensor) if alias.save else tensor.clone()
    return out
