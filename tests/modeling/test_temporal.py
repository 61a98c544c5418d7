"""Recurrent memory: cell equations, state carried across windows and batches, resets, slots,
truncated backpropagation, checkpointable state, and FCOS with a memory on event streams."""

from __future__ import annotations

import pytest
import torch

from detlab.config import get_cfg
from detlab.modeling import TEMPORAL_REGISTRY, build_model
from detlab.modeling.temporal import (
    ConvGRU,
    ConvLSTM,
    RecurrentMemory,
    StreamInfo,
    stream_info,
)
from detlab.structures import Instances
from detlab.utils.errors import UserError


def test_convlstm_matches_equations():
    torch.manual_seed(0)
    cell = ConvLSTM(3, kernel_size=3)
    x, h, c = (torch.randn(2, 3, 5, 6) for _ in range(3))
    out, (h2, c2) = cell(x, (h, c))
    z = torch.nn.functional.conv2d(
        torch.cat([x, h], 1), cell.gates.weight, cell.gates.bias, padding=1
    )
    i, f, o, g = z[:, 0:3], z[:, 3:6], z[:, 6:9], z[:, 9:12]
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.tanh(c_ref)
    torch.testing.assert_close(c2, c_ref)
    torch.testing.assert_close(out, h_ref)
    assert torch.equal(out, h2)
    assert torch.all(cell.gates.bias[3:6] == 1)  # forget bias starts at 1


def test_convgru_matches_equations():
    torch.manual_seed(1)
    cell = ConvGRU(2, kernel_size=1)
    x, h = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    out, (h2,) = cell(x, (h,))
    zr = torch.sigmoid(
        torch.nn.functional.conv2d(torch.cat([x, h], 1), cell.gates.weight, cell.gates.bias)
    )
    z, r = zr[:, :2], zr[:, 2:]
    n = torch.tanh(
        torch.nn.functional.conv2d(
            torch.cat([x, r * h], 1), cell.candidate.weight, cell.candidate.bias
        )
    )
    torch.testing.assert_close(out, (1 - z) * n + z * h)
    fresh, _ = cell(x, None)
    torch.testing.assert_close(fresh, cell(x, (torch.zeros_like(h),))[0])


def _memory(name="ConvLSTM", detach_every=0):
    torch.manual_seed(2)
    cells = {"res3": TEMPORAL_REGISTRY.get(name)(4), "res4": TEMPORAL_REGISTRY.get(name)(4)}
    return RecurrentMemory(cells, detach_every=detach_every)


def _feats(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "res3": torch.randn(n, 4, 6, 6, generator=g),
        "res4": torch.randn(n, 4, 3, 3, generator=g),
        "res5": torch.randn(n, 4, 2, 2, generator=g),
    }


def _info(slots, steps, first):
    return StreamInfo(tuple(slots), tuple(steps), tuple(first))


@pytest.mark.parametrize("name", ["ConvLSTM", "ConvGRU"])
def test_state_carried_across_batches_equals_within_one_batch(name):
    feats = _feats(4)
    one = _memory(name)
    whole = one(feats, _info([0] * 4, [0, 1, 2, 3], [True, False, False, False]))
    split = _memory(name)
    parts = []
    for k in range(4):
        f = {lvl: v[k : k + 1] for lvl, v in feats.items()}
        parts.append(split(f, _info([0], [0], [k == 0]))["res3"])
    torch.testing.assert_close(torch.cat(parts), whole["res3"])
    assert torch.equal(whole["res5"], feats["res5"])  # levels without a cell pass through
    # dropping the state between windows changes the output: the state really is carried
    fresh = _memory(name)({lvl: v[3:4] for lvl, v in feats.items()}, _info([0], [0], [True]))
    assert not torch.allclose(fresh["res3"], parts[3], atol=1e-4)


