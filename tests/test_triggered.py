"""Triggered mode with the real parts: a real video file and a real HTTP MJPEG stream, the recording fake GPIO (trigger
edges in, reject pulses out, with their times), a real mosquitto carrying triggers and results, and the web API.
OPC UA (a real asyncua client) is in test_opcua.py."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from edge_ad import data as D
from edge_ad.errors import EdgeAdError
from edge_ad.station.config import station_config_from_dict
from edge_ad.station.line import sharpest
from edge_ad.station.loop import run_station
from edge_ad.station.service import StopFlag
from edge_ad.station.status import StationStatus
from helpers import Subscriber, video_scores, wait_until
from test_camera import MjpegServer

GOOD, BAD = "good", "bad"
PATTERN = [GOOD] * 6 + [BAD] * 6 + [GOOD] * 6 + [BAD] * 6  # frame i of the video is PATTERN[i % 24]
FRAME_HW = (128, 128)
FPS = 25.0


def defect(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (30, 40), (90, 80), (0, 0, 255), -1)
    return out


@pytest.fixture(scope="module")
def video(demo_root, tmp_path_factory):
    goods = [D.load_image(p) for p in D.list_images(demo_root / "train" / "good")]
    path = tmp_path_factory.mktemp("tvideo") / "line.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, FRAME_HW[::-1])
    for i, kind in enumerate(PATTERN):
        img = goods[i % len(goods)]
        w.write(cv2.resize(img if kind == GOOD else defect(img), FRAME_HW[::-1]))
    w.release()
    return path


@pytest.fixture(scope="module")
def threshold(video, tiny_onnx):
    """Midway between the worst good and the mildest defect frame of the video."""
    scores = video_scores(tiny_onnx, video)
    good = [s for s, k in zip(scores, PATTERN) if k == GOOD]
    bad = [s for s, k in zip(scores, PATTERN) if k == BAD]
    assert min(bad) > max(good)
    return (min(bad) + max(good)) / 2


def station(tmp_path, bundle, source, threshold, trigger=None, **kw):
    cfg = {"station": "s1", "part": "demo", "bundle": str(bundle), "threshold": threshold,
           "frame_log": str(tmp_path / "frames.jsonl"), "camera": {"source": str(source)},
           "evidence": {"dir": str(tmp_path / "evidence"), "max_mb": 50.0},
           "trigger": {"enabled": True, "frame_timeout_s": 2.0, **(trigger or {})}}
    cfg.update(kw)
    return station_config_from_dict(cfg)


def parts_logged(tmp_path) -> list[dict]:
    return [r for r in map(json.loads, (tmp_path / "frames.jsonl").read_text().splitlines()) if r.get("kind") == "part"]


def run_threaded(cfg, **kw):
    """run_station in a thread as the service runs it; returns (stop, status, the Station once built, thread, out)."""
    import threading

    stop, status, box, out = StopFlag(), StationStatus(station=cfg.station, part=cfg.part), {}, {}
    thread = threading.Thread(target=lambda: out.update(stats=run_station(
        cfg, stop, status=status, opened=lambda s: box.update(st=s), **kw)), daemon=True)
    thread.start()
    assert wait_until(lambda: "st" in box or not thread.is_alive(), timeout=60), "station did not start"
    return stop, status, box.get("st"), thread, out


def expected(frame_index: int) -> str:
    return "nok" if PATTERN[frame_index % len(PATTERN)] == BAD else "ok"


def test_timer_triggers_on_a_video_file_one_result_each(tiny_onnx, video, threshold, tmp_path):
    """A real video file played at its frame rate: every trigger gets one result, judged on the first frame at or
    after trigger + delay, its verdict that frame's, NOK parts with evidence and region count."""
    cfg = station(tmp_path, tiny_onnx.parent, video, threshold, {"timer_s": 0.08, "delay_s": 0.02})
    stats = run_station(cfg, max_frames=10)
    rows = parts_logged(tmp_path)
    assert [r["seq"] for r in rows] == list(range(1, 11)) and [r["part_id"] for r in rows] == [str(i) for i in
                                                                                              range(1, 11)]
    assert all(r["verdict"] in ("ok", "nok") and r["source"] == "timer" for r in rows), rows
    for r in rows:
        assert r["verdict"] == expected(r["frame_index"])
        assert r["frame_time"] >= r["trigger_time"] + 0.02 - 1e-3  # at or after trigger + delay
        assert r["frame_time"] - r["trigger_time"] < 0.02 + 2.5 / FPS  # the first such frame, not a later one
        assert r["latency_ms"] > 0 and "infer_ms" in r["timings"] and r["model_version"]
        assert (r["regions"] > 0 and r["evidence"]) if r["verdict"] == "nok" else (r["regions"] == 0)
    assert {r["verdict"] for r in rows} == {"ok", "nok"}  # the pattern's 6-frame runs: both kinds seen in 10 parts
    assert stats.frames == 10  # each part's frame counted as an inspected frame


