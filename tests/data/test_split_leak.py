"""Splits without leaks: duplicates refused, identical files and group keys kept together."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from detlab.data import DatasetCatalog, MetadataCatalog
from detlab.data.split import split_coco, split_dataset_dicts
from detlab.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _coco_with_copies(root: Path, folders, n: int = 60) -> dict:
    """n images, every 10th a byte-identical copy of the previous one, 6 sequences."""
    images, anns = [], []
    for i in range(n):
        name = f"seq{i % 6}_{i:03d}.png"
        if i % 10 == 9:
            shutil.copyfile(root / images[-1]["file_name"], root / name)
        else:
            folders.write_image(root / name, 16, 16)
        images.append({"id": i + 1, "file_name": name, "height": 16, "width": 16, "video": i % 6})
        anns.append(
            {"id": i + 1, "image_id": i + 1, "category_id": 1 + (i % 7 == 0), "bbox": [1, 1, 4, 4]}
        )
    return {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}


def _where(parts: dict) -> dict[str, str]:
    return {im["file_name"]: name for name, p in parts.items() for im in p["images"]}


def test_identical_images_never_straddle_splits(tmp_path, folders):
    data = _coco_with_copies(tmp_path, folders)
    pairs = [
        (data["images"][i - 1]["file_name"], data["images"][i]["file_name"])
        for i in range(9, 60, 10)
    ]
    for seed in range(8):
        plan: list = []
        parts = split_coco(data, [0.5, 0.5], seed, image_root=str(tmp_path), plan=plan)
        where = _where(parts)
        assert len(where) == 60  # every image once
        assert all(where[a] == where[b] for a, b in pairs), seed
        assert plan[0].identical_groups == 6 and plan[0].identical_images == 12
    # without the images at hand the check cannot run, and says so
    with pytest.raises(UserError, match=r"60 of 60 images are missing under .*nowhere"):
        split_coco(data, [0.5, 0.5], image_root=str(tmp_path / "nowhere"))


def test_group_keys_keep_sequences_together(tmp_path, folders):
    data = _coco_with_copies(tmp_path, folders)
    for kw in ({"group_field": "video"}, {"group_pattern": r"^(seq\d+)_"}):
        parts = split_coco(data, [0.7, 0.3], 1, ["train", "val"], **kw)
        seq = {}
        for fname, name in _where(parts).items():
            seq.setdefault(fname.split("_")[0], set()).add(name)
        assert all(len(s) == 1 for s in seq.values()), kw
        assert parts["train"]["images"] and parts["val"]["images"]
    with pytest.raises(UserError, match="matches none of the file names"):
        split_coco(data, [0.7, 0.3], group_pattern=r"^frame_(\d+)")
    with pytest.raises(UserError, match="No image entry has the group field 'sequence'"):
        split_coco(data, [0.7, 0.3], group_field="sequence")


def test_duplicate_file_names_are_refused():
    images = [
        {"id": i, "file_name": n, "height": 8, "width": 8}
        for i, n in enumerate(["a.png", "b.png", "./a.png"])
    ]
    with pytest.raises(
        UserError, match=r"file_name \./a\.png is listed twice \(image id 0 and image id 2\)"
    ):
        split_coco({"images": images, "annotations": []}, [0.5, 0.5])


def test_split_script_keeps_copies_together(tmp_path, folders, capsys):
    data = _coco_with_copies(tmp_path, folders)
    (tmp_path / "all.json").write_text(json.dumps(data))
    spec = importlib.util.spec_from_file_location("split_coco", ROOT / "datasets" / "split_coco.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = ["--json", str(tmp_path / "all.json"), "--ratios", "0.5", "0.5",
            "--out-dir", str(tmp_path / "s"), "--group-pattern", r"^(seq\d+)_"]  # fmt: skip
    assert tool.main(argv) == 0
    out = capsys.readouterr().out
    assert "kept 6 groups of byte-identical images (12 images) within one split each" in out
    assert "kept 6 groups sharing a group key" in out
    parts = {n: json.loads((tmp_path / "s" / f"{n}.json").read_text()) for n in ("train", "val")}
    seqs = {n: {im["file_name"][:4] for im in p["images"]} for n, p in parts.items()}
    assert not seqs["train"] & seqs["val"]


def test_reader_split_option_from_the_config(tmp_path, folders, forget):
    from detlab.config import get_cfg
    from detlab.data import register_from_config

    folders.build_quirky_voc(tmp_path / "voc")
    cfg = get_cfg()
    cfg.DATASETS.REGISTER = [
        {"name": "t_vsplit", "format": "voc", "root": str(tmp_path / "voc"), "split": "train",
         "split_ratios": {"train": 0.5, "val": 0.5}, "split_seed": 3}
    ]  # fmt: skip
    forget(["t_vsplit", "t_vsplit_train", "t_vsplit_val"])
    assert register_from_config(cfg) == ["t_vsplit", "t_vsplit_train", "t_vsplit_val"]
    whole = {d["file_name"] for d in DatasetCatalog.get("t_vsplit")}
    train = {d["file_name"] for d in DatasetCatalog.get("t_vsplit_train")}
    val = {d["file_name"] for d in DatasetCatalog.get("t_vsplit_val")}
    assert train | val == whole and not train & val and len(whole) == 12
    assert len(train) >= 6 and len(val) >= 4
    copies = {str(tmp_path / "voc" / "JPEGImages" / f"00000{i}.png") for i in (1, 8)}
    assert copies <= train or copies <= val  # byte-identical pair in one part
    assert MetadataCatalog.get("t_vsplit_val").thing_classes == ["boat", "ship"]
    assert register_from_config(cfg) == []  # idempotent


def test_split_dataset_dicts_refuses_a_record_twice(tmp_path):
    dicts = [{"file_name": str(tmp_path / "a.png"), "annotations": []}] * 2
    with pytest.raises(UserError, match="listed twice"):
        split_dataset_dicts(dicts, [0.5, 0.5])