def test_reset_slots_and_modes():
    feats = _feats(4, seed=1)
    mem = _memory()
    mem(feats, _info([0, 1, 0, 1], [0, 0, 1, 1], [True, True, False, False]))
    # slot 1 interleaved with slot 0 equals slot 1 alone
    solo = _memory()
    ref = solo({k: v[[1, 3]] for k, v in feats.items()}, _info([1, 1], [0, 1], [True, False]))
    again = _memory()
    out = again(feats, _info([0, 1, 0, 1], [0, 0, 1, 1], [True, True, False, False]))
    torch.testing.assert_close(out["res3"][[1, 3]], ref["res3"])
    # is_first resets: same output as a fresh memory
    x = {k: v[:1] for k, v in feats.items()}
    torch.testing.assert_close(
        mem(x, _info([0], [0], [True]))["res3"], _memory()(x, _info([0], [0], [True]))["res3"]
    )
    # evaluation has its own memory
    mem.eval()
    before = {s: [t.clone() for t in st["res3"]] for s, st in mem._memory[True].items()}
    mem(x, _info([0], [0], [False]))
    assert all(
        torch.equal(a, b)
        for s in before
        for a, b in zip(before[s], mem._memory[True][s]["res3"], strict=True)
    )
    # windows without stream keys start fresh and are not remembered
    mem.train()
    n_before = len(mem._memory[True])
    mem(x, stream_info([{}]))
    assert len(mem._memory[True]) == n_before


def test_truncated_backpropagation():
    feats = {k: v.requires_grad_() for k, v in _feats(3, seed=2).items()}

    def grad_to_first(mem):
        out = mem(feats, _info([0, 0, 0], [0, 1, 2], [True, False, False]))
        (g,) = torch.autograd.grad(out["res3"][2].sum(), feats["res3"])
        return g

    full = grad_to_first(_memory(detach_every=0))
    cut = grad_to_first(_memory(detach_every=1))
    assert full[0].abs().sum() > 0 and full[1].abs().sum() > 0
    assert cut[0].abs().sum() == 0 and cut[1].abs().sum() == 0 and cut[2].abs().sum() > 0
    mem = _memory()
    mem(feats, _info([0, 0, 0], [0, 1, 2], [True, False, False]))
    assert all(not t.requires_grad for st in mem._memory[True][0].values() for t in st)


def test_stream_state_round_trip_and_nonfinite_reset():
    feats = _feats(2, seed=3)
    a = _memory()
    a(feats, _info([0, 1], [0, 0], [True, True]))
    b = _memory()
    b.load_stream_state(a.stream_state())
    nxt = _feats(2, seed=4)
    info = _info([0, 1], [0, 0], [False, False])
    torch.testing.assert_close(a(nxt, info)["res3"], b(nxt, info)["res3"])
    bad = {k: v.clone() for k, v in nxt.items()}
    bad["res3"][0] = float("nan")
    b(bad, info)
    assert b.resets_nonfinite == 1 and 0 not in b._memory[True] and 1 in b._memory[True]


def test_duplicate_slot_and_step_is_a_user_error():
    with pytest.raises(UserError, match="share slot 0 and step 1"):
        stream_info([{"slot": 0, "step": 1}, {"slot": 0, "step": 1}])


def _event_cfg(temporal="ConvLSTM"):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "tiny_resnet"
    cfg.MODEL.BACKBONE.NORM = "GN"
    cfg.MODEL.BACKBONE.IN_CHANNELS = 4
    cfg.MODEL.RESNETS.WIDTH_MULT = 0.25
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = (0.0,) * 4, (1.0,) * 4
    cfg.MODEL.FPN.IN_STAGES = (1, 2, 3)
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.FPN.TOP_BLOCK = "none"
    cfg.MODEL.FCOS.NUM_CONVS = 1
    cfg.MODEL.FCOS.NUM_CLASSES = 2
    cfg.MODEL.TEMPORAL.NAME = temporal
    return cfg


