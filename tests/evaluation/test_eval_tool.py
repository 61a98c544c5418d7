"""tools/eval.py: results-file mode, compare mode and bad inputs, end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from detlab.evaluation import evaluate_coco
from detlab.evaluation.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "eval.py")


@pytest.fixture
def files(coco_factory, tmp_path):
    gt, dets = coco_factory(21, num_images=15)
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(dets))
    return gt, dets, str(gt_path), str(pred_path)


def test_results_file_mode_end_to_end_without_torch(files, tmp_path):
    gt, dets, gt_path, pred_path = files
    out = tmp_path / "out"
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['eval.py', '--gt', {gt_path!r}, '--pred', {pred_path!r}, '--out', "
        f"{str(out)!r}, '--area-ranges', 'tiny:0:256,small:256:1024,medium:1024:9216,"
        "large:9216:inf']\n"
        "try:\n"
        f"    runpy.run_path({TOOL!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False" in proc.stdout
    assert "Per class, worst" in proc.stdout and "APtiny" in proc.stdout
    assert "APtiny-cls0" in json.loads((out / "metrics.json").read_text())["bbox"]
    for name in ("metrics.json", "per_class.csv", "report.md", "pr_curves.png", "size_ap.png",
                 "confusion_matrix.png", "confusion_matrix.csv"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())["bbox"]
    ref = evaluate_coco(gt, dets, area_ranges="tiny:0:256,small:256:1024,medium:1024:9216,"
                        "large:9216:inf").results()  # fmt: skip
    for key, value in ref.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == [c["name"] for c in gt["categories"]]
    assert float(rows[0]["AP"]) == pytest.approx(metrics["AP-cls0"])
    assert rows[-1]["AP"] == ""  # the class without ground truth


def test_pycocotools_backend_and_thresholds(files, tmp_path, capsys):
    _, _, gt_path, pred_path = files
    out = tmp_path / "o"
    args = ["--gt", gt_path, "--pred", pred_path, "--out", str(out), "--no-plots"]
    assert main([*args, "--backend", "pycocotools", "--score-thresh", "0.9"]) == 0
    strict = json.loads((out / "metrics.json").read_text())["bbox"]
    assert main([*args, "--score-thresh", "0.1"]) == 0
    loose = json.loads((out / "metrics.json").read_text())["bbox"]
    assert strict["AP"] == pytest.approx(loose["AP"])  # AP does not depend on the threshold
    assert strict["recall-cls0"] < loose["recall-cls0"]
    assert not (out / "pr_curves.png").exists()
    assert "score >= 0.1" in capsys.readouterr().out


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_ids_are_named(files, tmp_path, capsys):
    _, dets, gt_path, _ = files
    bad = [dict(d) for d in dets]
    bad[0]["image_id"] = 99991
    bad[1]["image_id"] = 99992
    bad[2]["category_id"] = 555
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    err = _err(capsys, ["--gt", gt_path, "--pred", str(path)])
    assert "99991" in err and "99992" in err and "555" in err and str(path) in err


def test_empty_predictions_warn_and_give_zeros(files, tmp_path, capsys):
    _, _, gt_path, _ = files
    path = tmp_path / "empty.json"
    path.write_text("[]")
    assert main(["--gt", gt_path, "--pred", str(path), "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "warning: The predictions hold no detections" in captured.err
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())["bbox"]
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0


def test_malformed_json_names_file_and_position(files, tmp_path, capsys):
    _, _, gt_path, _ = files
    path = tmp_path / "broken.json"
    path.write_text('[{"image_id": 100, "bbox": [1, 2, 3, 4],\n "score": }]')
    err = _err(capsys, ["--gt", gt_path, "--pred", str(path)])
    assert str(path) in err and "line 2" in err and "column" in err


def test_wrong_bbox_shape_names_the_record(files, tmp_path, capsys):
    _, dets, gt_path, _ = files
    bad = [dict(d) for d in dets]
    bad[7]["bbox"] = [1.0, 2.0, 3.0]
    path = tmp_path / "shape.json"
    path.write_text(json.dumps(bad))
    err = _err(capsys, ["--gt", gt_path, "--pred", str(path)])
    assert "record 7" in err and "[1.0, 2.0, 3.0]" in err


def test_other_bad_invocations(files, tmp_path, capsys):
    _, _, gt_path, pred_path = files
    assert "does not exist" in _err(capsys, ["--gt", gt_path, "--pred", str(tmp_path / "no")])
    assert "Choose one mode" in _err(capsys, [])
    assert "go together" in _err(capsys, ["--gt", gt_path])
    assert "Area range" in _err(capsys, ["--gt", gt_path, "--pred", pred_path,
                                         "--area-ranges", "tiny:0"])  # fmt: skip
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _err(capsys, ["--gt", gt_path, "--pred", pred_path, "--out", str(blocker / "sub")])
    assert "output folder" in err
    assert "output folder" in _err(capsys, ["--compare", gt_path, "--out", str(blocker / "s")])
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "COCO object" in _err(capsys, ["--gt", str(tmp_path / "list.json"), "--pred", pred_path])


def _run_dir(root, name, ap, aps, **extra):
    d = root / name
    d.mkdir()
    box = {"AP": ap, "AP50": ap + 20, "AP75": ap + 1, "APs": aps, "APm": ap, "APl": ap + 5,
           "AP-ship": ap, **extra}  # fmt: skip
    (d / "final_metrics.json").write_text(json.dumps({"bbox": box, "iteration": 100}))
    return str(d)


def test_compare_runs_and_baselines(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    a = _run_dir(runs, "fpn3", 34.5, 17.9)
    b = _run_dir(runs, "fpn4", 33.0, 18.5)
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"bbox": {"AP": 30.0, "AP50": 50.0}}))
    (tmp_path / "refs.yaml").write_text(
        "baselines:\n  - {name: 3-scale baseline, AP: 34.02, APs: 17.28}\n"
        "  - {name: published, AP: 36.1, AP50: 55.0, APs: null}\n"
    )
    out = tmp_path / "board"
    argv = ["--compare", a, b, f"old={metrics_file}", "--baselines", str(tmp_path / "refs.yaml"),
            "--baseline", "3-scale baseline", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    md = capsys.readouterr().out
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    names = [ln.split("|")[2].strip() for ln in lines[1:]]
    assert names == ["published", "fpn3", "3-scale baseline", "fpn4", "old"]
    assert "delta-APs" in lines[0]
    fpn3 = next(ln for ln in lines if "| fpn3 |" in ln)
    assert "+0.48" in fpn3 and "+0.62" in fpn3  # AP and APs deltas against the baseline
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[1]["name"] == "fpn3" and float(rows[1]["delta-AP"]) == pytest.approx(0.48)
    assert (out / "leaderboard.md").read_text() == md.split("\nWrote")[0]


def test_compare_bad_inputs(tmp_path, capsys):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert "has no final_metrics.json" in _err(capsys, ["--compare", str(empty)])
    run = _run_dir(tmp_path, "r", 30.0, 10.0)
    assert "Baseline 'nope'" in _err(capsys, ["--compare", run, "--baseline", "nope"])
    (tmp_path / "bad.yaml").write_text("baselines:\n  - {name: x, AP: high}\n")
    err = _err(capsys, ["--compare", run, "--baselines", str(tmp_path / "bad.yaml")])
    assert "'x' has AP = 'high'" in err


def test_parallel_workers_give_identical_outputs(files, tmp_path, capsys):
    _, _, gt_path, pred_path = files
    outs = {}
    for workers in ("1", "3"):
        out = tmp_path / f"w{workers}"
        argv = ["--gt", gt_path, "--pred", pred_path, "--out", str(out), "--workers", workers]
        assert main(argv) == 0
        for name in ("pr_curves.png", "size_ap.png", "confusion_matrix.png"):
            assert (out / name).stat().st_size > 0, name
        outs[workers] = {
            name: (out / name).read_text()
            for name in ("metrics.json", "per_class.csv", "report.md", "confusion_matrix.csv")
        }
    assert outs["1"] == outs["3"]
    assert "at least 1" in _err(capsys, ["--gt", gt_path, "--pred", pred_path, "--workers", "0"])


def test_compare_ranks_an_unfinished_run_by_its_last_evaluation(tmp_path, capsys):
    done = _run_dir(tmp_path, "done", 30.0, 10.0)
    running = tmp_path / "running"
    running.mkdir()
    rows = [
        {"iteration": 9, "total_loss": 1.0, "bbox/AP": 20.0, "bbox/APs": 5.0},
        {"iteration": 19, "total_loss": 0.8, "bbox/AP": 35.0, "bbox/APs": 12.0, "bbox/AP-a/b": 1},
        {"iteration": 21, "total_loss": 0.7},
    ]
    lines = [json.dumps(r) for r in rows] + ['{"iteration": 22, "tot']  # cut by a kill
    (running / "metrics.jsonl").write_text("\n".join(lines))
    assert main(["--compare", done, str(running)]) == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    names = [ln.split("|")[2].strip() for ln in table[1:]]
    assert names == ["running", "done"]  # ranked by AP 35 > 30
    assert "unfinished (last evaluation at iteration 19)" in table[1] and "35.00" in table[1]
