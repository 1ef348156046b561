"""Issue 21, fail closed: a NaN model, a threshold change on the wrong version or far outside calibration, a bundle
without its manifest, a starved or filled web server and symlinks in the evidence are refusals or faults, never a
pass. Real parts: an exported tiny model (and a copy whose graph yields NaN), real bundles, run_station on a real
video, mosquitto, waitress on real sockets, separate processes racing for a part's lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_ad import bundle as B
from edge_ad import data as D
from edge_ad.errors import EdgeAdError
from edge_ad.station.config import station_config_from_dict
from edge_ad.station.loop import run_station
from edge_ad.station.model import load_bundle
from edge_ad.station.service import StopFlag
from edge_ad.station.status import StationStatus
from helpers import Subscriber, wait_until

TOKEN = "fail-closed-token-0123456789"


# ------------------------------------------------------------------------------------------------ shared pieces


def nan_graph(src: Path, dst: Path) -> Path:
    """The same graph with every output plus NaN: it loads and runs, and its maps are NaN."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    nan = numpy_helper.from_array(np.array(np.nan, np.float32), "edge_ad_nan")
    m.graph.initializer.append(nan)
    for out in m.graph.output:
        raw = out.name + "_raw"
        for node in m.graph.node:
            node.output[:] = [raw if o == out.name else o for o in node.output]
        m.graph.node.append(helper.make_node("Add", [raw, "edge_ad_nan"], [out.name]))
    onnx.save(m, str(dst))
    return dst


