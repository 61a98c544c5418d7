"""A stand-in for tools/train_net.py: same command line, instant, deterministic metrics.

It parses ``[--resume] [--num-gpus N] --config-file CFG KEY VALUE ...`` with detlab's own
config loader, writes ``config.yaml`` and ``final_metrics.json`` to ``OUTPUT_DIR`` and exits 0.
Metrics are simple functions of the config so tests can compute the expected ranking independently:
``AP = 100 * BASE_LR + CLIP_VALUE`` and ``APs = 10 * CLIP_VALUE - 1000 * BASE_LR``.
A ``BASE_LR`` above 0.5 makes it fail (exit 1) like a diverged run. Every call is appended
to ``$FAKE_TRAIN_CALLS`` when set; ``$FAKE_TRAIN_SLEEP`` seconds of sleep simulate work.

Inside a sweep study (the ``DETLAB_SWEEP_*`` environment, see ``detlab.sweep.trial_link``) it
behaves like the trainer with ``SweepPruningHook``: it "evaluates" every ``TEST.EVAL_PERIOD``
iterations, the metrics growing linearly to their final values (``value * step / MAX_ITER``),
reports each to the study and, when pruned, stops there with a checkpoint and
``stop_reason``. ``$FAKE_TRAIN_STEP_SLEEP`` seconds of sleep per evaluation period.
"""

import json
import os
import sys
import time

from detlab.config import load_config


def _record(out: str, resume: bool, num_gpus: int) -> None:
    calls = os.environ.get("FAKE_TRAIN_CALLS")
    if not calls:
        return
    with open(calls, "a") as f:
        f.write(
            json.dumps(
                {
                    "output_dir": out,
                    "resume": resume,
                    "pid": os.getpid(),
                    "ppid": os.getppid(),
                    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "omp": os.environ.get("OMP_NUM_THREADS"),
                    "num_gpus": num_gpus,
                    "extra": os.environ.get("SWEEP_TEST_VAR"),
                    "trial_id": os.environ.get("DETLAB_SWEEP_TRIAL_ID"),
                    "start": time.time(),
                }
            )
            + "\n"
        )


def _write(out: str, name: str, data) -> None:
    with open(os.path.join(out, name), "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def main(argv: list[str]) -> int:
    resume = "--resume" in argv
    argv = [a for a in argv if a != "--resume"]
    num_gpus = 1
    if argv[0] == "--num-gpus":
        num_gpus, argv = int(argv[1]), argv[2:]
    assert argv[0] == "--config-file", argv
    cfg = load_config(argv[1], argv[2:])
    out = cfg.OUTPUT_DIR
    os.makedirs(out, exist_ok=True)
    _record(out, resume, num_gpus)
    _write(out, "config.yaml", cfg.dump())
    print(f"training in {out}", flush=True)
    sleep = float(os.environ.get("FAKE_TRAIN_SLEEP", "0"))
    if sleep:
        _write(out, "last_checkpoint", "model_0000000.pth")
        time.sleep(sleep)
    lr = cfg.SOLVER.BASE_LR
    clip = cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE
    if lr > 0.5:
        print("FloatingPointError: loss became NaN at iteration 3", flush=True)
        return 1
    bbox = {
        "AP": 100 * lr + clip,
        "AP50": 100 * lr + clip + 20,
        "AP75": 100 * lr + clip - 5,
        "APs": 10 * clip - 1000 * lr,
        "APm": 40.0,
        "APl": 50.0,
    }
    max_iter = cfg.SOLVER.MAX_ITER
    metrics = {"bbox": bbox, "best_iteration": max_iter // 2, "iteration": max_iter - 1}
    pruned = _follow_study(cfg, out, bbox)
    if pruned is not None:
        step, partial = pruned
        metrics.update(bbox=partial, iteration=step - 1, stop_reason=f"pruned after {step}")
    _write(out, "final_metrics.json", metrics)
    return 0


def _follow_study(cfg, out: str, bbox: dict):
    """Report evaluations to the sweep study; ``(step, metrics)`` if pruned there, else None."""
    from detlab.sweep.trial_link import TrialLink

    link = TrialLink.from_env()
    period, max_iter = cfg.TEST.EVAL_PERIOD, cfg.SOLVER.MAX_ITER
    if link is None or period <= 0:
        return None
    step_sleep = float(os.environ.get("FAKE_TRAIN_STEP_SLEEP", "0"))
    for step in range(period, max_iter + 1, period):
        time.sleep(step_sleep)
        partial = {k: v * step / max_iter for k, v in bbox.items()}
        _write(out, "last_checkpoint", f"model_{step - 1:07d}.pth")
        if link.report(step, {"bbox": partial}, may_prune=step < max_iter):
            return step, partial
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
