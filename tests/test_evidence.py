"""Evidence: boxes in frame pixels (also through letterbox/crop), the files of one event, and the quota."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from edge_ad.config import DataConfig
from edge_ad.data import geometry, prepare
from edge_ad.station.evidence import EvidenceStore, find_boxes, frame_map
from edge_ad.station.config import EvidenceConfig


def frame_with_square(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, bw, bh = box
    frame = np.full((h, w, 3), 40, np.uint8)
    frame[y:y + bh, x:x + bw] = 230
    return frame


def test_small_map_is_resized_to_frame_and_boxed():
    amap = np.zeros((32, 32), np.float32)
    amap[4:8, 20:28] = 1.0  # region A: rows 4-7, cols 20-27
    amap[20:30, 2:6] = 0.8  # region B
    amap[16, 16] = 0.9  # one map pixel: becomes a ~4x3 blob at frame size, dropped by min_area
    fmap = frame_map(amap, (96, 128))
    assert fmap.shape == (96, 128) and fmap.dtype == np.float32
    boxes = find_boxes(fmap, threshold=0.5, min_area=40)
    assert len(boxes) == 2
    a, b = boxes  # highest peak first
    assert a["peak"] == pytest.approx(1.0) and b["peak"] == pytest.approx(0.8)
    # map cell (r, c) covers frame rows 3r..3r+2 and cols 4c..4c+3
    assert abs(a["x"] - 80) <= 2 and abs(a["y"] - 12) <= 2 and abs(a["w"] - 32) <= 3 and abs(a["h"] - 12) <= 3
    assert abs(b["x"] - 8) <= 2 and abs(b["y"] - 60) <= 2 and abs(b["w"] - 16) <= 3 and abs(b["h"] - 30) <= 3
    assert all(isinstance(v, (int, float)) for box in boxes for v in box.values())
    all_boxes = find_boxes(fmap, threshold=0.5, min_area=0)
    assert len(all_boxes) == 3 and min(box["area"] for box in all_boxes) < 40


@pytest.mark.parametrize("data", [
    DataConfig(image_size=[64, 64], resize="stretch"),
    DataConfig(image_size=[64, 64], resize="letterbox"),
    DataConfig(image_size=[96, 96], resize="letterbox", center_crop=[64, 64]),
])
def test_map_back_to_frame_undoes_the_runtime_preprocessing(data):
    """A 'map' that is the preprocessed image itself must land on the same square in the frame."""
    h, w, square = 120, 200, (120, 30, 40, 50)
    frame = frame_with_square(h, w, square)
    net_input = prepare(frame, data)  # the runtime's own geometric preprocessing
    amap = (net_input.mean(axis=2) / 255.0).astype(np.float32)
    fmap = frame_map(amap, (h, w), geometry((h, w), data))
    (box,) = find_boxes(fmap, threshold=0.5, min_area=20)
    tol = 4  # a few frame pixels: the network input is 2-3x coarser than the frame
    for key, want in zip(("x", "y", "w", "h"), square):
        assert abs(box[key] - want) <= tol, (key, box, square)


def test_save_writes_original_overlay_and_boxes(tmp_path):
    store = EvidenceStore(EvidenceConfig(dir=str(tmp_path / "ev"), original_format="png"))
    frame = frame_with_square(96, 128, (10, 10, 20, 20))
    amap = np.zeros((24, 32), np.float32)
    amap[3:8, 3:8] = 0.9
    rec = store.save(frame, amap, threshold=0.5, score=0.9, meta={"station": "s1", "part": "p"}, when=1.7e9)
    assert rec.path is not None and rec.path.parent == tmp_path / "ev"
    assert sorted(p.name for p in rec.path.iterdir()) == ["boxes.json", "original.png", "overlay.jpg"]
    assert np.array_equal(cv2.imread(str(rec.path / "original.png")), frame)  # lossless original
    overlay = cv2.imread(str(rec.path / "overlay.jpg"))
    assert overlay.shape == frame.shape and np.abs(overlay.astype(int) - frame).mean() > 5
    data = json.loads((rec.path / "boxes.json").read_text())
    assert data["boxes"] == rec.boxes and len(rec.boxes) == 1
    assert data["score"] == 0.9 and data["threshold"] == 0.5 and data["station"] == "s1"
    assert data["frame"] == {"width": 128, "height": 96} and data["time_iso"].startswith("2023-11-14T22:13:20")
    assert rec.path.name.startswith("00000001_20231114T221320")
    assert list((tmp_path / "ev").glob(".tmp-*")) == []


def test_full_folder_deletes_oldest_and_respects_quota(tmp_path, caplog):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(8)]  # noise: ~tens of kB each
    amap = np.zeros((30, 40), np.float32)
    amap[5:10, 5:10] = 1.0
    probe = EvidenceStore(EvidenceConfig(dir=str(tmp_path / "probe")))
    event_size = probe.total_bytes + sum(f.stat().st_size for f in probe.save(frames[0], amap, 0.5, 1.0).path.iterdir())

    quota_mb = 3.5 * event_size / 2**20  # room for 3 events, not 4
    cfg = EvidenceConfig(dir=str(tmp_path / "ev"), max_mb=quota_mb)
    store = EvidenceStore(cfg)
    caplog.set_level(logging.INFO, logger="edge_ad.station.evidence")
    saved = [store.save(f, amap, 0.5, 1.0).path for f in frames]
    on_disk = sorted(p for p in (tmp_path / "ev").iterdir())
    assert on_disk == saved[-3:] == store.events()  # the three newest, oldest deleted first
    disk_bytes = sum(f.stat().st_size for p in on_disk for f in p.iterdir())
    assert disk_bytes == store.total_bytes <= cfg.max_mb * 2**20
    assert store.deleted == 5 and caplog.text.count("deleted the oldest event") == 5

    reopened = EvidenceStore(EvidenceConfig(dir=str(tmp_path / "ev"), max_mb=quota_mb, max_events=2))
    assert reopened.events() == saved[-2:]  # a lower limit applies at start-up
    nxt = reopened.save(frames[0], amap, 0.5, 1.0).path
    assert nxt.name.startswith("00000009_")  # numbering continues: order survives a wrong clock
    assert reopened.events() == [saved[-1], nxt]


def test_event_bigger_than_quota_is_not_kept(tmp_path, caplog):
    store = EvidenceStore(EvidenceConfig(dir=str(tmp_path / "ev"), max_mb=0.001))
    frame = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    amap = np.ones((20, 20), np.float32)
    rec = store.save(frame, amap, 0.5, 1.0)
    assert rec.path is None and len(rec.boxes) == 1
    assert list((tmp_path / "ev").iterdir()) == [] and store.total_bytes == 0
    assert "larger than evidence.max_mb" in caplog.text


def test_disabled_store_still_returns_boxes_and_leaves_no_files(tmp_path):
    store = EvidenceStore(EvidenceConfig(enabled=False, dir=str(tmp_path / "ev")))
    amap = np.zeros((8, 8), np.float32)
    amap[2:4, 2:4] = 1.0
    rec = store.save(np.zeros((64, 64, 3), np.uint8), amap, 0.5, 1.0)
    assert rec.path is None and len(rec.boxes) == 1 and not (tmp_path / "ev").exists()


def test_leftovers_of_a_crash_are_cleaned_and_other_files_kept(tmp_path):
    root = tmp_path / "ev"
    (root / ".tmp-00000003_20240101T000000.000Z").mkdir(parents=True)
    (root / "README.txt").write_text("operator notes")
    store = EvidenceStore(EvidenceConfig(dir=str(root)))
    assert sorted(p.name for p in root.iterdir()) == ["README.txt"] and store.events() == []


def test_full_disk_skips_the_event_counts_it_and_keeps_nothing_half_written(small_disk, caplog):
    """6a/6c's evidence side: an event that cannot be written (or would take the last free space) is skipped,
    counted and logged at a bounded rate; the boxes still go to the alarm."""
    frame = frame_with_square(96, 128, (10, 10, 20, 20))
    amap = np.zeros((24, 32), np.float32)
    amap[3:8, 3:8] = 0.9
    guarded = EvidenceStore(EvidenceConfig(dir=str(small_disk.path / "guarded"), min_free_mb=1.0))  # > 512 KiB disk
    rec = guarded.save(frame, amap, threshold=0.5, score=0.9)
    assert rec.path is None and rec.boxes and guarded.write_errors == 1 and "only" in caplog.text
    store = EvidenceStore(EvidenceConfig(dir=str(small_disk.path / "ev"), min_free_mb=0.0))
    small_disk.fill()
    caplog.set_level(logging.ERROR)
    for _ in range(10):
        assert store.save(frame, amap, threshold=0.5, score=0.9).path is None
    assert store.write_errors == 10 and store.events() == []
    assert list((small_disk.path / "ev").iterdir()) == []  # no .tmp-* left
    assert caplog.text.count("cannot save event") <= 6
    small_disk.free_up()
    assert store.save(frame, amap, threshold=0.5, score=0.9).path is not None  # and it recovers by itself