def test_triggers_after_the_file_ends_are_errors_not_silence(tiny_onnx, video, threshold, tmp_path):
    stop, status, st, thread, _ = run_threaded(station(tmp_path, tiny_onnx.parent, video, threshold))
    try:
        assert wait_until(lambda: st.camera.finished, timeout=30)
        st.line.queue.fire("http", "late-part")
        thread.join(30)
    finally:
        stop.set()
        thread.join(30)
    rows = parts_logged(tmp_path)
    assert [(r["part_id"], r["verdict"]) for r in rows] == [("late-part", "error")]
    assert "camera source ended" in rows[0]["reason"]


def test_gpio_light_barrier_and_rejector_in_part_order(tiny_onnx, video, threshold, tmp_path):
    """The fake GPIO backend: a bouncing light barrier gives one trigger per part; the rejector pulses NOK parts (and
    errors: fail-safe) reject.delay_s after their trigger, in order, with several parts on the conveyor."""
    delay = 0.6
    cfg = station(tmp_path, tiny_onnx.parent, video, threshold,
                  {"gpio_pin": 11, "gpio_debounce_s": 0.01, "frame_timeout_s": 0.3},
                  camera={"source": str(video), "live": True, "fps": 50.0},
                  gpio={"backend": "fake"}, reject={"enabled": True, "pin": 13, "delay_s": delay, "pulse_s": 0.03})
    stop, status, st, thread, _ = run_threaded(cfg)
    barrier, line = st.line.trigger_input, st.line.rejector.backend
    try:
        assert wait_until(lambda: st.camera.stats.grabbed > 5, timeout=30)
        times = []
        for i in range(8):
            t = barrier.edge(True)
            barrier.edge(True, t + 0.001)  # contact bounce: a second rising edge 1 ms later
            barrier.edge(False, t + 0.002)
            times.append(t)
            time.sleep(0.07)  # parts 70 ms apart: about 9 of them between camera and rejector
        st.line.queue.fire("http", "error-part").error = "forced error for the test"
        assert wait_until(lambda: status.parts_ok + status.parts_nok + status.parts_error == 9, timeout=30)
        assert wait_until(lambda: st.line.rejector.in_flight() == 0, timeout=10)
    finally:
        stop.set()
        thread.join(30)
    rows = parts_logged(tmp_path)
    assert len(rows) == 9 and [r["seq"] for r in rows] == list(range(1, 10))  # bounced edges gave no triggers
    assert [r["source"] for r in rows] == ["gpio"] * 8 + ["http"]
    assert len([e for e in barrier.edges if e[1] == 1]) == 16  # the fake recorded every edge, bounces included
    rejected = [r for r in rows if r["verdict"] in ("nok", "error")]
    assert rejected and rejected[-1]["verdict"] == "error"
    pulses = list(st.line.rejector.pulses)
    assert [p.seq for p in pulses] == [r["seq"] for r in rejected]  # in part order, nok and error
    for p in pulses:
        assert not p.late and 0.0 <= p.fired - p.due < 0.1  # at the set delay, never early (loose: 2 busy cores)
    by_seq = {i + 1: t for i, t in enumerate(times)}
    for p in pulses[:-1]:
        assert p.due == pytest.approx(by_seq[p.seq] + delay)
    highs = [t for t, level in line.transitions if level == 1]
    assert len(highs) >= 1 and line.transitions[-1][1] == 0  # the fake output recorded the pulses; ends inactive
    assert highs[0] == pytest.approx(pulses[0].fired, abs=0.01)


