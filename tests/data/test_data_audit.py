"""tools/diagnose.py data audit: reader quirks, duplicates, sizes, train/test leaks."""

from __future__ import annotations

import json
import shutil

from detlab.config import get_cfg
from detlab.diagnostics import FAIL, PASS, WARN, run_diagnostics

SKIP = ("environment", "transforms", "model", "overfit", "dataloader")


def _checks(report) -> dict:
    return {c.name: c for c in report.checks if c.section == "data"}


def test_audit_finds_copies_across_splits_and_wrong_sizes(tmp_path, folders, forget):
    folders.build_quirky_voc(tmp_path / "voc")
    folders.build_quirky_yolo(tmp_path / "ships")
    val = tmp_path / "ships" / "images" / "val"
    shutil.copyfile(tmp_path / "voc" / "JPEGImages" / "000004.png", val / "v3.png")  # a leak
    coco = {
        "images": [{"id": 1, "file_name": "v1.png", "height": 41, "width": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "ship"}, {"id": 2, "name": "boat"}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    cfg = get_cfg()
    cfg.DATASETS.REGISTER = [
        {"name": "t_aud_tr", "format": "voc", "root": str(tmp_path / "voc"), "split": "train"},
        {"name": "t_aud_va", "format": "yolo", "root": str(tmp_path / "ships"), "split": "val"},
        {"name": "t_aud_co", "json_file": str(tmp_path / "c.json"), "image_root": str(val)},
    ]
    cfg.DATASETS.TRAIN = ("t_aud_tr",)
    cfg.DATASETS.TEST = ("t_aud_va", "t_aud_co")
    cfg.MODEL.FCOS.NUM_CLASSES = 2
    forget(["t_aud_tr", "t_aud_va", "t_aud_co"])
    checks = _checks(run_diagnostics(cfg, skip=SKIP))
    stale = checks["t_aud_tr (train) stale_filename"]
    assert stale.status == WARN and "1 annotation files name another image" in stale.detail
    assert stale.data == {"count": 1, "examples": ["Annotations/000002.xml says 000003.png"]}
    kinds = [n.split(") ", 1)[1] for n in checks if n.startswith("t_aud_tr (train) ")]
    assert {"missing_image", "nonfinite_box", "clipped_box", "size_mismatch"} <= set(kinds)
    assert checks["t_aud_va (test) missing_label"].status == WARN  # the copied v3.png
    dup = checks["t_aud_tr (train) duplicates"]
    assert dup.status == WARN and "000001.png = 000008.png" in dup.detail
    assert checks["t_aud_tr (train) image sizes"].status == PASS  # the reader used the headers
    sizes = checks["t_aud_co (test) image sizes"]
    assert sizes.status == WARN and "v1.png: 64x41 in the record, 64x40 in the file" in sizes.detail
    leak = checks["train/test leak"]
    assert leak.status == FAIL and leak.data["identical"] == 1
    assert "v3.png = 000004.png" in leak.detail
    val.joinpath("v3.png").unlink()
    checks = _checks(run_diagnostics(cfg, skip=SKIP))
    assert checks["train/test leak"].status == PASS
