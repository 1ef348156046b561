"""The station loop end to end: a real video file, a real exported model, a real mosquitto broker."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

from edge_ad import data as D
from edge_ad.station.loop import run_station
from edge_ad.runtime.detector import open_detector
from edge_ad.station.config import station_config_from_dict
from helpers import Subscriber, wait_until as wait_for

GOOD, BAD = "good", "bad"
PATTERN = [GOOD] * 8 + [BAD] * 5 + [GOOD] * 8 + [BAD] * 5 + [GOOD] * 6  # two defect bursts -> two alarms
FRAME_HW = (128, 128)


def defect(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (30, 40), (90, 80), (0, 0, 255), -1)  # a large red patch: unmistakable
    return out


@pytest.fixture(scope="module")
def video(demo_root, tmp_path_factory):
    goods = [D.load_image(p) for p in D.list_images(demo_root / "train" / "good")]
    frames = [goods[i % len(goods)] if kind == GOOD else defect(goods[i % len(goods)]) for i, kind in enumerate(PATTERN)]
    path = tmp_path_factory.mktemp("video") / "line.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, FRAME_HW[::-1])
    for f in frames:
        w.write(cv2.resize(f, FRAME_HW[::-1]))
    w.release()
    return path


@pytest.fixture(scope="module")
def threshold(video, tiny_onnx):
    """Midway between the worst good and the mildest defect frame as decoded from the video."""
    det = open_detector(tiny_onnx)
    cap = cv2.VideoCapture(str(video))
    scores = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        scores.append(det.detect(f).score)
    good = [s for s, k in zip(scores, PATTERN) if k == GOOD]
    bad = [s for s, k in zip(scores, PATTERN) if k == BAD]
    assert len(scores) == len(PATTERN) and min(bad) > max(good), "tiny model must separate the painted defects"
    return (min(bad) + max(good)) / 2


def station(tmp_path, bundle, video, threshold, port=None, **kw):
    cfg = {"station": "s1", "part": "demo", "bundle": str(bundle), "threshold": threshold,
           "frame_log": str(tmp_path / "frames.jsonl"), "camera": {"source": str(video), "file_mode": "every"},
           "debounce": {"window": 3, "min_anomalous": 2, "hold_s": 0.0},
           "evidence": {"dir": str(tmp_path / "evidence"), "max_mb": 50.0},
           "gpio": {"enabled": True, "backend": "fake"}}
    if port:
        cfg["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": port, "queue_dir": str(tmp_path / "q"),
                       "queue_fsync": False, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
    cfg.update(kw)
    return cfg


def test_loop_raises_exactly_the_expected_events(tiny_onnx, video, threshold, mosquitto, tmp_path):
    sub = Subscriber(mosquitto, "edge_ad/s1/demo/#")
    cfg = station_config_from_dict(station(tmp_path, tiny_onnx.parent, video, threshold, mosquitto.port))
    stats = run_station(cfg)
    assert stats.frames == len(PATTERN) and stats.dropped == 0 and stats.alarms == 2
    assert stats.anomalous == PATTERN.count(BAD)
    assert wait_for(lambda: len(sub.payloads("edge_ad/s1/demo/event")) >= 2, timeout=10)
    events = sub.payloads("edge_ad/s1/demo/event")
    assert len(events) == 2
    assert [e["frame_index"] for e in events] == [9, 22]  # second anomalous frame of each burst (2 of 3)
    for e in events:
        assert e["station"] == "s1" and e["part"] == "demo" and e["score"] > e["threshold"] == pytest.approx(threshold)
        assert e["boxes"] and os.path.isdir(e["evidence"])
        assert {"time", "model_version"} <= e.keys()
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == len(PATTERN) and [x["anomaly"] for x in lines] == [k == BAD for k in PATTERN]
    assert all(x["latency_ms"] > 0 and "infer_ms" in x for x in lines)
    sub.close()


def test_loop_survives_broker_outage(tiny_onnx, video, threshold, mosquitto_factory, tmp_path):
    broker = mosquitto_factory(persistence=True)
    cfg = station_config_from_dict(station(tmp_path, tiny_onnx.parent, video, threshold, broker.port))
    stats = run_station(cfg)  # broker down for the whole run: events wait in the disk queue
    assert stats.alarms == 2
    broker.start()
    sub = Subscriber(broker, "edge_ad/s1/demo/event")
    cfg = station_config_from_dict(station(tmp_path, tiny_onnx.parent, video, threshold, broker.port,
                                           camera={"source": str(video), "file_mode": "every"}))
    run_station(cfg, max_frames=1)  # the next start delivers the queue first
    assert wait_for(lambda: len(sub.payloads()) >= 2, timeout=10)
    assert [e["frame_index"] for e in sub.payloads()][:2] == [9, 22]
    sub.close()


def test_corrupt_frames_and_bad_roi_do_not_stop_the_loop(tiny_onnx, threshold, demo_root, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, p in enumerate(D.list_images(demo_root / "train" / "good")[:4]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), D.load_image(p))
    (folder / "001b.png").write_bytes(b"corrupt")
    cfg = station_config_from_dict(station(tmp_path, tiny_onnx.parent, folder, threshold))
    assert run_station(cfg).frames == 4
    cfg = station_config_from_dict(station(tmp_path, tiny_onnx.parent, folder, threshold, roi=[5000, 5000, 10, 10]))
    stats = run_station(cfg)
    assert stats.frames == 0 and stats.errors == 4


def test_missing_bundle_is_one_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge_ad.cli", "run", "--config", str(write_cfg(tmp_path, {
        "part": "nope", "parts_dir": str(tmp_path / "parts"), "frame_log": ""}))], capture_output=True, text=True)
    assert r.returncode == 2 and "part bundle not found" in r.stderr and "Traceback" not in r.stderr


def write_cfg(tmp_path, cfg) -> str:
    p = tmp_path / "station.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_sigterm_stops_within_two_seconds_and_sighup_reloads(tiny_onnx, video, threshold, tmp_path):
    from edge_ad import bundle as B

    parts = tmp_path / "parts"
    files = {n: tiny_onnx.parent / n for n in ("model.onnx", "model.json")}
    B.write_bundle(parts, "demo", files, {})
    B.write_bundle(parts, "demo", files, {})
    B.rollback(parts, "demo")  # current -> v1
    cfg = station(tmp_path, "", video, threshold, parts_dir=str(parts),
                  camera={"source": str(video), "live": True, "fps": 50.0})
    cfg["gpio"] = {"enabled": False}
    err_path = tmp_path / "stderr.log"  # a file, so the test can watch the log while the station runs
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "edge_ad.cli", "run", "--config", write_cfg(tmp_path, cfg)],
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    log = tmp_path / "frames.jsonl"
    try:
        assert wait_for(lambda: log.exists() and len(log.read_text().splitlines()) > 5, timeout=60)
        assert "(v2)" not in err_path.read_text()
        B.switch_current(parts, "demo", 2)
        proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "(v2)" in err_path.read_text(), timeout=30), err_path.read_text()[-2000:]  # reloaded
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    err = err_path.read_text()
    assert proc.returncode == 0 and time.monotonic() - t0 < 2.0, err[-2000:]
    assert "v2" in err and "frames" in out
    assert all(json.loads(x) for x in log.read_text().splitlines())  # every line complete
