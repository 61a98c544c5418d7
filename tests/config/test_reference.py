"""docs/config_reference.md lists every key with its default and stays current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from detlab.config import get_cfg
from detlab.config.reference import config_reference_markdown, key_descriptions

ROOT = Path(__file__).resolve().parents[2]


def test_reference_file_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_config_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_reference_lists_every_key_with_its_default():
    text = config_reference_markdown()
    cfg = get_cfg()
    for key in cfg.all_keys():
        assert f"| `{key}` |" in text, key
    assert "| `SOLVER.BASE_LR` | `0.01` |" in text


def test_descriptions_come_from_comments_at_the_defaults():
    described = key_descriptions()
    assert "1 for single-channel SAR" in described["MODEL.BACKBONE.IN_CHANNELS"]
    assert described["DATASETS.REGISTER"].startswith("Datasets registered from the config file")


def test_check_mode_detects_a_stale_file(tmp_path):
    stale = tmp_path / "ref.md"
    stale.write_text("# old\n")
    tool = str(ROOT / "tools" / "gen_config_reference.py")
    check = [sys.executable, tool, "--out", str(stale), "--check"]
    assert subprocess.run(check, capture_output=True).returncode == 1
    subprocess.run([sys.executable, tool, "--out", str(stale)], check=True, capture_output=True)
    assert subprocess.run(check, capture_output=True).returncode == 0