def test_mqtt_trigger_commands_and_one_result_message_per_part(tiny_onnx, video, threshold, tmp_path, mosquitto):
    sub = Subscriber(mosquitto, "edge_ad/s1/demo/result")
    cfg = station(tmp_path, tiny_onnx.parent, video, threshold, camera={"source": str(video), "live": True,
                                                                        "fps": 50.0},
                  mqtt={"enabled": True, "host": mosquitto.host, "port": mosquitto.port, "queue_dir": str(tmp_path / "q"),
                        "queue_fsync": False, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2})
    stop, status, st, thread, _ = run_threaded(cfg)
    try:
        import paho.mqtt.client as mqtt

        assert wait_until(lambda: status.broker == "connected", timeout=30)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        ids = ["A-100", "A-101", "", "A-103"]
        for i, pid in enumerate(ids):
            payload = json.dumps({"part_id": pid}) if i % 2 == 0 else pid
            pub.publish("edge_ad/s1/demo/trigger", payload, qos=1).wait_for_publish(5)
        pub.publish("edge_ad/s1/demo/trigger", "x" * 500, qos=1).wait_for_publish(5)  # refused: no trigger
        assert wait_until(lambda: len(sub.payloads()) >= 4, timeout=30)
        pub.loop_stop()
        pub.disconnect()
    finally:
        stop.set()
        thread.join(30)
    sub.sync(mosquitto, "edge_ad/s1/demo/result")
    got = sub.payloads()
    assert [g["part_id"] for g in got] == ["A-100", "A-101", "3", "A-103"]  # the third had none: the counter
    assert all(g["source"] == "mqtt" and g["verdict"] in ("ok", "nok") and g["station"] == "s1" for g in got)
    assert all(m.qos == 1 for m in sub.messages)
    sub.close()


def test_mjpeg_stream_best_of_n_and_a_camera_drop_gives_error(tiny_onnx, threshold, tmp_path):
    """A real HTTP MJPEG stream: best of 3 frames; while the stream is down a trigger gets `error` (no frame)."""
    cam = MjpegServer(fps=60.0).start()
    cfg = station(tmp_path, tiny_onnx.parent, cam.url, threshold, {"frames": 3, "frame_timeout_s": 0.5},
                  camera={"source": cam.url, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "open_timeout_s": 1.0,
                          "read_timeout_s": 0.5})
    stop, status, st, thread, _ = run_threaded(cfg)
    try:
        assert wait_until(lambda: st.camera.stats.grabbed > 3, timeout=30)
        st.line.queue.fire("http", "p1")
        assert wait_until(lambda: status.parts_ok + status.parts_nok == 1, timeout=30)
        cam.stop()
        assert wait_until(lambda: st.camera.state == "lost", timeout=30)
        st.line.queue.fire("http", "p2")
        assert wait_until(lambda: status.parts_error == 1, timeout=30)
        cam.start()
        assert wait_until(lambda: st.camera.state == "ok", timeout=30)
        st.line.queue.fire("http", "p3")
        assert wait_until(lambda: status.parts_ok + status.parts_nok == 2, timeout=30)
    finally:
        stop.set()
        thread.join(30)
        if cam._alive.is_set():
            cam.stop()
    rows = parts_logged(tmp_path)
    assert [(r["part_id"], r["verdict"] == "error") for r in rows] == [("p1", False), ("p2", True), ("p3", False)]
    assert "no frame" in rows[1]["reason"]


def test_no_model_and_a_full_queue_answer_error_with_the_reason(video, tmp_path):
    cfg = station(tmp_path, tmp_path / "missing", video, None, {"queue_max": 1},
                  camera={"source": str(video), "live": True, "fps": 50.0})
    stop, status, st, thread, _ = run_threaded(cfg)
    try:
        for i in range(3):
            st.line.queue.fire("http", f"q{i}")
        assert wait_until(lambda: status.parts_error == 3, timeout=30)
    finally:
        stop.set()
        thread.join(30)
    rows = parts_logged(tmp_path)
    assert len(rows) == 3 and all(r["verdict"] == "error" for r in rows)
    assert any("part bundle not found" in r["reason"] for r in rows)
    assert sum("trigger queue full" in r["reason"] for r in rows) >= 1