def _windows(n, labelled, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        img = torch.rand(4, 32, 48, generator=g) * 3
        boxes = torch.tensor([[4.0 + i, 6.0, 20.0 + i, 18.0]])
        out.append(
            {
                "image": img,
                "height": 32,
                "width": 48,
                "image_id": i,
                "labelled": labelled[i],
                "instances": Instances((32, 48), boxes=boxes, classes=torch.tensor([1])),
                "slot": 0,
                "step": i,
                "is_first": i == 0,
            }
        )
    return out


def test_fcos_with_memory_trains_on_labelled_windows_only():
    cfg = _event_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.temporal is not None and model.temporal.levels == ["res2", "res3", "res4"]
    model.train()
    batch = _windows(3, [False, True, False])
    losses = model(batch)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    # the labelled window's loss equals a head-only computation on that window's features
    model.temporal.reset()
    images, sizes = model.preprocess(batch)
    feats = model.features(images, stream_info(batch))
    ref = model.head(
        [f[1:2] for f in feats], sizes[1:2], model.prepare_targets(batch[1:2], sizes[1:2])
    )
    for k in losses:
        torch.testing.assert_close(losses[k], ref[k])
    zero = model(_windows(2, [False, False]))
    assert all(float(v.detach()) == 0 for v in zero.values())
    sum(zero.values()).backward()  # still a graph


@pytest.mark.parametrize("name", ["", "none", "None"])
def test_no_memory_names_build_a_plain_detector_that_takes_stream_batches(name):
    torch.manual_seed(0)
    model = build_model(_event_cfg(name))
    assert model.temporal is None
    model.train()
    losses = model(_windows(3, [False, True, False]))  # unlabelled windows still give no loss
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_fcos_memory_state_flows_into_predictions():
    cfg = _event_cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for p in model.temporal.parameters():  # make the memory matter strongly
        torch.nn.init.normal_(p, std=0.5)
    w = _windows(2, [True, True])
    with torch.no_grad():
        carried = model(w)[1]["instances"].scores
        alone = dict(w[1], is_first=True, step=0)
        fresh = model([alone])[0]["instances"].scores
    assert carried.shape != fresh.shape or not torch.allclose(carried, fresh)


def test_broken_cell_fails_at_build_in_one_sentence():
    from torch import nn

    from detlab.utils.errors import ContractError

    class WidensChannels(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(channels, 2 * channels, 1)

        @classmethod
        def from_config(cls, cfg, channels):
            return {"channels": channels}

        def forward(self, x, state=None):
            return self.conv(x), (x,)

    TEMPORAL_REGISTRY.register(WidensChannels)
    try:
        with pytest.raises(ContractError, match="WidensChannels' breaks its contract: the output"):
            TEMPORAL_REGISTRY.build("WidensChannels", get_cfg(), 4)
    finally:
        TEMPORAL_REGISTRY._obj_map.pop("WidensChannels")
    cell = TEMPORAL_REGISTRY.build("ConvLSTM", get_cfg(), 4)  # the built-ins pass
    assert isinstance(cell, ConvLSTM) and cell.channels == 4


def test_retinanet_gets_the_memory_too():
    """The memory lives in OneStageDetector, so every dense head family streams."""
    cfg = _event_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.RETINANET.NUM_CLASSES = 2
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.temporal is not None and model.temporal.levels == ["res2", "res3", "res4"]
    model.train()
    losses = model(_windows(3, [True, False, True]))
    assert losses and all(torch.isfinite(v) for v in losses.values())
    assert set(model.temporal._memory[True]) == {0}  # slot 0 carried to the next batch


def test_yolo_gets_the_memory_with_the_size_aware_loss():
    """The user's RVT recipe: YOLO head, size-aware loss, recurrent memory on the PAN inputs."""
    cfg = _event_cfg()
    cfg.MODEL.META_ARCHITECTURE = "YOLO"
    cfg.MODEL.BACKBONE.NAME = "CSPDarknet"
    cfg.MODEL.CSP.WIDTH_MULT = 0.125
    cfg.MODEL.NECK.NAME = "PAN"
    cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
    cfg.MODEL.YOLO.NUM_CLASSES = 2
    cfg.MODEL.YOLO.REG_MAX = 8
    cfg.MODEL.SIZE_AWARE_LOSS.ENABLED = True
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.temporal is not None and model.temporal.levels == ["res3", "res4", "res5"]
    assert model.head.size_weighting is not None
    model.train()
    losses = model(_windows(3, [True, False, True]))
    assert losses and all(torch.isfinite(v) for v in losses.values())
    assert set(model.temporal._memory[True]) == {0}  # slot 0 carried to the next batch
    model.eval()  # the head's inputs for window 1 depend on window 0 through the memory
    w = _windows(2, [True, True])
    alone = [dict(w[1], is_first=True, step=0)]
    with torch.no_grad():
        model.temporal.reset()
        carried = model.features(model.preprocess(w)[0], stream_info(w))
        model.temporal.reset()
        fresh = model.features(model.preprocess(alone)[0], stream_info(alone))
    assert all(not torch.allclose(c[1], f[0]) for c, f in zip(carried, fresh, strict=True))
