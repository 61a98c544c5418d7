"""Event files in every format read back exactly; timestamp repair; binary-search windows."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from detlab.data.events import (
    build_index,
    get_index,
    label_path_for,
    load_labels,
    open_events,
    read_window,
    write_dat,
    write_h5,
    write_npy,
    write_npz,
)
from detlab.data.events.readers import parse_dat_header
from detlab.utils.errors import UserError


def _events(n=5000, h=240, w=304, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, w, n)
    y = rng.integers(0, h, n)
    p = rng.integers(0, 2, n)
    t = np.sort(rng.integers(0, 3_000_000, n))
    return x, y, p, t


def _same(reader, x, y, p, t):
    ev = reader.read(0, reader.num_events)
    assert reader.num_events == len(t)
    np.testing.assert_array_equal(ev.x, x)
    np.testing.assert_array_equal(ev.y, y)
    np.testing.assert_array_equal(ev.p, p)
    np.testing.assert_array_equal(ev.t, t)
    np.testing.assert_array_equal(reader.read_t(10, 20), t[10:20])


@pytest.mark.parametrize("ext", ["dat", "npy", "npz"])
def test_formats_round_trip(tmp_path, ext):
    x, y, p, t = _events()
    path = str(tmp_path / f"rec_td.{ext}")
    {"dat": write_dat, "npy": write_npy, "npz": write_npz}[ext](path, x, y, p, t, 240, 304)
    reader = open_events(path)
    _same(reader, x, y, p, t)
    if ext in ("dat", "npz"):
        assert reader.sensor_size == (240, 304)


def test_dat_bit_layout_written_by_hand(tmp_path):
    """A .dat built byte by byte from the documented format, not with detlab's writer."""
    events = [(5, 303, 239, 1), (17, 0, 0, 0), (17, 1234 % 304, 77, 1), (2**31 + 9, 12, 200, 0)]
    header = b"% Data file containing Event2D events.\n% Version 2\n% Date 2019-01-01 00:00:00\n"
    header += b"% Height 240\n% Width 304\n"
    body = b"".join(struct.pack("<II", t, x | (y << 14) | (p << 28)) for t, x, y, p in events)
    path = tmp_path / "hand_td.dat"
    path.write_bytes(header + bytes([0, 8]) + body + b"\x01\x02\x03")  # + a cut-off event
    reader = open_events(str(path))
    assert reader.sensor_size == (240, 304)
    assert reader.num_events == 4 and reader.trailing_bytes == 3
    ev = reader.read(0, 4)
    assert ev.t.tolist() == [e[0] for e in events]
    assert ev.x.tolist() == [e[1] for e in events]
    assert ev.y.tolist() == [e[2] for e in events]
    assert ev.p.tolist() == [e[3] for e in events]
    with open(path, "rb") as f:
        offset, ev_type, ev_size, size = parse_dat_header(f)
    assert (offset, ev_type, ev_size, size) == (len(header) + 2, 0, 8, (240, 304))


def test_dat_geometry_header_and_wrong_event_size(tmp_path):
    path = tmp_path / "geo.dat"
    path.write_bytes(b"% geometry 1280x720\n% end\n" + bytes([12, 8]) + struct.pack("<II", 1, 2))
    assert open_events(str(path)).sensor_size == (720, 1280)
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"% Version 2\n" + bytes([0, 16]) + b"\0" * 32)
    with pytest.raises(UserError, match="8 bytes per event"):
        open_events(str(bad))


def test_hdf5_round_trip_with_and_without_compression(tmp_path):
    pytest.importorskip("h5py")
    x, y, p, t = _events(n=70000)
    plain = str(tmp_path / "plain_td.h5")
    write_h5(plain, x, y, p, t, 240, 304, compression=None)
    reader = open_events(plain)
    assert reader.sensor_size == (240, 304)
    _same(reader, x, y, p, t)
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        pytest.skip("hdf5plugin not installed: compressed HDF5 not tested")
    packed = str(tmp_path / "blosc_td.h5")
    write_h5(packed, x, y, p, t, 240, 304, compression="auto")
    import h5py

    with h5py.File(packed, "r") as f:
        assert "32001" in f["events/t"]._filters  # the blosc filter of hdf5plugin
    _same(open_events(packed), x, y, p, t)


