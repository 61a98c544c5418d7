"""A stand-in for tools/train_net.py: same command line, instant, deterministic metrics.

It parses ``[--resume] [--num-gpus N] --config-file CFG KEY VALUE ...`` with detlab's own
config loader, writes ``config.yaml`` and ``final_metrics.json`` to ``OUTPUT_DIR`` and exits 0.
Metrics are simple functions of the config so tests can compute the expected ranking independently:
``AP = 100 * BASE_LR + CLIP_VALUE`` and ``APs = 10 * CLIP_VALUE - 1000 * BASE_LR``.
A ``BASE_LR`` above 0.5 makes it fail (exit 1) like a diverged run. Every call is appended
to ``$FAKE_TRAIN_CALLS`` when set; ``$FAKE_TRAIN_SLEEP`` seconds of sleep simulate work.
"""

import json
import os
import sys
import time

from detlab.config import load_config


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
    calls = os.environ.get("FAKE_TRAIN_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(
                json.dumps(
                    {
                        "output_dir": out,
                        "resume": resume,
                        "pid": os.getpid(),
                        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "omp": os.environ.get("OMP_NUM_THREADS"),
                        "num_gpus": num_gpus,
                        "extra": os.environ.get("SWEEP_TEST_VAR"),
                    }
                )
                + "\n"
            )
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    print(f"training in {out}", flush=True)
    sleep = float(os.environ.get("FAKE_TRAIN_SLEEP", "0"))
    if sleep:
        with open(os.path.join(out, "last_checkpoint"), "w") as f:
            f.write("model_0000000.pth")
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
    metrics = {
        "bbox": bbox,
        "best_iteration": cfg.SOLVER.MAX_ITER // 2,
        "iteration": cfg.SOLVER.MAX_ITER,
    }
    with open(os.path.join(out, "final_metrics.json"), "w") as f:
        json.dump(metrics, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