def test_best_of_n_takes_the_sharpest_frame():
    from edge_ad.station.camera import Frame

    sharp = np.zeros((64, 64), np.uint8)
    sharp[::4] = 255
    blurred = cv2.GaussianBlur(sharp, (9, 9), 3)
    frames = [Frame(blurred, 0, 0.0, "a"), Frame(sharp, 1, 0.0, "a"), Frame(blurred, 2, 0.0, "a")]
    assert sharpest(frames).index == 1


@pytest.mark.parametrize("section, message", [
    ({"trigger": {"gpio_edge": "up"}}, "trigger.gpio_edge: must be one of rising, falling"),
    ({"trigger": {"frames": 100}}, "trigger.frames: must be <= trigger.history"),
    ({"reject": {"enabled": True}}, "reject.pin: must be the reject output line"),
    ({"reject": {"encoder_pin": 5}}, "reject.distance_counts: must be > 0"),
    ({"opcua": {"host": "0.0.0.0"}}, "opcua.host: 0.0.0.0 is reachable from the network"),
    ({"opcua": {"security": "sign"}}, "opcua.security: sign needs opcua.cert_file"),
    ({"opcua": {"username": "plc"}}, "opcua.username: needs opcua.password_env"),
    ({"trigger": {"timer": 1}}, "trigger.timer: unknown key"),
    ({"gpio": {"enabled": True, "pin": 7}, "trigger": {"enabled": True, "gpio_pin": 7}},
     "trigger.gpio_pin: line 7 is already gpio.pin"),
    ({"trigger": {"enabled": True, "frame_timeout_s": 1.0}, "reject": {"enabled": True, "pin": 3, "delay_s": 0.8}},
     "reject.delay_s: must be > trigger.delay_s + trigger.frame_timeout_s"),
])
def test_bad_settings_name_the_key(section, message):
    with pytest.raises(EdgeAdError) as e:
        station_config_from_dict(section, "station.yaml")
    assert message in str(e.value) and "station.yaml" in str(e.value)


def test_http_trigger_with_the_token_results_and_metrics(tiny_onnx, video, threshold, tmp_path, monkeypatch):
    """POST /api/trigger on the real web server (the token as for the other changes); /api/results and /metrics
    count the parts and the trigger-to-result latency."""
    pytest.importorskip("waitress", reason="the web extra is not installed (pip install 'edge_ad[web]')")
    import urllib.error
    import urllib.request

    token = "a-token-long-enough-for-the-web-view"
    monkeypatch.setenv("EDGE_AD_WEB_TOKEN", token)
    cfg = station(tmp_path, tiny_onnx.parent, video, threshold, camera={"source": str(video), "live": True,
                                                                        "fps": 50.0},
                  web={"enabled": True, "port": 0, "token_env": "EDGE_AD_WEB_TOKEN"})
    stop, status, st, thread, _ = run_threaded(cfg)
    try:
        assert wait_until(lambda: st.camera.stats.grabbed > 3, timeout=30)
        url = st.web_url
        assert url.startswith("http://127.0.0.1:")

        def post(body: dict, headers: dict) -> tuple[int, dict]:
            req = urllib.request.Request(url + "api/trigger", json.dumps(body).encode(),
                                         {"Content-Type": "application/json", **headers}, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        assert post({"part_id": "W-1"}, {})[0] == 401  # no token: no trigger
        assert post({"part_id": "W-1"}, {"X-Edge-Ad-Token": "wrong" + token})[0] == 403
        code, doc = post({"part_id": "W-1"}, {"X-Edge-Ad-Token": token})
        assert code == 200 and doc["part_id"] == "W-1" and doc["seq"] == 1 and doc["queued"]
        assert post({"part_id": "x" * 200}, {"X-Edge-Ad-Token": token})[0] == 400
        assert wait_until(lambda: status.parts_ok + status.parts_nok == 1, timeout=30)
        with urllib.request.urlopen(url + "api/results", timeout=10) as r:
            res = json.loads(r.read())
        assert res["mode"] == "triggered" and res["ok"] + res["nok"] == 1 and res["rows"][0]["part_id"] == "W-1"
        assert res["latency_ms_p50"] > 0
        with urllib.request.urlopen(url + "metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'edge_ad_parts_total{part="demo",station="s1",verdict="error"} 0.0' in metrics
        assert "edge_ad_trigger_to_result_seconds_count" in metrics
    finally:
        stop.set()
        thread.join(30)
    assert status.triggers == 1