def test_hdf5_layout_with_t_offset_and_signed_polarity(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "dsec.h5"
    with h5py.File(path, "w") as f:
        f["events/x"] = np.array([1, 2, 3], np.uint16)
        f["events/y"] = np.array([4, 5, 6], np.uint16)
        f["events/p"] = np.array([-1, 1, -1], np.int8)
        f["events/t"] = np.array([0, 10, 20], np.uint32)
        f["t_offset"] = np.int64(1_000_000)
        f["events"].attrs["height"], f["events"].attrs["width"] = 480, 640
    r = open_events(str(path))
    ev = r.read(0, 3)
    assert ev.t.tolist() == [1_000_000, 1_000_010, 1_000_020]
    assert ev.p.tolist() == [0, 1, 0] and r.sensor_size == (480, 640)


def test_without_h5py_npy_and_dat_work_and_hdf5_is_one_sentence(tmp_path, monkeypatch):
    x, y, p, t = _events(n=100)
    write_npy(str(tmp_path / "a.npy"), x, y, p, t, 240, 304)
    write_dat(str(tmp_path / "b.dat"), x, y, p, t, 240, 304)
    (tmp_path / "c.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    assert open_events(str(tmp_path / "a.npy")).num_events == 100
    assert open_events(str(tmp_path / "b.dat")).num_events == 100
    with pytest.raises(UserError, match=r"pip install 'detlab\[events\]'") as err:
        open_events(str(tmp_path / "c.h5"))
    assert "\n" not in str(err.value)


def test_plain_npy_and_unknown_suffix_are_user_errors(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((10, 4)))
    with pytest.raises(UserError, match="structured array"):
        open_events(str(tmp_path / "plain.npy"))
    with pytest.raises(UserError, match="not an event file"):
        open_events(str(tmp_path / "rec.aedat4"))


def test_npy_with_other_field_names(tmp_path):
    arr = np.zeros(3, [("ts", "<f8"), ("x", "<i2"), ("y", "<i2"), ("polarity", "i1")])
    arr["ts"], arr["x"], arr["polarity"] = [1, 2, 3], [7, 8, 9], [-1, 1, 1]
    np.save(tmp_path / "alt.npy", arr)
    ev = open_events(str(tmp_path / "alt.npy")).read(0, 3)
    assert ev.t.tolist() == [1, 2, 3] and ev.p.tolist() == [0, 1, 1] and ev.x.tolist() == [7, 8, 9]


def test_timestamp_repair_is_running_max_and_counted(tmp_path):
    t = np.array([10, 20, 15, 30, 5, 40, 40, 35, 50])
    n = len(t)
    path = str(tmp_path / "jumpy.npy")
    write_npy(path, np.arange(n), np.zeros(n), np.ones(n), t, 4, 16)
    idx = build_index(open_events(path), stride=2, chunk=4)
    assert idx.repaired == 3  # 15, 5 and 35 were raised
    assert idx.t_first == 10 and idx.t_last == 50
    repaired = np.maximum.accumulate(t)
    assert idx.coarse_t.tolist() == repaired[::2].tolist()
    ev, first = read_window(path, 20, 40)
    assert first == 1
    assert ev.t.tolist() == [20, 20, 30, 30]  # repaired values in [20, 40)
    assert ev.x.tolist() == [1, 2, 3, 4]


def test_windows_use_binary_search_not_a_scan(tmp_path, monkeypatch):
    n = 200_000
    t = np.arange(n) * 10
    path = str(tmp_path / "long.npy")
    write_npy(path, np.zeros(n), np.zeros(n), np.zeros(n), t, 2, 2)
    get_index(path)  # the one pass that builds the index
    reader = open_events(path)
    seen = []
    original = type(reader).read_t

    def counting(self, start, stop):
        seen.append(stop - start)
        return original(self, start, stop)

    monkeypatch.setattr(type(reader), "read_t", counting)
    ev, first = read_window(path, 1_234_560, 1_234_600)
    assert first == 123_456 and ev.t.tolist() == [1_234_560, 1_234_570, 1_234_580, 1_234_590]
    assert sum(seen) <= 2 * get_index(path).stride < n // 4


def test_labels_aliases_sorting_and_paths(tmp_path):
    old = np.zeros(
        3,
        [
            ("ts", "<u8"),
            ("x", "<f8"),
            ("y", "<f8"),
            ("w", "<f8"),
            ("h", "<f8"),
            ("class_id", "<u1"),
            ("confidence", "<f4"),
        ],
    )
    old["ts"] = [300, 100, 200]
    old["class_id"] = [2, 0, 1]
    np.save(tmp_path / "a_bbox.npy", old)
    rows, unsorted = load_labels(str(tmp_path / "a_bbox.npy"))
    assert rows["t"].tolist() == [100, 200, 300] and rows["class_id"].tolist() == [0, 1, 2]
    assert unsorted == 2 and rows.dtype.names[-1] == "class_confidence"
    np.save(tmp_path / "bad_bbox.npy", np.zeros(2, [("t", "<i8"), ("x", "<f4")]))
    with pytest.raises(UserError, match="'y' field"):
        load_labels(str(tmp_path / "bad_bbox.npy"))
    for name in ("rec_td.dat", "rec_td.dat.h5", "rec_td.h5", "rec.npy", "rec.npz"):
        assert label_path_for(f"/d/{name}") == "/d/rec_bbox.npy"
