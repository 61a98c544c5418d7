"""Leaderboard sorting, deltas against a baseline, markdown and CSV rendering."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest

from detlab.evaluation.leaderboard import leaderboard_rows, to_markdown, write_csv
from detlab.utils.errors import UserError

ENTRIES = [
    {"name": "a", "lr": 0.01, "AP": 30.0, "AP50": 50.0, "APs": 10.0, "status": "ok"},
    {"name": "b", "lr": 0.02, "AP": 34.02, "AP50": 55.5, "APs": 17.28, "status": "ok"},
    {"name": "c", "lr": 0.05, "status": "failed"},
    {"name": "d", "lr": 0.001, "AP": 31.5, "AP50": float("nan"), "status": "ok"},
]


def test_sorted_best_first_with_missing_last():
    rows = leaderboard_rows(ENTRIES)
    assert [r["name"] for r in rows] == ["b", "d", "a", "c"]
    assert [r["rank"] for r in rows] == [1, 2, 3, None]
    rows = leaderboard_rows(ENTRIES, metric="APs", mode="min")
    assert [r["name"] for r in rows] == ["a", "b", "c", "d"]
    # the inputs are not modified
    assert "rank" not in ENTRIES[0]


def test_deltas_against_baseline():
    rows = leaderboard_rows(ENTRIES, baseline="a")
    by = {r["name"]: r for r in rows}
    assert by["b"]["delta-AP"] == pytest.approx(4.02)
    assert by["b"]["delta-APs"] == pytest.approx(7.28)
    assert by["a"]["delta-AP"] == 0.0
    assert by["c"]["delta-AP"] is None
    assert by["d"]["delta-AP50"] is None  # NaN counts as missing
    assert "delta-lr" not in by["b"]  # parameters are not metrics
    rows = leaderboard_rows(ENTRIES, baseline="a", delta_columns=["lr"])
    assert rows[0]["delta-lr"] == pytest.approx(0.01)


def test_bad_baseline_and_mode():
    with pytest.raises(UserError, match="Baseline 'zzz'"):
        leaderboard_rows(ENTRIES, baseline="zzz")
    with pytest.raises(UserError, match="mode"):
        leaderboard_rows(ENTRIES, mode="best")


def test_markdown_table():
    rows = leaderboard_rows(ENTRIES, baseline="a")
    md = to_markdown(rows, ["rank", "name", "AP", "delta-AP", "status"])
    lines = md.strip().splitlines()
    assert lines[0] == "| rank | name | AP | delta-AP | status |"
    assert lines[1] == "|---:|---|---:|---:|---|"
    assert lines[2] == "| 1 | b | 34.02 | +4.02 | ok |"
    assert lines[5] == "|  | c |  |  | failed |"
    assert len(lines) == 2 + len(ENTRIES)
    assert "\\|" in to_markdown([{"name": "x|y"}], ["name"])


def test_csv_roundtrip(tmp_path):
    rows = leaderboard_rows(ENTRIES, baseline="a")
    path = tmp_path / "sub" / "board.csv"
    cols = ["name", "AP", "AP50", "delta-AP", "status", "missing"]
    write_csv(rows, cols, path)
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["name"] for r in read] == ["b", "d", "a", "c"]
    assert math.isclose(float(read[0]["AP"]), 34.02)
    assert math.isclose(float(read[0]["delta-AP"]), 4.02)
    assert read[1]["AP50"] == "" and read[3]["AP"] == "" and read[0]["missing"] == ""


def test_leaderboard_imports_no_torch():
    code = "import sys, detlab.evaluation.leaderboard; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
