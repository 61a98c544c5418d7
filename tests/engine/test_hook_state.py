"""Hook state in checkpoints is keyed by hook class (order-proof); hooks save through the
checkpointer; a registered hook that is not a HookBase fails in one sentence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detlab.engine import HOOK_REGISTRY, Checkpointer, HookBase
from detlab.engine import default_hooks as H
from detlab.engine.checkpoint import load_checkpoint_file
from detlab.engine.trainer import by_hook_class, hook_state_keys
from detlab.utils.errors import ContractError


def test_state_keys_are_class_names_and_legacy_keys_still_load():
    hooks = [H.IterationTimer(), H.EarlyStopping("m", "max", 2), H.EarlyStopping("n", "min", 3)]
    assert hook_state_keys(hooks) == ["IterationTimer", "EarlyStopping", "EarlyStopping#2"]
    legacy = {"4:EarlyStopping": {"a": 1}, "3:BestCheckpointer": {"b": 2}, "6:EarlyStopping": {}}
    assert by_hook_class(legacy) == {
        "BestCheckpointer": {"b": 2},
        "EarlyStopping": {"a": 1},
        "EarlyStopping#2": {},
    }


def test_reordered_hooks_get_their_own_state_back(toy, run_toy, tmp_path):
    from detlab.engine import default_setup

    out = tmp_path / "run"
    first, _ = run_toy(out, **{"SOLVER.MAX_ITER": 20})
    best = next(h for h in first.hooks if isinstance(h, H.BestCheckpointer))
    assert best.tracker.best is not None

    class Reordered(toy.ToyTrainer):
        def build_hooks(self):
            hooks = super().build_hooks()
            return hooks[::-1]  # state keyed by position would land on the wrong hooks

    cfg = default_setup(toy.toy_cfg(out, **{"SOLVER.MAX_ITER": 20}))
    again = Reordered(cfg)
    again.resume_or_load(resume=True)
    restored = next(h for h in again.hooks if isinstance(h, H.BestCheckpointer))
    assert (restored.tracker.best, restored.tracker.best_iter) == (
        best.tracker.best,
        best.tracker.best_iter,
    )


def test_best_checkpointer_saves_through_the_checkpointer(tmp_path):
    model = nn.Linear(2, 2)
    hook = H.BestCheckpointer(Checkpointer(model, str(tmp_path)), "bbox/AP", "max")

    class _State:  # what the hook reads of the trainer: the iteration and the last evaluation
        iter = 7
        last_eval = (7, {"bbox": {"AP": 42.0}})

    hook.trainer = _State()
    hook.after_step()
    saved = load_checkpoint_file(str(tmp_path / "model_best.pth"))
    assert saved["iteration"] == 7 and saved["value"] == 42.0
    assert torch.equal(saved["model"]["weight"], model.weight)


def test_extra_hook_that_is_not_a_hook_fails_in_one_sentence(run_toy, tmp_path):
    class NotAHook:
        @classmethod
        def from_config(cls, cfg):
            return {}

    HOOK_REGISTRY.register(NotAHook)
    try:
        with pytest.raises(ContractError) as err:
            run_toy(tmp_path / "h", **{"TRAINER.EXTRA_HOOKS": ["NotAHook"]})
    finally:
        HOOK_REGISTRY._obj_map.pop("NotAHook")
    msg = str(err.value)
    assert "HOOK 'NotAHook'" in msg and "not a HookBase" in msg and "\n" not in msg
    assert issubclass(H.EvalHook, HookBase)
