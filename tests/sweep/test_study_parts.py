"""The parts of a study sweep, in process: spec section, storage, sampler, pruner, trial
bookkeeping (claims, duplicates, dead workers), the trial's link to its study, figures,
``eval.py --compare`` on a study."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState, create_trial  # noqa: E402

from detlab.sweep.spec import load_spec  # noqa: E402
from detlab.sweep.study import (  # noqa: E402
    build_pruner,
    build_sampler,
    decode_params,
    encode_params,
    open_storage,
    open_study,
    require_optuna,
    resolve_pruner,
    resolve_storage,
    search_space,
)
from detlab.sweep.study_trials import (  # noqa: E402
    HEARTBEAT,
    WORKER,
    claim_waiting,
    discard,
    duplicate_of,
    enqueue_attempt,
    group_by_name,
    live_attempt,
    recover_dead,
    trial_id,
    worker_identity,
)
from detlab.sweep.trial_link import TrialLink  # noqa: E402
from detlab.utils.errors import UserError  # noqa: E402

LR, CLIP = "SOLVER.BASE_LR", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"


def _spec(tmp_path, **keys):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"SOLVER": {"MAX_ITER": 100}}))
    data = {"base_config": "base.yaml", "parameters": {LR: [0.01, 0.02]}, "study": {}}
    data.update(keys)
    data.setdefault("output_root", str(tmp_path / "root"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path)


# ---------------------------------------------------------------- spec
@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ({"study": {"prunner": "asha"}}, ["unknown study key 'prunner'", "did you mean pruner"]),
        ({"study": {"pruner": "ashha"}}, ["unknown pruner 'ashha'", "did you mean asha"]),
        (
            {"study": {"pruner": {"type": "asha", "eta": 3}}},
            ["no option 'eta'", "reduction_factor"],
        ),
        ({"study": {"pruner": {"type": "asha", "reduction_factor": 1}}}, ["at least 2"]),
        ({"study": {"heartbeat_s": 60, "stale_after_s": 90}}, ["twice heartbeat_s"]),
        ({"study": {"max_retries": -1}}, ["max_retries"]),
        ({"study": {"storage": 3}}, ["study storage"]),
        (
            {"method": "cmaes", "num_trials": 4, "parameters": {LR: {"choice": [0.1, 0.2]}}},
            ["CMA-ES", "SOLVER.BASE_LR is a choice"],
        ),
        ({"method": "tpe", "parameters": {LR: {"uniform": [0.1, 0.2]}}}, ["num_trials"]),
        (
            {
                "method": "tpe",
                "num_trials": 3,
                "parameters": {LR: {"uniform": [0, 1]}},
                "name_template": "lr{BASE_LR}",
            },
            ["must hold {index}"],
        ),
        (
            {"metric": ["bbox/AP", "bbox/APs"], "study": {"pruner": "median"}},
            ["pruning needs a single metric"],
        ),
        ({"metric": ["bbox/AP", "bbox/AP"]}, ["repeat"]),
        ({"metric": ["bbox/AP", "bbox/APs"], "mode": ["max"]}, ["one per metric"]),
    ],
)
def test_study_spec_mistakes_are_one_sentence(tmp_path, keys, words):
    with pytest.raises(UserError) as info:
        _spec(tmp_path, **keys)
    message = str(info.value)
    assert "\n" not in message and message.startswith("Sweep spec ")
    for word in words:
        assert word in message


def test_study_section_defaults_and_multi_objective(tmp_path):
    spec = _spec(tmp_path, metric=["bbox/AP", "bbox/APs"], mode=["max", "min"])
    assert spec.metric == "bbox/AP" and spec.mode == "max"
    assert spec.metrics == ["bbox/AP", "bbox/APs"] and spec.modes == ["max", "min"]
    assert spec.study.name == "spec" and spec.study.pruner == {"type": "none"}
    assert spec.study.max_retries == 3 and spec.study.wait
    plain = load_spec(tmp_path / "spec.yaml")  # tpe without a study: section runs as a study
    assert plain.study is not None


def test_optuna_missing_is_one_sentence_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(UserError, match=r"pip install 'detlab\[sweep\]'") as info:
        require_optuna()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- storage
def test_storage_strings(tmp_path, monkeypatch):
    root = str(tmp_path / "root")
    ref = resolve_storage(None, root)
    assert ref.kind == "rdb" and ref.target == f"sqlite:///{root}/study.db"
    ref = resolve_storage("journal", root)
    assert ref.kind == "journal" and ref.target == f"{root}/study.journal"
    assert resolve_storage(ref.env_value, root).target == ref.target
    monkeypatch.chdir(tmp_path)
    assert resolve_storage("sqlite:///rel.db", root).target == f"sqlite:///{tmp_path}/rel.db"
    monkeypatch.setenv("DB_PW", "s3cret")
    ref = resolve_storage("postgresql+psycopg://detlab:${DB_PW}@db:5432/detlab", root)
    assert ref.target == "postgresql+psycopg://detlab:s3cret@db:5432/detlab"
    assert "s3cret" not in ref.text and "s3cret" not in ref.shown
    plain = resolve_storage("postgresql+psycopg://detlab:s3cret@db/detlab", root)
    assert plain.shown == "postgresql+psycopg://detlab:***@db/detlab"
    monkeypatch.delenv("DB_PW")
    with pytest.raises(UserError, match=r"\$\{DB_PW\}, which is not set"):
        resolve_storage("postgresql+psycopg://detlab:${DB_PW}@db/detlab", root)
    with pytest.raises(UserError, match="not sqlite, journal"):
        resolve_storage("redis-ish", root)


def test_unreachable_or_driverless_database_is_one_sentence(tmp_path):
    for url in ("postgresql+psycopg2://u:pw@127.0.0.1:1/db", "mysql+nodriver://u:pw@h/db"):
        with pytest.raises(UserError) as info:
            open_storage(resolve_storage(url, str(tmp_path)))
        message = str(info.value)
        assert "\n" not in message and "u:***@" in message and "pw@" not in message


def test_study_is_created_once_and_keeps_its_settings(tmp_path):
    spec = _spec(tmp_path)
    ref = resolve_storage(None, spec.output_root)
    study = open_study(spec, ref, "s")
    assert study.user_attrs["detlab_method"] == "grid"
    assert open_study(spec, ref, "s", create=False).study_name == "s"
    other = _spec(tmp_path, metric="bbox/APs", mode="min")
    with pytest.raises(UserError, match="optimises"):
        open_study(other, ref, "s")
    with pytest.raises(UserError, match="There is no study 'nope'"):
        open_study(spec, ref, "nope", create=False)


# ---------------------------------------------------------------- space, sampler, pruner
def test_search_space_round_trips_list_choices(tmp_path):
    spec = _spec(tmp_path, parameters={"MODEL.FPN.IN_STAGES": [[2, 3, 4], [1, 2, 3, 4]], LR: [0.1]})
    space = search_space(spec)
    assert space["MODEL.FPN.IN_STAGES"].choices == ("[2, 3, 4]", "[1, 2, 3, 4]")
    params = {"MODEL.FPN.IN_STAGES": [1, 2, 3, 4], LR: 0.1}
    assert decode_params(spec, encode_params(spec, params)) == params
    spec = _spec(
        tmp_path,
        method="tpe",
        num_trials=2,
        name_template="{index}",
        parameters={LR: {"loguniform": [1e-4, 1e-2]}, "SOLVER.MAX_ITER": {"randint": [1, 5]}},
    )
    space = search_space(spec)
    assert space[LR].log and (space[LR].low, space[LR].high) == (1e-4, 1e-2)
    assert (space["SOLVER.MAX_ITER"].low, space["SOLVER.MAX_ITER"].high) == (1, 5)


def test_samplers_and_their_options(tmp_path, monkeypatch):
    def sampled(method, **study):
        keys = {"num_trials": 2, "name_template": "{index}", "study": study}
        return _spec(tmp_path, method=method, parameters={LR: {"uniform": [0, 1]}}, **keys)

    sampler = build_sampler(sampled("tpe", sampler_options={"n_startup_trials": 7}), 1)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 7 and sampler._constant_liar
    with pytest.raises(UserError, match="did you mean n_startup_trials"):
        build_sampler(sampled("tpe", sampler_options={"n_startup": 7}))
    cma = sampled("cmaes")
    if importlib.util.find_spec("cmaes") is not None:  # in the sweep extra
        assert isinstance(build_sampler(cma), optuna.samplers.CmaEsSampler)
    monkeypatch.setitem(sys.modules, "cmaes", None)
    with pytest.raises(UserError, match=r"cmaes package.*detlab\[sweep\]"):
        build_sampler(cma)


def test_pruner_resources_come_from_the_trial_config(tmp_path):
    spec = _spec(tmp_path, study={"pruner": "hyperband"}, fixed={"TEST.EVAL_PERIOD": 25})
    pruner = resolve_pruner(spec)
    assert pruner == {"type": "hyperband", "min_resource": 25, "max_resource": 100}
    assert isinstance(build_pruner(pruner), optuna.pruners.HyperbandPruner)
    spec = _spec(
        tmp_path,
        study={"pruner": {"type": "asha", "reduction_factor": 3}},
        fixed={"TEST.EVAL_PERIOD": 10},
    )
    assert resolve_pruner(spec) == {"type": "asha", "reduction_factor": 3, "min_resource": 10}
    with pytest.raises(UserError, match="TEST.EVAL_PERIOD > 0"):
        resolve_pruner(_spec(tmp_path, study={"pruner": "median"}))  # EVAL_PERIOD 0


# ---------------------------------------------------------------- bookkeeping
def _study_with(names_states, storage=None):
    storage = storage or optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for name, state in names_states:
        values = {"value": 1.0} if state == TrialState.COMPLETE else {}
        study.add_trial(
            create_trial(
                state=state,
                params={"x": 0.5},
                distributions=dist,
                user_attrs={"name": name},
                **values,
            )
        )
    sid = storage.get_study_id_from_name(study.study_name)
    return study, storage, sid


def test_claims_are_exclusive_and_duplicates_are_dropped():
    study, storage, sid = _study_with(
        [("a", TrialState.WAITING), ("a", TrialState.WAITING), ("b", TrialState.WAITING)]
    )
    first = claim_waiting(storage, sid)
    second = claim_waiting(storage, sid)
    assert (first.number, second.number) == (0, 1)
    trials = storage.get_all_trials(sid)
    assert duplicate_of(trials, first) is None
    assert duplicate_of(trials, second).number == 0  # the lower-numbered attempt wins
    discard(storage, sid, second, "duplicate")
    groups = group_by_name(storage.get_all_trials(sid))
    assert [t.number for t in groups["a"]] == [0]  # discarded attempts are not shown
    assert claim_waiting(storage, sid).number == 2
    assert claim_waiting(storage, sid) is None


def test_live_attempt_is_the_first_that_has_not_failed():
    study, storage, sid = _study_with([("a", TrialState.FAIL), ("a", TrialState.COMPLETE)])
    assert live_attempt(group_by_name(study.trials)["a"]).number == 1
    study, storage, sid = _study_with([("a", TrialState.FAIL)])
    assert live_attempt(group_by_name(study.trials)["a"]) is None


def _running(study, storage, sid, name, identity, beat):
    study.add_trial(
        create_trial(
            state=TrialState.WAITING,
            params={"x": 0.5},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            user_attrs={"name": name, "output_dir": f"/runs/{name}"},
            intermediate_values={10: 0.25},
        )
    )
    t = claim_waiting(storage, sid)
    tid = trial_id(storage, sid, t.number)
    storage.set_trial_system_attr(tid, WORKER, identity)
    storage.set_trial_system_attr(tid, HEARTBEAT, beat)
    return t


def test_dead_workers_trials_are_taken_over_and_resumed():
    study, storage, sid = _study_with([])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = worker_identity("me")
    dead_here = {**here, "pid": gone.pid}  # this host, a process that has exited
    _running(study, storage, sid, "local-dead", dead_here, time.time())
    _running(study, storage, sid, "alive", here, time.time() - 1000)  # alive despite old beat
    _running(
        study, storage, sid, "remote-stale", {"host": "elsewhere", "pid": 1}, time.time() - 500
    )
    _running(study, storage, sid, "remote-fresh", {"host": "elsewhere", "pid": 1}, time.time())
    taken = recover_dead(study, storage, sid, stale_after_s=120, max_retries=1)
    assert sorted(name for name, _, again in taken if again) == ["local-dead", "remote-stale"]
    assert any("is gone" in why for _, why, _ in taken)
    assert any("no heartbeat for" in why for _, why, _ in taken)
    waiting = storage.get_all_trials(sid, states=(TrialState.WAITING,))
    assert sorted(t.user_attrs["name"] for t in waiting) == ["local-dead", "remote-stale"]
    for t in waiting:  # same name, output folder and history; to resume from the checkpoint
        assert t.system_attrs["detlab:resume"] and t.intermediate_values == {10: 0.25}
        assert t.user_attrs["output_dir"] == f"/runs/{t.user_attrs['name']}"
    # The next death of a lineage that already died max_retries times is final.
    t = claim_waiting(storage, sid)
    storage.set_trial_system_attr(trial_id(storage, sid, t.number), WORKER, dead_here)
    assert claim_waiting(storage, sid) is not None
    taken = recover_dead(study, storage, sid, stale_after_s=120, max_retries=1)
    assert [again for _, _, again in taken] == [False]


def test_enqueue_attempt_carries_the_pruner_rungs():
    study, storage, sid = _study_with([("a", TrialState.WAITING)])
    t = claim_waiting(storage, sid)
    tid = trial_id(storage, sid, t.number)
    storage.set_trial_system_attr(tid, "completed_rung_0", 0.7)
    storage.set_trial_state_values(tid, TrialState.FAIL)
    enqueue_attempt(study, storage.get_trial(tid), resume=True, crashes=1, wall_before=3.0)
    copy = storage.get_all_trials(sid, states=(TrialState.WAITING,))[0]
    assert copy.system_attrs["completed_rung_0"] == 0.7
    assert copy.system_attrs["detlab:attempt_of"] == t.number
    assert copy.system_attrs["detlab:wall_before"] == 3.0


# ---------------------------------------------------------------- the trial's link
@pytest.mark.filterwarnings("ignore:The reported value is ignored")
def test_trial_link_reports_and_relays_the_pruners_verdict(tmp_path):
    spec = _spec(
        tmp_path,
        study={"pruner": {"type": "median", "n_startup_trials": 1}},
        fixed={"TEST.EVAL_PERIOD": 10},
    )
    ref = resolve_storage(None, spec.output_root)
    study = open_study(spec, ref, "s")
    dist = {LR: optuna.distributions.CategoricalDistribution([0.01, 0.02])}
    study.add_trial(
        create_trial(
            value=50.0,
            params={LR: 0.01},
            distributions=dist,
            intermediate_values={10: 40.0, 20: 50.0},
        )
    )
    storage = open_storage(ref)
    sid = storage.get_study_id_from_name("s")
    study.add_trial(create_trial(state=TrialState.WAITING, params={LR: 0.02}, distributions=dist))
    t = claim_waiting(storage, sid)
    tid = trial_id(storage, sid, t.number)
    link = TrialLink(ref.env_value, "s", tid, "bbox/AP", resolve_pruner(spec))
    again = TrialLink.from_env(link.env())
    assert (again.storage, again.trial_id, again.pruner) == (link.storage, tid, link.pruner)
    assert TrialLink.from_env({}) is None
    assert link.report(10, {"bbox": {"AP": 45.0}}) is False  # above the median at step 10
    assert link.report(20, {"bbox": {"AP": 5.0}}, may_prune=False) is False  # asked not to
    assert link.report(20, {"bbox": {"AP": 5.0}}) is True  # (the repeat is ignored by Optuna)
    assert link.report(30, {"bbox": {"APs": 5.0}}) is False  # no bbox/AP: nothing reported
    frozen = storage.get_trial(tid)
    assert frozen.intermediate_values == {10: 45.0, 20: 5.0}
    assert frozen.user_attrs["pruned_at"] == 20
    (tmp_path / "a-file").write_text("")
    url = f"sqlite:///{tmp_path}/a-file/x.db"  # cannot be opened
    broken = TrialLink(url, "s", tid, "bbox/AP", {"type": "median"})
    assert broken.report(10, {"bbox": {"AP": 1.0}}) is False  # a storage error never stops training


# ---------------------------------------------------------------- figures, compare
def _finished_study(tmp_path, n=4):
    spec = _spec(tmp_path, parameters={LR: [0.01, 0.02], CLIP: [0.5, 1.0]})
    ref = resolve_storage(None, spec.output_root)
    study = open_study(spec, ref, "figs")
    space = search_space(spec)
    for i in range(n):
        lr, clip = (0.01, 0.02)[i % 2], (0.5, 1.0)[i // 2]
        ap = 100 * lr + clip
        study.add_trial(
            create_trial(
                value=ap,
                params={LR: lr, CLIP: clip},
                distributions=space,
                intermediate_values={10: ap / 2, 20: ap},
                user_attrs={
                    "name": f"t{i}",
                    "index": i,
                    "metrics": {"bbox": {"AP": ap, "APs": 1.0}, "iteration": 19},
                },
            )
        )
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / "study.json").write_text(json.dumps({"study_name": "figs", "storage": ref.text}))
    return spec, study


def test_figures_as_png_and_html(tmp_path):
    from detlab.sweep.plots import importance_evaluator, write_plots

    spec, study = _finished_study(tmp_path)
    results = write_plots(study, spec, str(tmp_path / "figs"))
    for name in (
        "optimization_history",
        "param_importances",
        "parallel_coordinate",
        "intermediate_values",
    ):
        assert results[name] == "written"
        assert (tmp_path / "figs" / f"{name}.png").stat().st_size > 1000
        assert "plotly.min.js" in (tmp_path / "figs" / f"{name}.html").read_text()
    assert (tmp_path / "figs" / "plotly.min.js").exists()
    importances = json.loads((tmp_path / "figs" / "param_importances.json").read_text())
    assert importances["evaluator"] == importance_evaluator()[0]
    assert set(importances["importances"]) == {LR, CLIP}
    one = _finished_study(tmp_path / "one", n=1)
    results = write_plots(one[1], one[0], str(tmp_path / "one" / "figs"))
    assert results["param_importances"].startswith("skipped: parameter importance needs")
    assert results["optimization_history"] == "written"


def test_eval_compare_reads_a_studys_trials(tmp_path, capsys):
    from detlab.evaluation.cli import main as eval_main

    _finished_study(tmp_path)
    assert eval_main(["--compare", str(tmp_path / "root")]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line[:4] in ("| 1 ", "| 2 ", "| 3 ")]
    # AP = 100 * lr + clip: t3 (0.02, 1.0) 3.0, t1 (0.02, 0.5) 2.5, t2 (0.01, 1.0) 2.0, t0 1.5
    assert [r[2].strip() for r in rows] == ["t3", "t1", "t2"]
    assert "| 4 | t0 |" in out


_CLAIM_LOOP = """
import json, sys
import optuna
from detlab.sweep.study import open_storage, resolve_storage
from detlab.sweep.study_trials import claim_waiting
storage = open_storage(resolve_storage(sys.argv[1], sys.argv[2]))
sid = storage.get_study_id_from_name("race")
got = []
while (t := claim_waiting(storage, sid)) is not None:
    got.append(t.number)
print(json.dumps(got))
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_processes_racing_for_waiting_trials_never_take_one_twice(tmp_path, kind):
    """Python's sqlite3 reads outside a transaction; without BEGIN IMMEDIATE two processes
    both switched the same WAITING trial to RUNNING (14 of 60 trials twice, before the fix)."""
    root = str(tmp_path)
    study = optuna.create_study(
        storage=open_storage(resolve_storage(kind, root)), study_name="race"
    )
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for _ in range(40):
        study.add_trial(
            create_trial(state=TrialState.WAITING, params={"x": 0.5}, distributions=dist)
        )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM_LOOP, kind, root], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    claims = [n for p in procs for n in json.loads(p.communicate(timeout=300)[0])]
    assert sorted(claims) == list(range(40))  # every trial once, none twice
