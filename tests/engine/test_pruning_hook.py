"""SweepPruningHook: reports each periodic evaluation and stops a pruned run at that boundary,
leaving a checkpoint that ``--resume`` continues from."""

from __future__ import annotations

import json

from detlab.engine import SweepPruningHook


class _Link:
    """Stands in for the study: records reports, prunes at ``prune_at`` (if allowed)."""

    def __init__(self, prune_at: int | None) -> None:
        self.prune_at = prune_at
        self.reports: list[tuple[int, float, bool]] = []

    def report(self, step, results, may_prune=True) -> bool:
        self.reports.append((step, results["bbox"]["AP"], may_prune))
        return may_prune and step == self.prune_at


def _train(toy, out, link, resume=False, **overrides):
    from detlab.engine import default_setup

    cfg = default_setup(
        toy.toy_cfg(out, **{"TRAINER.EXTRA_HOOKS": ["SweepPruningHook"], **overrides})
    )
    trainer = toy.ToyTrainer(cfg)
    hook = next(h for h in trainer.hooks if isinstance(h, SweepPruningHook))
    hook.link = link
    trainer.resume_or_load(resume=resume)
    return trainer, trainer.train(), hook


def test_pruned_run_stops_at_the_evaluation_with_a_resumable_checkpoint(toy, tmp_path):
    out = tmp_path / "run"
    link = _Link(prune_at=20)
    # Checkpoints every 7 iterations: the stop at iteration 19 is not one of them.
    trainer, final, hook = _train(toy, out, link, **{"SOLVER.CHECKPOINT_PERIOD": 7})
    assert [step for step, _, _ in link.reports] == [10, 20]
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {r["iteration"]: r["bbox/AP"] for r in evals if "bbox/AP" in r}
    assert [ap for _, ap, _ in link.reports] == [evals[9], evals[19]]  # what the trainer measured
    assert trainer.iter == 19 and hook.pruned_at == 20
    assert final["stop_reason"] == "pruned by the sweep after 20 iterations"
    assert final["iteration"] == 19
    assert (out / "last_checkpoint").read_text().strip() == "model_0000019.pth"
    assert not (out / "model_0000020.pth").exists()
    saved = json.loads((out / "final_metrics.json").read_text())
    assert saved["stop_reason"] == final["stop_reason"]
    # --resume continues the trial from there (here with no study around: nothing reported).
    resumed, final2, _ = _train(toy, out, None, resume=True, **{"SOLVER.CHECKPOINT_PERIOD": 7})
    assert resumed.start_iter == 20 and final2["iteration"] == 29
    assert "stop_reason" not in final2


def test_the_last_evaluation_is_reported_but_never_prunes(toy, tmp_path):
    link = _Link(prune_at=20)
    trainer, final, hook = _train(toy, tmp_path / "run", link, **{"SOLVER.MAX_ITER": 20})
    assert [(s, allowed) for s, _, allowed in link.reports] == [(10, True), (20, False)]
    assert final["iteration"] == 19 and "stop_reason" not in final and hook.pruned_at is None


def test_outside_a_study_the_hook_does_nothing(toy, tmp_path, monkeypatch):
    from detlab.sweep.trial_link import ENV_KEYS

    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    trainer, final, hook = _train(toy, tmp_path / "run", None, **{"SOLVER.MAX_ITER": 10})
    assert hook.link is None and final["iteration"] == 9 and "stop_reason" not in final
