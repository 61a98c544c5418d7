"""Sweep efficiency: ASHA pruning against the full grid, on the CPU quick-start recipe.

Runs one 12-point grid (base LR × gradient clipping × FPN scales) of short fine-tuning trials
of ``configs/quickstart/sar_ships_cpu.yaml`` twice through ``tools/sweep.sh`` as Optuna studies:

* ``grid``: every trial trains to the end (no pruner);
* ``asha``: the same trials, in the same order, with the successive-halving pruner (ASHA)
  fed by the periodic evaluations (``min_resource`` = ``TEST.EVAL_PERIOD``).

Every trial starts from the same checkpoint: the quick-start recipe trained for
``--pretrain-iters`` (200) iterations, made once by this script (weights that do not fit a
trial's FPN, e.g. the stride-32 level, start fresh) — as sweeps on real data start from
pretrained weights. From scratch, the first ~50 iterations of a 2-core-sized trial give AP 0.0
for every configuration, which no pruner can rank. Trials are seeded and train identically in
both studies until ASHA stops one, so the comparison is about the pruner alone. The figures
are the best ``bbox/AP`` of each study, their difference (target: ASHA within 1 AP of the
grid's best) and the training iterations each spent, summed over trials (target: ASHA ≤ 40 %
of the grid's). Iterations, not seconds, are
what is compared: evaluation time and machine load do not enter; wall times are printed for
information. To keep a run near an hour on a shared 2-core machine, trials are evaluated on the
first ``--val-images`` (50) of the 200 validation chips (a subset registered through
``DATASETS.REGISTER``). Re-running continues the two studies (finished trials are not trained
again), so the report can be regenerated for free.

Usage::

    python benchmarks/sweep_efficiency.py [--iters 90] [--eval-period 10] [--reduction-factor 3]
        [--pretrain-iters 200] [--val-images 50] [--out output/benchmarks/sweep_efficiency]
        [--json result.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "quickstart" / "sar_ships_cpu.yaml"

#: The 12-point space: 3 base LRs x 2 gradient-clipping norms x 2 FPN scale sets (strides
#: 4/8/16 as in the quick start, or 8/16/32).
PARAMETERS = {
    "SOLVER.BASE_LR": [0.01, 0.02, 0.04],
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": [1.0, 10.0],
    "MODEL.FPN.IN_STAGES": [[1, 2, 3], [2, 3, 4]],
}


def val_subset(out: Path, n: int) -> dict:
    """A ``DATASETS.REGISTER`` entry for the first ``n`` quick-start validation images."""
    from detlab.data import MetadataCatalog

    meta = MetadataCatalog.get("sar_ships_synth_val")  # generates the set on first use
    coco = json.loads(Path(meta.json_file).read_text())
    images = sorted(coco["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in images}
    coco["images"] = images
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    path = out / f"sar_ships_synth_val_first{n}.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    name = f"sar_ships_synth_val_first{n}"
    return {"name": name, "json_file": str(path), "image_root": str(meta.image_root)}


def pretrain(out: Path, iters: int, val: dict | None) -> Path:
    """The quick-start recipe trained for ``iters`` iterations (once): the trials' start."""
    run = out / "pretrain"
    final = run / "model_final.pth"
    if final.is_file():
        return final
    opts = {
        "SOLVER.MAX_ITER": iters,
        "SOLVER.STEPS": [],
        "SOLVER.WARMUP_ITERS": max(1, iters // 4),
        "SOLVER.CHECKPOINT_PERIOD": iters,
        "TEST.EVAL_PERIOD": 0,
        "LOGGING.TENSORBOARD": False,
        "OUTPUT_DIR": str(run),
    }
    if val is not None:
        opts.update({"DATASETS.REGISTER": [val], "DATASETS.TEST": [val["name"]]})
    cmd = [sys.executable, str(ROOT / "tools" / "train_net.py"), "--config-file", str(BASE)]
    for key, value in opts.items():
        cmd += [key, repr(value) if not isinstance(value, str) else value]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return final


def write_spec(
    out: Path, kind: str, iters: int, period: int, rf: int, val: dict | None, weights: Path
) -> Path:
    """A sweep spec for ``kind`` (``grid`` or ``asha``) in ``out/<kind>``."""
    steps = [int(iters * 500 / 700) // 5 * 5, int(iters * 650 / 700) // 5 * 5]
    fixed = {
        "MODEL.WEIGHTS": str(weights),
        "SOLVER.MAX_ITER": iters,
        "SOLVER.STEPS": steps,
        "SOLVER.WARMUP_ITERS": max(1, iters // 9),
        "SOLVER.CHECKPOINT_PERIOD": iters,  # the pruner's stop saves its own checkpoint
        "TEST.EVAL_PERIOD": period,
        "LOGGING.TENSORBOARD": False,
    }
    if val is not None:
        fixed.update({"DATASETS.REGISTER": [val], "DATASETS.TEST": [val["name"]]})
    study: dict = {"name": f"sweep_efficiency_{kind}"}
    if kind == "asha":
        study["pruner"] = {"type": "asha", "min_resource": period, "reduction_factor": rf}
    spec = {
        "base_config": str(BASE),
        "fixed": fixed,
        "method": "grid",
        "parameters": PARAMETERS,
        "metric": "bbox/AP",
        "mode": "max",
        "output_root": str(out / kind),
        "name_template": "{index:02d}_lr{BASE_LR}_clip{CLIP_VALUE}_fpn{IN_STAGES}",
        "study": study,
    }
    path = out / f"{kind}.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(spec: Path) -> float:
    """Run the spec's study with one worker through tools/sweep.sh; wall seconds."""
    start = time.monotonic()
    subprocess.run(
        ["bash", str(ROOT / "tools" / "sweep.sh"), str(spec), "--workers", "1"], check=True
    )
    return time.monotonic() - start


def read_rows(root: Path) -> list[dict]:
    with open(root / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def summarise(rows: list[dict]) -> dict:
    done = [r for r in rows if r["status"] in ("finished", "pruned")]
    finished = [r for r in rows if r["status"] == "finished"]
    best = max(finished, key=lambda r: float(r["AP"]), default=None)
    return {
        "trials": len(rows),
        "finished": len(finished),
        "pruned": sum(r["status"] == "pruned" for r in rows),
        "not_done": len(rows) - len(done),
        "iterations": sum(int(r["iterations"] or 0) for r in done),
        "best_AP": float(best["AP"]) if best else None,
        "best_trial": best["name"] if best else None,
    }


def replay(out: Path, period: int, iters: int) -> list[dict]:
    """Other pruners on the grid's recorded learning curves, without training.

    Trials are deterministic (fixed seed, one thread), so a pruned trial's curve up to its stop
    is the grid trial's curve: feeding the grid's evaluations, in trial order, to a pruner gives
    the decisions a live run with that pruner would make. Rows: pruner, iterations share, best
    AP found, gap to the grid's best.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{out / 'grid' / 'study.db'}"
    grid = optuna.load_study(study_name="sweep_efficiency_grid", storage=storage)
    trials = sorted((t for t in grid.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
    best = max(t.value for t in trials)
    pruners = {"median (n_startup_trials=1)": lambda: optuna.pruners.MedianPruner(1)}
    for rf in (2, 3, 4):
        for k in (1, 2, 3):
            pruners[f"asha (reduction_factor={rf}, min_resource={k * period})"] = (
                lambda rf=rf, k=k: optuna.pruners.SuccessiveHalvingPruner(k * period, rf)
            )
    pruners[f"hyperband (min_resource={period}, max_resource={iters})"] = lambda: (
        optuna.pruners.HyperbandPruner(period, iters, 3)
    )
    rows = []
    for name, make in pruners.items():
        # A fixed name: Hyperband assigns brackets by a hash of study name and trial number.
        study = optuna.create_study(direction="maximize", pruner=make(), study_name=name)
        spent, found = 0, None
        for t in trials:
            trial = study.ask()
            for step, value in sorted(t.intermediate_values.items()):
                trial.report(value, step)
                if step < iters and trial.should_prune():
                    break
            spent += step
            if step < iters:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, t.value)
                found = t.value if found is None else max(found, t.value)
        share = spent / (iters * len(trials))
        rows.append({"pruner": name, "share": share, "best_AP": found, "gap": best - found})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=90, help="SOLVER.MAX_ITER of a trial")
    parser.add_argument("--eval-period", type=int, default=10, help="TEST.EVAL_PERIOD")
    parser.add_argument(
        "--pretrain-iters", type=int, default=200, help="iterations of the shared start"
    )
    parser.add_argument(
        "--val-images", type=int, default=50, help="validation chips evaluated (0 = all 200)"
    )
    parser.add_argument("--reduction-factor", type=int, default=3, help="ASHA's eta")
    parser.add_argument("--out", default="output/benchmarks/sweep_efficiency")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--only", choices=("grid", "asha"), help="run one of the two studies")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="also replay the grid's curves through other pruners (no training)",
    )
    args = parser.parse_args()

    out = Path(args.out).resolve()
    val = val_subset(out, args.val_images) if args.val_images else None
    weights = pretrain(out, args.pretrain_iters, val)
    wall = {}
    for kind in ("grid", "asha"):
        spec = write_spec(
            out, kind, args.iters, args.eval_period, args.reduction_factor, val, weights
        )
        if args.only in (None, kind):
            wall[kind] = run_sweep(spec)
    grid, asha = summarise(read_rows(out / "grid")), summarise(read_rows(out / "asha"))
    gap = None
    if grid["best_AP"] is not None and asha["best_AP"] is not None:
        gap = grid["best_AP"] - asha["best_AP"]
    share = asha["iterations"] / grid["iterations"] if grid["iterations"] else None
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "space": {k: v for k, v in PARAMETERS.items()},
        "iters": args.iters,
        "eval_period": args.eval_period,
        "reduction_factor": args.reduction_factor,
        "val_images": args.val_images or 200,
        "pretrain_iters": args.pretrain_iters,
        "grid": grid,
        "asha": asha,
        "ap_gap": gap,
        "iteration_share": share,
        "wall_s": wall,
        "targets_met": gap is not None and share is not None and gap <= 1.0 and share <= 0.40,
    }
    print("| study | trials finished / pruned | best AP | best trial | iterations |")
    print("|---|---|---:|---|---:|")
    for kind, s in (("grid", grid), ("asha", asha)):
        best = "n/a" if s["best_AP"] is None else f"{s['best_AP']:.2f}"
        print(
            f"| {kind} | {s['finished']} / {s['pruned']} | {best} | {s['best_trial']} | "
            f"{s['iterations']} |"
        )
    if gap is not None and share is not None:
        print(
            f"ASHA's best is {gap:.2f} AP below the grid's (target <= 1.00) after "
            f"{100 * share:.1f} % of the grid's iterations (target <= 40 %)."
        )
    if args.replay:
        result["replay"] = replay(out, args.eval_period, args.iters)
        print("\n| pruner (replayed on the grid's curves) | iterations | best AP | gap |")
        print("|---|---:|---:|---:|")
        for row in result["replay"]:
            print(
                f"| {row['pruner']} | {100 * row['share']:.1f} % | {row['best_AP']:.2f} | "
                f"{row['gap']:.2f} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