def model_files(tiny_onnx: Path, folder: Path, threshold: float | None = None, nan: bool = False,
                val: list[float] | None = None, synthetic: dict | None = None) -> dict[str, Path]:
    """model.onnx (or its NaN copy), model.json (optionally another threshold) and scores.json for a bundle."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = nan_graph(tiny_onnx, folder / "model.onnx") if nan else tiny_onnx
    info = json.loads(tiny_onnx.with_suffix(".json").read_text())
    if threshold is not None:
        info["threshold"] = threshold
    (folder / "model.json").write_text(json.dumps(info))
    files = {"model.onnx": onnx_path, "model.json": folder / "model.json"}
    if val is not None:
        doc = {"threshold": info["threshold"], "val_good": [{"image": f"g{i}.png", "score": s} for i, s in enumerate(val)]}
        if synthetic is not None:
            doc["synthetic"] = synthetic
        (folder / "scores.json").write_text(json.dumps(doc))
        files["scores.json"] = folder / "scores.json"
    return files


@pytest.fixture(scope="module")
def video(demo_root, tmp_path_factory) -> Path:
    goods = [D.load_image(p) for p in D.list_images(demo_root / "train" / "good")]
    path = tmp_path_factory.mktemp("fc_video") / "line.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 128))
    for i in range(20):
        w.write(cv2.resize(goods[i % len(goods)], (128, 128)))
    w.release()
    return path


def station_raw(tmp_path: Path, video: Path, **kw) -> dict:
    raw = {"station": "s1", "part": "demo", "parts_dir": str(tmp_path / "parts"),
           "frame_log": str(tmp_path / "frames.jsonl"),
           "camera": {"source": str(video), "live": True, "fps": 50.0},
           "evidence": {"dir": str(tmp_path / "evidence")}, "fault": {"retry_s": 0.1, "frame_errors": 3},
           "gpio": {"enabled": True, "backend": "fake", "fault_pin": 11}}
    raw.update(kw)
    return raw


def run_in_thread(cfg):
    stop, status, out = StopFlag(), StationStatus(station=cfg.station, part=cfg.part), {}
    thread = threading.Thread(target=lambda: out.update(stats=run_station(cfg, stop, status=status)), daemon=True)
    thread.start()
    return stop, status, thread, out


# ------------------------------------------------------------------------------------------------ 1: NaN model


def test_a_model_that_outputs_nan_is_a_detector_fault_and_predict_eval_say_error(tiny_onnx, video, demo_root,
                                                                                 mosquitto, tmp_path, capsys):
    from edge_ad.cli import main

    files = model_files(tiny_onnx, tmp_path / "nan", nan=True)
    B.write_bundle(tmp_path / "parts", "demo", files, {"readiness": {"ready": True, "reason": "judged"}})
    sub = Subscriber(mosquitto, "edge_ad/s1/demo/status")
    raw = station_raw(tmp_path, video, mqtt={"enabled": True, "host": "127.0.0.1", "port": mosquitto.port,
                                             "queue_dir": str(tmp_path / "q"), "queue_fsync": False})
    stop, status, thread, _ = run_in_thread(station_config_from_dict(raw))
    try:
        assert wait_until(lambda: status.state == "fault", timeout=60)
        assert "non-finite" in status.fault and "no frame inspected" in status.fault
        assert status.frames == 0 and status.anomalous == 0 and status.errors >= 3 and not status.healthy(5.0)
        assert wait_until(lambda: any(m["state"] == "fault" and "non-finite" in m.get("reason", "")
                                      for m in sub.payloads()), timeout=30)
    finally:
        stop.set()
        thread.join(60)
        sub.close()
    image = D.list_images(demo_root / "test" / "good")[0]
    assert main(["predict", str(image), "--model", str(tmp_path / "parts" / "demo" / "current"),
                 "--out", str(tmp_path / "pred")]) == 1
    out = capsys.readouterr()
    assert "score=nan" not in out.out and "\tok\t" not in out.out and f"{image}\terror\t" in out.err
    assert main(["eval", str(tmp_path / "nan" / "model.onnx"), "--data", str(demo_root),
                 "--out", str(tmp_path / "eval")]) == 2  # nothing scored: no AUROC to give
    assert "too few images scored" in capsys.readouterr().err
    assert main(["predict", str(image), "--model", str(tiny_onnx), "--threshold", "nan", "--out",
                 str(tmp_path / "pred")]) == 2  # a NaN threshold would pass every frame
    assert "threshold must be a finite number" in capsys.readouterr().err


def test_eval_lists_each_nan_image_as_an_error(tiny_onnx, demo_root, tmp_path):
    """One image whose score is NaN among finite ones: named, left out, the metrics of the rest."""
    from edge_ad.runtime.evaluate import evaluate
    from edge_ad.runtime.detector import function_detector
    from edge_ad.runtime.detector import open_detector

    det = open_detector(tiny_onnx)
    bad = D.list_split(demo_root, "test")[0].path
    first = D.preprocess(D.load_image(bad), det.info.data)

    def infer(batch):
        outs = det.session.run(batch)
        hit = [i for i, x in enumerate(batch) if np.array_equal(x, first)]
        for o in outs:
            o[hit] = np.nan
        return outs

    errors: list = []
    res = evaluate(function_detector(infer, det.info.data, det.info.scoring), demo_root, errors=errors)
    assert [p for p, _ in errors] == [bad] and res["errors"][0]["image"] == str(bad)
    assert res["n_images"] == len(D.list_split(demo_root, "test")) - 1 and np.isfinite(res["image_auroc"])
    with pytest.raises(EdgeAdError, match="non-finite"):  # without a list to put it in: refused, never a score
        evaluate(function_detector(infer, det.info.data, det.info.scoring), demo_root)


# ------------------------------------------------------------------------------------------------ 4: no manifest


def test_a_bundle_without_its_manifest_under_parts_dir_is_a_fault(tiny_onnx, video, tmp_path, caplog):
    parts = tmp_path / "parts"
    v1 = B.write_bundle(parts, "demo", model_files(tiny_onnx, tmp_path / "m"),
                        {"readiness": {"ready": False, "reason": "12 validation images"}})
    (v1 / B.MANIFEST).unlink()  # one deleted file must not remove every check
    cfg = station_config_from_dict(station_raw(tmp_path, video))
    with pytest.raises(EdgeAdError, match="has no manifest.json: under parts_dir that is not a part bundle"):
        load_bundle(cfg)
    stop, status, thread, _ = run_in_thread(cfg)
    try:
        assert wait_until(lambda: status.state == "fault", timeout=30)
        assert "no manifest.json" in status.fault and status.frames == 0
    finally:
        stop.set()
        thread.join(60)
    # a model file added beside a manifest that does not list it (`auto` would prefer an engine) is refused too
    v2 = B.write_bundle(parts, "demo", {"model.json": tmp_path / "m" / "model.json"}, {})
    (v2 / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(EdgeAdError, match="model.onnx not listed in its manifest.json"):
        load_bundle(cfg)
    # an explicit `bundle:` folder (development) says so and runs
    dev = station_config_from_dict(station_raw(tmp_path, video, bundle=str(v1)))
    with caplog.at_level("WARNING"):
        assert load_bundle(dev).version == "v1"
    assert "has no manifest.json: running it unchecked" in caplog.text


# ------------------------------------------------------------------------------------------------ 6: evidence links


def web_station(tmp_path: Path, monkeypatch, **web):
    """A real waitress on a free port over a StationStatus as the loop leaves it (v1 of part demo running)."""
    from edge_ad.station.web import start_web

    monkeypatch.setenv("EDGE_AD_FC_TOKEN", TOKEN)
    cfg = station_config_from_dict({
        "station": "s1", "part": "demo", "parts_dir": str(tmp_path / "parts"), "evidence": {"dir": str(tmp_path / "ev")},
        "web": {"enabled": True, "port": 0, "token_env": "EDGE_AD_FC_TOKEN", **web}})
    status = StationStatus(station="s1", part="demo")
    status.update(state="running", camera="ok")
    stop = StopFlag()
    return start_web(cfg, status, stop), cfg, status, stop


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_evidence_is_served_only_from_regular_files_inside_the_evidence_folder(tmp_path, monkeypatch):
    web, cfg, status, _ = web_station(tmp_path, monkeypatch)
    try:
        ev = Path(cfg.evidence.dir)
        ok = ev / "00000001_20260101T000000.000Z"
        ok.mkdir(parents=True)
        cv2.imwrite(str(ok / "overlay.jpg"), np.full((8, 8, 3), 99, np.uint8))
        (ok / "boxes.json").symlink_to("/etc/passwd")
        (ok / "original.jpg").symlink_to(ok / "overlay.jpg")  # even a link to a file inside
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "overlay.jpg").write_bytes((ok / "overlay.jpg").read_bytes())
        (ev / "00000002_20260101T000001.000Z").symlink_to(elsewhere, target_is_directory=True)
        assert get(web.url + f"evidence/{ok.name}/overlay.jpg")[0] == 200
        for path in (f"{ok.name}/boxes.json", f"{ok.name}/original.jpg", "00000002_20260101T000001.000Z/overlay.jpg",
                     "00000002_20260101T000001.000Z/thumb.jpg"):
            code, body = get(web.url + "evidence/" + path)
            assert code == 404 and b"root:" not in body, path
        assert get(web.url + "alarm/00000002_20260101T000001.000Z")[0] == 404
        code, body = get(web.url + "api/alarms")
        rows = json.loads(body)["rows"]
        assert code == 200 and [r["id"] for r in rows] == [ok.name] and rows[0]["original"] is None
        assert b"root:" not in get(web.url + f"alarm/{ok.name}")[1]
    finally:
        web.close()


# ------------------------------------------------------------------------------------------------ 2: named versions


def post(url: str, body: dict, token: str = TOKEN, timeout: float = 10.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Edge-Ad-Token": token})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def runs(status: StationStatus, parts: Path, version: int) -> None:
    """What the loop reports once it has loaded v<version> of part demo."""
    man = B.read_manifest(parts / "demo" / f"v{version}")
    status.update(version=f"v{version}", bundle=str((parts / "demo" / f"v{version}").resolve()),
                  threshold=man.get("threshold"))


VAL = [1.0 + 0.025 * i for i in range(11)]  # validation goods 1.0 .. 1.25, as calibrate stores them
SYNTHETIC = {"good": VAL, "defect": [1.4, 1.6, 2.0, 1.2, 1.5, 1.9], "sizes": ["small", "medium", "large"] * 2}
READY = {"ready": True, "reason": "judged at 1.317", "rules": {"max_false_alarm_rate": 0.05, "min_image_auroc": 0.9,
                                                                "min_detection_large": 0.5},
         "false_alarms": {"rate": 0.024, "ci_low": 0.0, "ci_high": 0.1, "goods": 11}, "synthetic": {"image_auroc": 0.97}}


def test_a_threshold_change_and_a_rollback_act_on_the_version_the_operator_saw(tiny_onnx, tmp_path, monkeypatch,
                                                                                caplog):
    parts = tmp_path / "parts"
    B.write_bundle(parts, "demo", model_files(tiny_onnx, tmp_path / "rd", 1.317, val=VAL),
                   {"method": "rd", "threshold": 1.317, "readiness": READY})
    web, cfg, status, stop = web_station(tmp_path, monkeypatch)
    try:
        runs(status, parts, 1)
        # calibrate makes v2 (another method, another score scale) current; the station runs v1 until SIGHUP
        B.write_bundle(parts, "demo", model_files(tiny_onnx, tmp_path / "gauss", 32.5, val=[20.0, 30.0]),
                       {"method": "gauss", "threshold": 32.5})
        url = web.url + "api/threshold"
        code, body = post(url, {"threshold": 1.3, "who": "ana", "running": "v1"})
        assert code == 400 and "current is v2, not v1" in body["error"]
        code, body = post(url, {"threshold": 1.3, "who": "ana", "running": "v2"})
        assert code == 400 and "the page showed v2 but the station runs v1" in body["error"]
        assert B.versions(parts, "demo") == [1, 2] and B.current_version(parts, "demo") == 2 and not stop.reload_requested()
        # rollback names what the page showed as current: a stale page is refused, the right one switches
        rb = web.url + "api/rollback"
        assert post(rb, {"version": 1, "who": "ana", "running": "v1", "current": 1})[0] == 400
        assert post(rb, {"version": 1, "who": "ana", "running": "v1", "current": 2})[0] == 200
        assert B.current_version(parts, "demo") == 1 and stop.reload_requested()
        with caplog.at_level("INFO"):
            code, body = post(url, {"threshold": 1.3, "who": "ana", "running": "v1"})
        assert code == 200 and body["version"] == "v3"
        man = B.read_manifest(parts / "demo" / "v3")
        assert man["method"] == "rd" and man["threshold_change"]["from_version"] == "v1"
        assert man["threshold_change"]["old"] == 1.317 and "from 1.317 to 1.3" in caplog.text  # one old value
        assert json.loads((parts / "demo" / "v3" / "model.json").read_text())["threshold"] == 1.3
    finally:
        web.close()


def _writer(root: str, n: int, payload: str, go) -> None:
    """A separate process writing n versions as calibrate does (B.write_bundle activates each)."""
    src = Path(root) / f"src_{payload}"
    src.mkdir(exist_ok=True)
    (src / "model.onnx").write_text(payload)
    go.wait()
    for _ in range(n):
        B.write_bundle(Path(root) / "parts", "demo", {"model.onnx": src / "model.onnx"}, {"payload": payload})


def _threshold_writer(root: str, go, out) -> None:
    """A web change made while looking at v1, racing the calibrate writers."""
    go.wait()
    try:
        B.write_threshold_version(Path(root) / "parts", "demo", 1.3, "web", from_version=1, confirm=True)
        out.put("written")
    except EdgeAdError as e:
        out.put(str(e))


def test_writers_in_separate_processes_take_the_next_version_and_never_undo_a_calibrate(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    src = tmp_path / "v1"
    src.mkdir()
    (src / "model.onnx").write_text("v1")
    (src / "model.json").write_text(json.dumps({"threshold": 1.0}))
    B.write_bundle(tmp_path / "parts", "demo", {"model.onnx": src / "model.onnx", "model.json": src / "model.json"},
                   {"payload": "v1"})
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 3, f"cal{i}", go)) for i in range(3)]
    procs.append(ctx.Process(target=_threshold_writer, args=(str(tmp_path), go, out)))
    for p in procs:
        p.start()
    time.sleep(1.0)  # every process imported and waiting
    go.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]  # nobody failed on a taken number
    parts = tmp_path / "parts"
    result = out.get(timeout=5)
    assert B.versions(parts, "demo") == list(range(1, 11 + (result == "written")))
    assert all(not B.verify(parts / "demo" / f"v{v}") for v in B.versions(parts, "demo"))
    assert B.read_manifest(B.resolve(parts, "demo"))["payload"].startswith("cal")  # a calibrate's model stays current
    assert result == "written" or "current is v" in result
    assert not B.leftovers(parts, "demo")


# ------------------------------------------------------------------------------------------------ 3: far thresholds


def test_a_threshold_far_outside_calibration_needs_confirming_and_readiness_is_judged_at_it(tiny_onnx, tmp_path,
                                                                                           monkeypatch, capsys):
    from edge_ad.cli import main

    parts = tmp_path / "parts"
    B.write_bundle(parts, "demo", model_files(tiny_onnx, tmp_path / "a", 1.317, val=VAL, synthetic=SYNTHETIC),
                   {"method": "rd", "threshold": 1.317, "readiness": READY,
                    "metrics": {"val_false_alarm_rate": 0.024, "f1": 0.9, "image_auroc": 0.97}})
    web, cfg, status, stop = web_station(tmp_path, monkeypatch)
    url = web.url + "api/threshold"
    try:
        runs(status, parts, 1)
        for far in (1e300, 1e-300, 13170.0):
            code, body = post(url, {"threshold": far, "who": "ana", "running": "v1"})
            assert code == 409 and body["confirm_needed"] and "outside what calibration measured" in body["error"]
        assert B.versions(parts, "demo") == [1]
        # confirmed: written, and judged at the new threshold: 13170 lets every synthetic defect through
        code, body = post(url, {"threshold": 13170.0, "who": "ana", "running": "v1", "confirm": True})
        assert code == 400 and "would not be ready at it" in body["error"] and "large synthetic" in body["error"]
        code, body = post(url, {"threshold": 1.1, "who": "ana", "running": "v1"})  # inside the window, but
        assert code == 400 and "false alarms 63.6%" in body["error"]  # 7 of 11 goods (1.1 .. 1.25) would alarm
        code, body = post(url, {"threshold": 1.3, "who": "ana", "running": "v1"})
        assert code == 200 and body["version"] == "v2"
        man = B.read_manifest(parts / "demo" / "v2")
        rd = man["readiness"]
        assert rd["ready"] and rd["judged"] and rd["judged_at"] == 1.3 and rd["false_alarms"]["threshold"] == 1.3
        assert rd["false_alarms"]["rate"] == 0.0 and rd["detection"] == {"small": 0.5, "medium": 1.0, "large": 1.0}
        assert man["metrics"]["val_false_alarm_rate"] == 0.0 and man["metrics"]["image_auroc"] == 0.97
    finally:
        web.close()
    # without synthetic scores: "not judged at this threshold", and no estimate measured elsewhere is shown
    B.write_bundle(parts, "other", model_files(tiny_onnx, tmp_path / "b", 1.317, val=VAL),
                   {"method": "rd", "threshold": 1.317, "readiness": READY,
                    "metrics": {"val_false_alarm_rate": 0.024, "f1": 0.9, "image_auroc": 0.97}})
    v2 = B.write_threshold_version(parts, "other", 1.2, "ana", from_version=1)
    man = B.read_manifest(v2)
    assert man["readiness"]["ready"] is None and "not judged at this threshold" in man["readiness"]["reason"]
    assert "f1" not in man["metrics"] and man["metrics"]["val_false_alarm_rate"] == pytest.approx(3 / 11)
    capsys.readouterr()
    assert main(["parts", "show", "other", "--parts-root", str(parts)]) == 0
    shown = capsys.readouterr().out
    v2_line = next(line for line in shown.splitlines() if " v2 " in line)
    assert "2.4%" not in v2_line and "not judged at this threshold" in shown


# ------------------------------------------------------------------------------------------------ 5: bounded web


def test_idle_and_slow_clients_cannot_hold_the_web_server_and_bodies_are_refused_unread(tmp_path, monkeypatch):
    web, cfg, status, _ = web_station(tmp_path, monkeypatch, max_connections=8, idle_timeout_s=1.0,
                                      health_max_age_s=3600.0)
    status.record_frame(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32), 0.1, 1.0, False, 5.0, time.time())
    host, port = "127.0.0.1", int(web.url.rsplit(":", 1)[1].strip("/"))
    held = []
    try:
        for i in range(60):  # idle connections and slowloris (half a header) from one client
            s = socket.create_connection((host, port), timeout=5)
            if i % 2:
                s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(s)
        times = []
        for _ in range(20):
            t0 = time.monotonic()
            code, body = get(web.url + "healthz", timeout=5)
            times.append(time.monotonic() - t0)
            assert code == 200 and body == b"ok\n"
        assert max(times) < 2.0, times
        with open("/proc/self/io") as f:
            before = int(next(line for line in f if line.startswith("write_bytes")).split()[1])
        s = socket.create_connection((host, port), timeout=10)
        size = 200 * 2**20
        s.sendall(f"POST /api/threshold HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {size}\r\nX-Edge-Ad-Token: {TOKEN}\r\n\r\n".encode())
        reply = s.recv(4096)  # answered on the headers alone
        sent = 0
        try:
            while sent < size:
                sent += s.send(b"x" * 65536)
        except OSError:  # reset: the server closed the connection without reading the body
            pass
        s.close()
        with open("/proc/self/io") as f:
            after = int(next(line for line in f if line.startswith("write_bytes")).split()[1])
        assert reply.startswith(b"HTTP/1.1 413"), reply[:80]
        assert sent < 64 * 2**20 and after - before < 4 * 2**20  # refused before the body, nothing spooled to disk
    finally:
        for s in held:
            s.close()
        web.close()
