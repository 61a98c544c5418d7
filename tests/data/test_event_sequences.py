"""Event recordings as datasets: window grid, labels at window ends, stream/random/mixed
sampling (contiguous clips, first-window flags, exact resume), test streams, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detlab.config import get_cfg
from detlab.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detlab.data.datasets.events import (
    IMAGE_ID_STRIDE,
    register_event_sequences,
    window_grid,
)
from detlab.data.datasets.quirks import dataset_quirks
from detlab.data.events import BBOX_DTYPE, save_labels, write_dat, write_npy
from detlab.data.sequence_samplers import SequenceBatchStream, SequenceLayout, split_pieces
from detlab.utils.errors import UserError

H, W = 24, 32


def _record(path, t_end_us, seed, fmt="npy", rate=20000):
    rng = np.random.default_rng(seed)
    n = int(rate * t_end_us / 1e6)
    t = np.sort(rng.integers(0, t_end_us, n))
    args = (rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n), t, H, W)
    (write_npy if fmt == "npy" else write_dat)(str(path), *args)


def _labels(rows):
    arr = np.zeros(len(rows), BBOX_DTYPE)
    for i, r in enumerate(rows):
        arr[i] = r
    return arr


@pytest.fixture
def recordings(tmp_path):
    """Three recordings of 1 s (npy, dat, npy); labels every 50 ms on the first two."""
    root = tmp_path / "split"
    root.mkdir()
    for i, fmt in enumerate(["npy", "dat", "npy"]):
        _record(root / f"rec{i}_td.{fmt}", 1_000_000, seed=i, fmt=fmt)
    rows = [(t, 2, 3, 8, 6, 1, 7, 1.0) for t in range(100_000, 1_000_001, 50_000)]
    save_labels(str(root / "rec0_bbox.npy"), _labels(rows))
    # rec1: sparse labels with gaps, an off-grid time, two times in one window, wild boxes
    rows = [
        (100_000, -4, 5, 10, 10, 0, 1, 1.0),  # reaches left of the sensor: clipped
        (130_000, 1, 1, 5, 5, 1, 2, 1.0),  # same window as 150 ms... but the later one wins
        (150_000, 3, 3, 6, 6, 0, 3, 1.0),
        (150_000, 30, 20, 0, 4, 1, 4, 1.0),  # zero width: dropped
        (150_000, 10, 10, 4, 4, 9, 5, 1.0),  # class 9 unknown: dropped
        (700_000, 5, 5, 5, 5, 1, 6, 1.0),  # after a long gap
    ]
    save_labels(str(root / "rec1_bbox.npy"), _labels(rows))
    names = []

    def register(name="evseq", **kw):
        kw.setdefault("sensor_size", (H, W))
        register_event_sequences(name, str(root), ["a", "b"], window_us=50_000, **kw)
        names.append(name)
        return name

    yield register
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)
        from detlab.data.datasets.events import forget_event_dataset

        forget_event_dataset(n)


def test_window_grid_anchors_on_first_label():
    ends = window_grid(0, 999_999, np.array([100_000, 150_000]), 50_000)
    assert ends[0] == 50_000 and ends[-1] == 1_000_000 and np.all(np.diff(ends) == 50_000)
    assert 100_000 in ends and 150_000 in ends
    off = window_grid(1_000, 500_000, np.array([130_000]), 50_000)
    assert 130_000 in off and off[0] == 30_000 and off[-1] >= 500_001
    assert window_grid(500, 1_000, np.zeros(0), 300)[0] == 800  # no labels: first event + dt


def test_dicts_windows_labels_and_ids(recordings):
    dicts = DatasetCatalog.get(recordings())
    assert [d["sequence"] for d in dicts[:1]] == ["rec0_td.npy"]
    by_seq = {}
    for d in dicts:
        by_seq.setdefault(d["sequence"], []).append(d)
    assert list(by_seq) == ["rec0_td.npy", "rec1_td.dat", "rec2_td.npy"]
    r0 = by_seq["rec0_td.npy"]
    assert [d["window_index"] for d in r0] == list(range(len(r0)))
    assert all(d["t_end_us"] - d["t_start_us"] == 50_000 for d in r0)
    labelled = [d for d in r0 if d["labelled"]]
    assert [d["t_end_us"] for d in labelled] == list(range(100_000, 1_000_001, 50_000))
    assert all(d["label_t_us"] == d["t_end_us"] for d in labelled)
    assert labelled[0]["annotations"][0]["bbox"] == [2.0, 3.0, 8.0, 6.0]
    assert labelled[0]["annotations"][0]["category_id"] == 1
    assert all(
        d["image_id"] == d["sequence_id"] * IMAGE_ID_STRIDE + d["window_index"] for d in dicts
    )
    assert len({d["image_id"] for d in dicts}) == len(dicts)
    r1 = {d["t_end_us"]: d for d in by_seq["rec1_td.dat"] if d["labelled"]}
    assert sorted(r1) == [100_000, 150_000, 700_000]
    assert r1[100_000]["annotations"][0]["bbox"] == [0.0, 5.0, 6.0, 10.0]
    assert r1[150_000]["label_t_us"] == 150_000  # 130 ms and 150 ms share a window: 150 wins
    assert [a["track_id"] for a in r1[150_000]["annotations"]] == [3]
    assert not any(d["labelled"] for d in by_seq["rec2_td.npy"])  # no label file
    quirks = dataset_quirks("evseq")
    assert quirks.counters() == {"skipped_images": 0, "dropped_boxes": 2, "clipped_boxes": 1}
    assert quirks["unknown_class"] == 1 and quirks["empty_box"] == 1
    assert quirks["merged_label_times"] == 1 and quirks["missing_event_labels"] == 1
    again = DatasetCatalog.get("evseq")
    assert [d["image_id"] for d in again] == [d["image_id"] for d in dicts]


def test_register_from_config_entry(recordings, tmp_path):
    from detlab.data.datasets.register import register_from_config

    root = str(tmp_path / "split")
    cfg = get_cfg()
    cfg.DATASETS.REGISTER = [
        {
            "name": "ev_cfg",
            "format": "events",
            "root": root,
            "classes": ["a", "b"],
            "sensor_size": [H, W],
            "window_us": 100_000,
        }
    ]
    try:
        assert register_from_config(cfg) == ["ev_cfg"]
        assert register_from_config(cfg) == []  # idempotent
        dicts = DatasetCatalog.get("ev_cfg")
        assert dicts[0]["t_end_us"] - dicts[0]["t_start_us"] == 100_000
        assert MetadataCatalog.get("ev_cfg").thing_classes == ["a", "b"]
        names = tmp_path / "names.txt"
        names.write_text("a\nb\n")
        good = dict(cfg.DATASETS.REGISTER[0])
        cfg.DATASETS.REGISTER = [dict(good, name="ev_names", classes=str(names))]
        assert register_from_config(cfg) == ["ev_names"]
        assert MetadataCatalog.get("ev_names").thing_classes == ["a", "b"]
        for bad, message in (
            ({"split_ratios": {"train": 0.8, "val": 0.2}}, "split event recordings by folder"),
            ({"root": str(tmp_path / "missing")}, "needs root, an existing folder"),
            ({"classes": ["a", "b"], "preset": "gen2"}, "unknown preset 'gen2'"),
        ):
            cfg.DATASETS.REGISTER = [dict(good, name="ev_bad", **bad)]
            with pytest.raises(UserError, match=message):
                register_from_config(cfg)
            assert "ev_bad" not in DatasetCatalog
    finally:
        for n in ("ev_cfg", "ev_names"):
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_split_pieces_keeps_labels_at_most_length_apart():
    lab = np.zeros(30, bool)
    lab[[3, 5, 9, 20, 21]] = True
    assert split_pieces(lab, 4) == [(0, 10), (17, 22)]
    assert split_pieces(np.zeros(5, bool), 4) == []


def _cfg(name, sampling="stream", slots=2, length=3, workers=0):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.MAPPER = "EventWindowMapper"
    cfg.DATALOADER.SAMPLER_TRAIN = "SequenceSampler"
    cfg.DATALOADER.SEQUENCE.SAMPLING = sampling
    cfg.DATALOADER.SEQUENCE.LENGTH = length
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.INPUT.EVENTS.NUM_BINS = 2
    cfg.MODEL.BACKBONE.IN_CHANNELS = 4
    cfg.SOLVER.IMS_PER_BATCH = slots
    cfg.SEED = 5
    return cfg


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_stream_batches_are_contiguous_with_first_window_flags(recordings):
    name = recordings()
    dicts = DatasetCatalog.get(name)
    batches = _take(build_detection_train_loader(_cfg(name, slots=2, length=3)), 40)
    for slot in (0, 1):
        prev = None
        for b in batches:
            mine = [x for x in b if x["slot"] == slot]
            assert [x["step"] for x in mine] == list(range(len(mine)))
            for x in mine:
                if prev is not None and not x["is_first"]:
                    # same recording, next window: the stream continues across batches
                    assert (x["sequence"], x["window_index"]) == (prev[0], prev[1] + 1)
                prev = (x["sequence"], x["window_index"])
    firsts = [(x["sequence"], x["window_index"]) for b in batches for x in b if x["is_first"]]
    # pieces of rec0 start L-1 windows before the first label; rec1 has two pieces
    starts = {("rec0_td.npy", 0), ("rec1_td.dat", 0), ("rec1_td.dat", 11)}
    assert set(firsts) == starts
    # every clip holds a labelled window with boxes
    for b in batches:
        for slot in (0, 1):
            assert any(len(x["instances"].boxes) for x in b if x["slot"] == slot)
    ids = {d["image_id"]: d for d in dicts}
    assert all(x["t_end_us"] == ids[x["image_id"]]["t_end_us"] for b in batches for x in b)


def test_stream_resume_and_workers_are_exact(recordings):
    name = recordings()
    full = _take(build_detection_train_loader(_cfg(name, "mixed", slots=3)), 12)
    resumed = _take(build_detection_train_loader(_cfg(name, "mixed", slots=3), start_iter=7), 5)
    workers = _take(build_detection_train_loader(_cfg(name, "mixed", 3, workers=2), 7), 5)
    for a, b, c in zip(full[7:], resumed, workers, strict=True):
        assert [(x["image_id"], x["slot"], x["step"], x["is_first"]) for x in a] == [
            (x["image_id"], x["slot"], x["step"], x["is_first"]) for x in b
        ]
        for x, y, z in zip(a, b, c, strict=True):
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["image"], z["image"])
            assert torch.equal(x["instances"].boxes, z["instances"].boxes)


def test_mosaic_with_sequence_sampling_is_one_sentence(recordings):
    cfg = _cfg(recordings())
    cfg.INPUT.MOSAIC.ENABLED = True
    with pytest.raises(UserError, match="INPUT.MOSAIC.ENABLED .* SequenceSampler"):
        build_detection_train_loader(cfg)


def test_random_and_mixed_clips(recordings):
    name = recordings()
    dicts = DatasetCatalog.get(name)
    layout = SequenceLayout(dicts)
    rnd = SequenceBatchStream(layout, 4, 3, "random", seed=1)
    for k in range(10):
        keys = rnd.batch_keys(k)
        for slot in range(4):
            clip = [(i, info) for _, i, _, info in keys if info["slot"] == slot]
            assert clip[0][1]["is_first"] and not any(c[1]["is_first"] for c in clip[1:])
            last = dicts[clip[-1][0]]
            assert last["labelled"] and last["annotations"]  # the clip ends at a label
            idx = [dicts[i]["window_index"] for i, _ in clip]
            assert idx == list(range(idx[0], idx[0] + len(idx)))
            assert len({dicts[i]["sequence"] for i, _ in clip}) == 1
    mixed = SequenceBatchStream(layout, 5, 3, "mixed", seed=1, stream_weight=3, random_weight=2)
    assert (mixed.n_stream, mixed.n_random) == (3, 2)
    with pytest.raises(Exception, match="at least 2 slots"):
        SequenceBatchStream(layout, 1, 3, "mixed")
    # two processes: their stream slots never play the same piece in the same epoch
    r0 = SequenceBatchStream(layout, 1, 3, "stream", seed=1, rank=0, world_size=2)
    r1 = SequenceBatchStream(layout, 1, 3, "stream", seed=1, rank=1, world_size=2)
    assert r0.batch_keys(0)[0][1] != r1.batch_keys(0)[0][1]


def test_augmentation_is_shared_by_a_stream_pass(recordings):
    name = recordings()
    cfg = _cfg(name, slots=1, length=4)
    cfg.INPUT.EVENTS.HFLIP_PROB = 0.5
    passes, current = [], None
    for b in _take(build_detection_train_loader(cfg), 40):
        for x in b:
            if x["is_first"]:
                current = set()
                passes.append((x["sequence"], current))
            if x["sequence"] == "rec0_td.npy" and x["instances"].boxes.numel():
                # rec0's box spans x 2..10, flipped 22..30
                current.add(bool(x["instances"].boxes[0, 0] > W / 2))
    flips = [s for seq, s in passes if seq == "rec0_td.npy" and s]
    assert all(len(s) == 1 for s in flips)  # one flip decision per pass
    assert {next(iter(s)) for s in flips} == {True, False}  # and passes differ


def test_test_loader_streams_each_window_once_with_resets(recordings):
    name = recordings()
    cfg = _cfg(name)
    cfg.DATALOADER.TEST_BATCH_SIZE = 4
    batches = list(build_detection_test_loader(cfg, name))
    flat = [x for b in batches for x in b]
    dicts = DatasetCatalog.get(name)
    assert [x["image_id"] for x in flat] == [d["image_id"] for d in dicts]
    assert all(x["slot"] == 0 for x in flat)
    assert [x["step"] for x in batches[0]] == [0, 1, 2, 3]
    firsts = [x["sequence"] for x in flat if x["is_first"]]
    assert firsts == ["rec0_td.npy", "rec1_td.dat", "rec2_td.npy"]


def test_evaluation_counts_only_labelled_windows(recordings):
    from detlab.evaluation import COCOEvaluator
    from detlab.structures import Instances

    name = recordings()
    dicts = DatasetCatalog.get(name)
    ev = COCOEvaluator(name, None, plots=False)
    ev.reset()
    inputs, outputs = [], []
    for d in dicts:
        boxes = torch.tensor(
            [
                [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ]
                for a in d["annotations"]
            ]
        )
        classes = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64)
        if not d["labelled"]:  # a confident false positive on every unlabelled window
            boxes, classes = torch.tensor([[1.0, 1.0, 9.0, 9.0]]), torch.tensor([0])
        inst = Instances(
            (H, W), boxes=boxes.reshape(-1, 4), scores=torch.ones(len(classes)), classes=classes
        )
        inputs.append({"image_id": d["image_id"], "labelled": d["labelled"]})
        outputs.append({"instances": inst})
    ev.process(inputs, outputs)
    res = ev.evaluate()["bbox"]
    assert res["AP50"] == pytest.approx(100.0)  # unlabelled windows neither help nor hurt
    gt_images = ev._load_gt()["images"]
    assert len(gt_images) == sum(d["labelled"] for d in dicts)


@pytest.mark.parametrize("rep", ["StackedHistogram", "TimeSurface"])
def test_hdf5_cache_gives_the_same_tensors(recordings, tmp_path, monkeypatch, rep):
    pytest.importorskip("h5py")
    import os

    import detlab.data.events.cache as cache_mod

    monkeypatch.setattr(cache_mod, "_WINDOWS_PER_READ", 3)  # several reads per recording
    name = recordings()
    cfg = _cfg(name)
    cfg.INPUT.EVENTS.REPRESENTATION = rep
    cfg.INPUT.EVENTS.HISTORY_US = 120_000  # the time surface reaches back over 2+ windows
    cfg.INPUT.EVENTS.DOWNSAMPLE = 2
    cfg.MODEL.BACKBONE.IN_CHANNELS = 4 if rep == "StackedHistogram" else 2
    cfg.INPUT.EVENTS.CACHE_DIR = str(tmp_path / "cache")
    plain = [x for b in build_detection_test_loader(cfg, name) for x in b]
    cfg.INPUT.EVENTS.CACHE = True
    cached = [x for b in build_detection_test_loader(cfg, name) for x in b]
    files = os.listdir(tmp_path / "cache" / "repr")
    assert len([f for f in files if f.endswith(".h5")]) == 3
    for a, b in zip(plain, cached, strict=True):
        assert a["image_id"] == b["image_id"]
        torch.testing.assert_close(a["image"], b["image"], atol=1e-6, rtol=0)
    mtimes = {f: os.path.getmtime(tmp_path / "cache" / "repr" / f) for f in files}
    build_detection_test_loader(cfg, name)  # present caches are not rewritten
    assert mtimes == {f: os.path.getmtime(tmp_path / "cache" / "repr" / f) for f in files}
    cfg.INPUT.EVENTS.NUM_BINS = 3  # another representation: another cache file
    cfg.MODEL.BACKBONE.IN_CHANNELS = 6 if rep == "StackedHistogram" else 2
    cfg.INPUT.EVENTS.TAU_US = 1000.0
    build_detection_test_loader(cfg, name)
    assert len(os.listdir(tmp_path / "cache" / "repr")) == 6


def test_inspect_events_tool(recordings, tmp_path, capsys):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "inspect_events.py")
    spec = importlib.util.spec_from_file_location("inspect_events", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    root = str(tmp_path / "split")
    args = ["--root", root, "--classes", "a", "b", "--sensor-size", str(H), str(W)]
    assert tool.main(args) == 0
    out = capsys.readouterr().out
    assert "3 recordings" in out and "rec1_td.dat" in out
    assert "boxes per class: a 2, b 20" in out  # rec0: 19 b; rec1: a at 100/150 ms, b at 700
    assert "1 boxes reach outside their image; clipped" in out
    assert "1 boxes have a class_id outside the dataset's classes; dropped" in out
    assert tool.main(["--root", str(tmp_path / "nope"), "--preset", "gen1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_visualize_event_windows_with_a_recurrent_model(recordings, tmp_path, monkeypatch):
    import cv2

    from detlab.engine import stream_inference
    from detlab.modeling import build_model
    from detlab.visualization.cli import main as visualize

    name = recordings()
    cfg = _cfg(name)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "tiny_resnet"
    cfg.MODEL.RESNETS.WIDTH_MULT = 0.25
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = (0.0,) * 4, (1.0,) * 4
    cfg.MODEL.FPN.TOP_BLOCK = "none"
    cfg.MODEL.FPN.OUT_CHANNELS = 16
    cfg.MODEL.FCOS.NUM_CONVS = 1
    cfg.MODEL.FCOS.NORM = ""  # GN has nothing to normalise on the 1x1 stride-32 map
    cfg.MODEL.FCOS.NUM_CLASSES = 2
    cfg.MODEL.TEMPORAL.NAME = "ConvGRU"
    weights = tmp_path / "m.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    cfg_file = tmp_path / "c.yaml"
    cfg.DATASETS.TEST = (name,)
    cfg_file.write_text(cfg.dump())
    streamed = []
    original = stream_inference.predict_stream_windows

    def spy(model, mapper, dataset, chosen, warmup=20):
        streamed.append((len(dataset), [d["window_index"] for d in chosen]))
        return original(model, mapper, dataset, chosen, warmup)

    monkeypatch.setattr(stream_inference, "predict_stream_windows", spy)
    dicts = DatasetCatalog.get(name)
    ids = [str(dicts[5]["image_id"]), str(dicts[30]["image_id"])]
    code = visualize(
        [
            "--config-file",
            str(cfg_file),
            "--image-ids",
            *ids,
            "--output",
            str(tmp_path / "vis"),
            "MODEL.WEIGHTS",
            str(weights),
        ]
    )
    assert code == 0
    assert streamed == [(len(dicts), [5, dicts[30]["window_index"]])]
    files = sorted((tmp_path / "vis" / name).iterdir())
    assert len(files) == 2
    img = cv2.imread(str(files[0]))
    assert img.shape == (H, W, 3) and img.max() > 0  # the window's events are drawn


@pytest.mark.parametrize("zoom", ["in", "out", "flip"])
def test_augmentations_move_boxes_with_the_events(tmp_path, zoom):
    """Events fill exactly the labelled box; after each augmentation the box still holds them."""
    from detlab.data.events import StackedHistogram
    from detlab.data.mappers.event_mapper import EventWindowMapper

    h, w = 48, 64
    ys, xs = np.mgrid[10:22, 30:46]  # a 16x12 block of pixels
    n = xs.size
    path = str(tmp_path / "block.npy")
    write_npy(path, xs.ravel(), ys.ravel(), np.ones(n), np.full(n, 500), h, w)
    d = {
        "file_name": path,
        "t_start_us": 0,
        "t_end_us": 1000,
        "height": h,
        "width": w,
        "image_id": 1,
        "window_index": 0,
        "labelled": True,
        "annotations": [{"bbox": [30.0, 10.0, 16.0, 12.0], "category_id": 0, "iscrowd": 0}],
    }
    probs = {"in": (0.0, 1.0, 0.0), "out": (0.0, 0.0, 1.0), "flip": (1.0, 0.0, 0.0)}[zoom]
    mapper = EventWindowMapper(
        True,
        representation=StackedHistogram(1, 255),
        hflip_prob=probs[0],
        zoom_in_prob=probs[1],
        zoom_in_max=1.5,
        zoom_out_prob=probs[2],
        zoom_out_max=1.5,
    )
    for seed in range(5):
        out = mapper(d, np.random.default_rng(seed))
        img = out["image"].sum(0)
        x0, y0, x1, y1 = out["instances"].boxes[0].tolist()
        inside = img[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))]
        assert float(inside.sum()) == pytest.approx(float(img.sum()))  # nothing outside the box
        assert float(img.sum()) > 0
        assert (x1 - x0) * (y1 - y0) > 0.3 * 16 * 12  # the box still covers the block
