"""tools/diagnose.py: passes on a healthy config, names the broken check otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detlab.diagnostics.cli import main as diagnose_main
from detlab.diagnostics.core import FAIL, PASS, WARN, Report
from detlab.diagnostics.environment import torchvision_matches
from detlab.diagnostics.workers import check_workers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "sar_ships_cpu.yaml")
FAST = ["--max-images", "4", "--overfit-steps", "40"]


def _run(argv, capsys):
    status = diagnose_main(argv)
    out = capsys.readouterr()
    return status, out


def _report(out) -> dict:
    return json.loads(out.out.strip().splitlines()[-1])


def _by_name(report: dict) -> dict:
    return {(c["section"], c["name"]): c for c in report["checks"]}


def test_quickstart_config_passes_on_a_tiny_dataset(tmp_path, tiny_coco, capsys):
    """The quick-start config, pointed at a tiny on-disk set (keeps the test fast)."""
    entry = {
        "name": "diag_qs_tiny",
        "json_file": tiny_coco,
        "image_root": os.path.dirname(tiny_coco),
    }
    overrides = [
        f"DATASETS.REGISTER=[{entry!r}]",
        "DATASETS.TRAIN", "('diag_qs_tiny',)",
        "DATASETS.TEST", "('diag_qs_tiny',)",
        "MODEL.FCOS.NUM_CLASSES", "2",
        "SOLVER.IMS_PER_BATCH", "2",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "DATALOADER.NUM_WORKERS", "1",
    ]  # fmt: skip
    status, out = _run(["--config-file", QUICKSTART, *overrides, "--json", *FAST], capsys)
    report = _report(out)
    failed = [c for c in report["checks"] if c["status"] == FAIL]
    assert status == 0 and report["ok"], failed
    sections = {c["section"] for c in report["checks"] if c["status"] == PASS}
    assert sections == {"environment", "data", "transforms", "model", "overfit", "dataloader"}
    checks = _by_name(report)
    classes = checks[("data", "diag_qs_tiny (train) classes")]["data"]
    assert classes["per_class"] == {"boat": 3, "buoy": 3}
    assert classes["per_size"] == {"small": 6, "medium": 0, "large": 0}
    assert checks[("model", "FLOPs")]["data"]["gflops"] > 0
    history = checks[("overfit", "one batch")]["data"]["history"]
    assert min(history) <= 0.4 * history[0]


def test_missing_images_fail_with_the_image_root_fix(tiny_config, make_tiny_coco, capsys):
    json_file = make_tiny_coco("broken", missing=(2, 4))
    argv = ["--config-file", tiny_config(json_file=json_file), "--json", *FAST]
    status, out = _run(argv, capsys)
    assert status == 1
    report = _report(out)
    assert not report["ok"]
    failed = [c for c in report["checks"] if c["status"] == FAIL]
    assert [(c["section"], c["name"].split(" (")[1]) for c in failed] == [
        ("data", "train) image files")
    ]
    (bad,) = failed
    assert "2 of 4 image files are missing" in bad["detail"]
    assert bad["data"]["first_missing"].endswith("002.png")
    assert "image_root" in bad["fix"]
    # checks that need the data are skipped, not failed
    checks = _by_name(report)
    assert checks[("transforms", "train mapper")]["status"] == "skip"
    assert checks[("dataloader", "workers")]["status"] == "skip"


def test_bad_key_is_one_line_and_exit_2(tiny_config, capsys):
    status, out = _run(["--config-file", tiny_config(), "SOLVER.BASE_LRR", "0.1"], capsys)
    assert status == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Unknown config key SOLVER.BASE_LRR" in lines[0]
    assert "SOLVER.BASE_LR" in lines[0].split("did you mean")[1]
    assert out.out == ""


def test_text_report_marks_each_failure_with_a_fix(tiny_config, capsys):
    argv = ["--config-file", tiny_config(), "DATASETS.TRAIN", "('no_such_set',)"]
    status, out = _run([*argv, "--skip", "environment", *FAST], capsys)
    assert status == 1
    text = out.out
    assert "✗ no_such_set (train): dataset 'no_such_set' is not registered" in text
    assert "fix: register it under DATASETS.REGISTER" in text
    assert "Some checks FAILED" in text


def test_too_few_model_classes_fail(tiny_config, capsys):
    argv = ["--config-file", tiny_config(), "MODEL.FCOS.NUM_CLASSES", "1", "--json"]
    status, out = _run([*argv, "--skip", "environment", "dataloader", *FAST], capsys)
    assert status == 1
    (bad,) = [c for c in _report(out)["checks"] if c["status"] == FAIL]
    assert bad["section"] == "data" and "MODEL.FCOS.NUM_CLASSES 2" in bad["fix"]


def test_overfit_check_fails_when_the_model_cannot_learn(tiny_config, capsys):
    argv = ["--config-file", tiny_config(), "--json", "--skip", "environment", "dataloader"]
    argv += ["--max-images", "2", "--overfit-steps", "4", "--overfit-lr", "0"]
    status, out = _run(argv, capsys)
    assert status == 1
    (bad,) = [c for c in _report(out)["checks"] if c["status"] == FAIL]
    assert bad["section"] == "overfit" and "cannot fit one batch" in bad["fix"]
    assert len(bad["data"]["history"]) == 4


class _DeadWorkersLoader:
    """Stands in for a loader whose workers died: it fell back to in-process loading."""

    def __init__(self, cfg):
        import logging

        logging.getLogger("detlab.data.build").warning(
            "DataLoader worker processes failed (ConnectionResetError); continuing in-process"
        )

    def __iter__(self):
        while True:
            yield [{}, {}]

    def stats(self):
        return {"worker_failures": 1, "skipped_images": 0}


def test_worker_fallback_is_a_warning_that_says_so():
    from detlab.config import get_cfg

    cfg = get_cfg()
    report = Report()
    check_workers(cfg, report, timeout=10, make_loader=_DeadWorkersLoader)
    (check,) = report.checks
    assert check.status == WARN and report.ok
    assert "fell back to in-process loading" in check.detail
    assert "ConnectionResetError" in check.detail
    assert "NUM_WORKERS 0" in check.fix


def test_worker_hang_fails_after_the_timeout():
    from detlab.config import get_cfg

    class Hung:
        def __init__(self, cfg):
            pass

        def __iter__(self):
            import time

            time.sleep(30)
            yield []

    report = Report()
    check_workers(get_cfg(), report, timeout=0.5, make_loader=Hung)
    assert report.checks[0].status == FAIL and "no batch within" in report.checks[0].detail


@pytest.mark.parametrize(
    ("torch_v", "tv_v", "ok"),
    [("2.14.1", "0.29.1", True), ("2.4.0+cu121", "0.19.0", True), ("2.4.0", "0.18.1", False)],
)
def test_torchvision_pairs(torch_v, tv_v, ok):
    assert torchvision_matches(torch_v, tv_v) is ok


def test_cli_exit_status_from_a_subprocess(tiny_config):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "diagnose.py"), "--config-file",
         tiny_config(), "MODEL.DEVICE", "cuda:7", "--skip", "data", "transforms", "model",
         "overfit", "dataloader"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "✗ device: " in proc.stdout and "cuda:7" in proc.stdout
    assert "fix: " in proc.stdout.split("Summary:")[1]


def test_schedule_that_cannot_act_is_a_warning(tmp_path):
    from detlab.config import get_cfg
    from detlab.diagnostics.environment import check_run_settings

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "not" / "yet")
    cfg.SOLVER.MAX_ITER = 100
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.STEPS = (50, 200)
    report = Report()
    check_run_settings(cfg, report)
    out, schedule = report.checks
    assert out.status == PASS and out.data["free_gb"] > 0
    assert schedule.status == WARN and "(200,)" in schedule.detail and report.ok
    cfg.SOLVER.STEPS = (50, 80)
    report = Report()
    check_run_settings(cfg, report)
    assert report.checks[1].status == PASS


def test_workers_start_after_opencv_ran_multithreaded_in_this_process(tiny_config):
    """Forked workers inherit OpenCV's thread pool; without care they hang on first use."""
    import cv2
    import numpy as np

    from detlab.config import load_config
    from detlab.data import register_from_config

    cfg = load_config(tiny_config(), ["DATALOADER.NUM_WORKERS", "1"])
    register_from_config(cfg)
    threads = cv2.getNumThreads()
    img = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)
    for _ in range(3):  # large enough for OpenCV to use its thread pool
        cv2.warpAffine(img, np.float32([[1, 0.1, 0], [0.1, 1, 0]]), (1500, 1500))
    report = Report()
    check_workers(cfg, report, timeout=45)
    assert report.checks[0].status == PASS, report.checks[0].detail
    assert cv2.getNumThreads() == threads  # restored


def test_skip_sections_then_overrides(tiny_config, capsys):
    argv = ["--config-file", tiny_config(), "--skip", "data,transforms", "model", "overfit"]
    argv += ["dataloader", "MODEL.DEVICE", "cuda:7", "--json"]
    status, out = _run(argv, capsys)
    checks = _by_name(_report(out))
    assert checks[("data", "all checks")]["status"] == "skip"
    assert "cuda:7" in checks[("environment", "device")]["detail"]  # the override was applied
    with pytest.raises(SystemExit) as exc:  # argparse usage errors exit directly
        diagnose_main(["--config-file", tiny_config(), "--skip", "modle"])
    assert exc.value.code == 2 and "unknown section 'modle'" in capsys.readouterr().err
