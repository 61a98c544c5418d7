"""Atomic, finite-checked checkpoints and RNG state round trips."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from detlab.engine.checkpoint import Checkpointer, get_rng_state, set_rng_state
from detlab.utils.errors import UserError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_save_load_round_trip_and_rotation(tmp_path):
    m = _model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    ck = Checkpointer(m, str(tmp_path), optimizer=opt, max_keep=2)
    for it in (9, 19, 29):
        assert ck.save(f"model_{it:07d}", tag_last=True, iteration=it)
    assert [os.path.basename(p) for p in ck.periodic_checkpoints()] == [
        "model_0000019.pth",
        "model_0000029.pth",
    ]
    assert ck.last_checkpoint() == str(tmp_path / "model_0000029.pth")
    m2 = _model()
    with torch.no_grad():
        for p in m2.parameters():
            p.zero_()
    opt2 = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    rest = Checkpointer(m2, str(tmp_path), optimizer=opt2).load(ck.last_checkpoint())
    assert rest["iteration"] == 29
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["momentum_buffer"].equal(
        opt.state_dict()["state"][0]["momentum_buffer"]
    )


def test_interrupted_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    m = _model()
    ck = Checkpointer(m, str(tmp_path))
    ck.save("model_0000009", tag_last=True, iteration=9)
    good = (tmp_path / "model_0000009.pth").read_bytes()

    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.seek(0)
        f.truncate(100)  # half-written file...
        raise KeyboardInterrupt  # ...and the process is interrupted before the rename

    monkeypatch.setattr(torch, "save", dying_save)
    with torch.no_grad():
        m[0].weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_0000009", tag_last=True, iteration=19)  # same name: overwrite attempt
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_0000019", tag_last=True, iteration=19)
    monkeypatch.undo()
    assert (tmp_path / "model_0000009.pth").read_bytes() == good
    assert not (tmp_path / "model_0000019.pth").exists()
    assert ck.last_checkpoint() == str(tmp_path / "model_0000009.pth")
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temp files left
    assert Checkpointer(_model(), str(tmp_path)).load(ck.last_checkpoint())["iteration"] == 9


def test_truncated_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "model_0000009.pth"
    Checkpointer(_model(), str(tmp_path)).save("model_0000009")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match="cannot be read"):
        Checkpointer(_model(), str(tmp_path)).load(str(path))


def test_non_finite_weights_are_never_saved(tmp_path):
    m = _model()
    ck = Checkpointer(m, str(tmp_path))
    assert ck.save("model_0000001", tag_last=True)
    with torch.no_grad():
        m[0].weight[0, 0] = float("inf")
    assert ck.save("model_0000002", tag_last=True) is None
    assert not (tmp_path / "model_0000002.pth").exists()
    assert ck.last_checkpoint().endswith("model_0000001.pth")


def test_rng_state_round_trip():
    state = get_rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    b = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert a == b
    # the state survives a weights_only save/load
    import io

    buf = io.BytesIO()
    torch.save({"rng": state}, buf)
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True)["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_checkpoint_of_another_model_is_a_user_error(tmp_path):
    Checkpointer(_model(), str(tmp_path)).save("model_0000001", tag_last=True)
    other = nn.Sequential(nn.Linear(4, 5))
    with pytest.raises(UserError, match="does not fit this model") as err:
        Checkpointer(other, str(tmp_path)).load(str(tmp_path / "model_0000001.pth"))
    assert "\n" not in str(err.value)
