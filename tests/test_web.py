"""The web view's routes without a browser (Flask's test client): the token and CSRF rules, what each JSON route
and page shows, evidence serving, threshold change and rollback through the reload flag, /healthz, /metrics,
and that the live view encodes at a capped rate outside the loop. The browser test is test_web_browser.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flask", reason="the web extra is not installed (pip install 'edge_ad[web]')")
pytest.importorskip("waitress", reason="the web extra is not installed (pip install 'edge_ad[web]')")
pytest.importorskip("prometheus_client", reason="the web extra is not installed (pip install 'edge_ad[web]')")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from edge_ad import bundle as B  # noqa: E402
from edge_ad.config import parse_host_port  # noqa: E402
from edge_ad.errors import EdgeAdError  # noqa: E402
from edge_ad.station.config import station_config_from_dict  # noqa: E402
from edge_ad.station.evidence import EvidenceStore  # noqa: E402
from edge_ad.station.service import StopFlag  # noqa: E402
from edge_ad.station.status import AlarmRecord, StationStatus  # noqa: E402
from edge_ad.station.web import start_web  # noqa: E402
from edge_ad.station.web.app import create_app  # noqa: E402
from edge_ad.station.web.context import WebContext  # noqa: E402
from edge_ad.station.web.live import LiveEncoder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "correct-horse-battery-staple-42"
HEADER = "X-Edge-Ad-Token"


def make_part(root: Path, threshold: float = 0.5) -> Path:
    """parts/disc/v1 with a fake model (the routes never run it) and a readiness verdict."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.onnx").write_text("not a real graph")
    (src / "model.json").write_text(json.dumps({"data": {}, "scoring": {}, "threshold": threshold, "meta": {}}))
    (src / "scores.json").write_text(json.dumps({"threshold": threshold, "val_good": [
        {"image": f"g{i}.png", "score": 0.3 + 0.01 * i} for i in range(10)]}))  # 0.30 .. 0.39
    manifest = {"method": "rd", "threshold": threshold, "metrics": {"val_false_alarm_rate": 0.02, "image_auroc": 0.97},
                "readiness": {"ready": False, "reason": "only 40 good images; 200 recommended"}}
    files = {n: src / n for n in ("model.onnx", "model.json", "scores.json")}
    return B.write_bundle(root / "parts", "disc", files, manifest)


class Station:
    """A StationStatus as the loop would leave it, and the app around it."""

    def __init__(self, tmp: Path, monkeypatch, **web):
        monkeypatch.setenv("EDGE_AD_WEB_TOKEN", TOKEN)
        make_part(tmp)
        self.cfg = station_config_from_dict({
            "station": "s1", "part": "disc", "parts_dir": str(tmp / "parts"),
            "evidence": {"dir": str(tmp / "evidence")},
            "web": {"enabled": True, "port": 0, "token_env": "EDGE_AD_WEB_TOKEN", **web}})
        self.status = StationStatus(station="s1", part="disc")
        self.status.update(state="running", version="v1", bundle=str(B.resolve(tmp / "parts", "disc")), method="rd",
                           backend="onnxruntime", camera="ok")
        self.stop = StopFlag()
        self.ctx = WebContext.create(self.cfg, self.status, self.stop)
        self.client = create_app(self.ctx).test_client()

    def frame(self, score: float = 0.2, anomaly: bool = False, latency_ms: float = 12.0) -> None:
        img = np.full((96, 128, 3), 90, np.uint8)
        self.status.record_frame(img, np.full((32, 32), score, np.float32), score, 0.5, anomaly, latency_ms, time.time())


@pytest.fixture()
def station(tmp_path, monkeypatch):
    return Station(tmp_path, monkeypatch)


def test_changes_need_the_token_and_a_post_from_this_site(station):
    c = station.client
    body = {"threshold": 0.7, "who": "ana"}
    assert c.post("/api/threshold", json=body).status_code == 401  # no token
    assert c.post("/api/threshold", json=body, headers={HEADER: "wrong" + TOKEN}).status_code == 403
    assert c.post("/api/threshold", json=body, headers={HEADER: TOKEN, "Origin": "https://evil.example"}).status_code == 403
    assert c.post("/api/threshold", json=body, headers={HEADER: TOKEN, "Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert c.get("/api/threshold").status_code == 405  # no state change on GET
    c.set_cookie("token", TOKEN)  # a cookie is never a token: a cross-site form would send it
    assert c.post("/api/threshold", data=body).status_code == 401
    assert B.versions(station.cfg.parts_dir, "disc") == [1] and not station.stop.reload_requested()
    assert c.post("/api/threshold", json={"threshold": 0.7}, headers={HEADER: TOKEN}).status_code == 400  # who?
    assert c.post("/api/threshold", json={"threshold": "x", "who": "ana"}, headers={HEADER: TOKEN}).status_code == 400
    assert c.post("/api/threshold", json={"threshold": -1, "who": "ana"}, headers={HEADER: TOKEN}).status_code == 400
    assert B.versions(station.cfg.parts_dir, "disc") == [1] and not station.stop.reload_requested()


def reloaded(station, version: int) -> None:
    """What the loop does on the reload a change requests: it runs the new current version."""
    assert station.stop.reload_requested()  # reading it clears it
    station.status.update(version=f"v{version}", bundle=str(Path(station.cfg.parts_dir) / "disc" / f"v{version}"))


def test_threshold_change_writes_a_version_and_reloads_like_sighup(station):
    r = station.client.post("/api/threshold", json={"threshold": 0.5, "who": "ana"}, headers={HEADER: TOKEN})
    assert r.status_code == 400 and "running" in r.json["error"]  # the page must say which version it shows
    r = station.client.post("/api/threshold", json={"threshold": 0.5, "who": "ana", "running": "v1"},
                            headers={HEADER: TOKEN, "Origin": "http://localhost"})
    assert r.status_code == 200 and r.json["version"] == "v2"
    assert B.current_version(station.cfg.parts_dir, "disc") == 2
    change = B.read_manifest(Path(station.cfg.parts_dir) / "disc" / "v2")["threshold_change"]
    assert (change["old"], change["new"], change["who"]) == (0.5, 0.5, "ana (web, 127.0.0.1)")
    r = station.client.post("/api/threshold", json={"threshold": 0.6, "who": "bo", "running": "v1"},
                            headers={HEADER: TOKEN})
    assert r.status_code == 400 and "current is v2" in r.json["error"]  # the station has not reloaded v2 yet
    reloaded(station, 2)
    # a form post with the token as a field works too (no JavaScript needed)
    r = station.client.post("/api/threshold", data={"threshold": "0.6", "who": "bo", "token": TOKEN, "running": "v2"})
    assert r.status_code == 200 and r.json["version"] == "v3"
    parts = station.client.get("/api/parts").json
    assert parts["current"] == 3 and [v["version"] for v in parts["versions"]] == [3, 2, 1]
    assert parts["versions"][0]["threshold_change"]["new"] == 0.6 and parts["versions"][2]["metrics"]["image_auroc"] == 0.97
    assert parts["versions"][0]["metrics"]["val_false_alarm_rate"] == 0.0  # recomputed at 0.6, not 0.02 from v1
    r = station.client.post("/api/rollback", json={"version": 1, "who": "ana", "running": "v2", "current": 3},
                            headers={HEADER: TOKEN})
    assert r.status_code == 200 and B.current_version(station.cfg.parts_dir, "disc") == 1
    assert station.stop.reload_requested()
    r = station.client.post("/api/rollback", json={"version": 9, "who": "ana", "running": "v2", "current": 1},
                            headers={HEADER: TOKEN})
    assert r.status_code == 400 and "no version v9" in r.json["error"]


def test_changes_are_off_without_token_or_with_a_fixed_bundle_or_threshold(tmp_path, monkeypatch):
    s = Station(tmp_path, monkeypatch)
    for cfg_change, reason in ((dict(token=None), "no token"), (dict(bundle="/x"), "fixed bundle"),
                               (dict(threshold=0.3), "overrides every bundle")):
        ctx = WebContext.create(s.cfg, s.status, s.stop)
        for key, value in cfg_change.items():
            setattr(ctx if key == "token" else ctx.cfg, key, value)
        client = create_app(ctx).test_client()
        r = client.post("/api/threshold", json={"threshold": 0.7, "who": "a", "running": "v1"}, headers={HEADER: TOKEN})
        assert r.status_code in (400, 403) and reason.split()[-1] in r.json["error"]
        assert reason.split()[-1] in client.get("/api/status").json["changes_off"]
        s.cfg.bundle, s.cfg.threshold = "", None
    assert B.versions(s.cfg.parts_dir, "disc") == [1]


def test_status_scores_and_page(station):
    for i in range(30):
        station.frame(score=0.6 if i % 10 == 9 else 0.2, anomaly=i % 10 == 9)
    s = station.client.get("/api/status").json
    assert (s["frames"], s["anomalous"], s["ok"], s["version"], s["method"], s["backend"]) == (30, 3, 27, "v1", "rd", "onnxruntime")
    assert s["readiness"] == {"ready": False, "reason": "only 40 good images; 200 recommended"}
    assert s["latency_ms_p99"] == pytest.approx(12.0) and s["healthy"] and s["verdict"] == "anomaly"  # the newest frame
    assert s["camera"] == "ok" and s["broker"] == "off" and "token" not in json.dumps(s).lower().replace("no token", "")
    d = station.client.get("/api/scores").json
    assert len(d["points"]) == 30 and d["threshold"] == 0.5 and d["span_s"] == 300
    page = station.client.get("/").get_data(as_text=True)
    assert 'id="live"' in page and 'id="alarms"' in page and "s1" in page and TOKEN not in page
    r = station.client.get("/")
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"] and r.headers["X-Frame-Options"] == "DENY"


def test_score_plot_keeps_the_peak_of_every_bucket():
    from edge_ad.station.web.routes import downsample

    rng = np.random.default_rng(0)
    points = [(i * 0.01, float(v)) for i, v in enumerate(rng.random(3601))]
    points[1234] = (12.34, 5.0)  # one spike among thousands of frames
    out = downsample(points, 600)
    step = -(-len(points) // 600)
    assert len(out) <= 600 and [12.34, 5.0] in out
    for k, (t, v) in enumerate(out):
        bucket = points[k * step:(k + 1) * step]
        assert v == max(s for _, s in bucket) and (t, v) in bucket
    assert downsample(points[:3], 600) == [list(p) for p in points[:3]]


def test_alarm_rows_thumbnails_and_evidence_files(station):
    store = EvidenceStore(station.cfg.evidence)
    img = np.full((120, 160, 3), 100, np.uint8)
    amap = np.zeros((32, 32), np.float32)
    amap[10:20, 10:20] = 1.0
    store.save(img, amap, 0.5, 0.9, meta={"frame": 9, "model": "v1"})
    assert [r["frame"] for r in station.client.get("/api/alarms").json["rows"]] == [9]
    store.save(img, amap, 0.5, 0.9, meta={"frame": 22, "model": "v1"})  # at once: the cached listing sees the change
    rows = station.client.get("/api/alarms").json["rows"]
    assert [r["frame"] for r in rows] == [22, 9] and rows[0]["score"] == 0.9 and rows[0]["boxes"] == 1
    name = rows[0]["id"]
    thumb = station.client.get(f"/evidence/{name}/thumb.jpg")
    assert thumb.status_code == 200 and thumb.data[:2] == b"\xff\xd8"
    assert station.client.get(f"/evidence/{name}/overlay.jpg").status_code == 200
    assert station.client.get(f"/evidence/{name}/boxes.json").json["frame"] == 22
    page = station.client.get(f"/alarm/{name}").get_data(as_text=True)
    assert "overlay.jpg" in page and "original.jpg" in page and "0.9000" in page
    for bad in (f"/evidence/{name}/../../../etc/passwd", f"/evidence/{name}/manifest.json", "/evidence/..%2f..%2fetc/passwd",
                "/evidence/notanevent/overlay.jpg", "/alarm/..%2fparts"):
        assert station.client.get(bad).status_code == 404, bad


def test_alarms_without_evidence_come_from_the_status(tmp_path, monkeypatch):
    s = Station(tmp_path, monkeypatch)
    s.cfg.evidence.enabled = False
    s.status.record_alarm(AlarmRecord(time.time(), 7, 0.8, 0.5, "", 2))
    rows = s.client.get("/api/alarms").json["rows"]
    assert len(rows) == 1 and rows[0]["id"] is None and rows[0]["frame"] == 7 and rows[0]["boxes"] == 2


def test_healthz_only_while_frames_flow_and_the_detector_is_loaded(station):
    assert station.client.get("/healthz").status_code == 503  # no frame yet
    station.frame()
    assert station.client.get("/healthz").status_code == 200
    station.status.update(state="fault", fault="bundle v3 does not load")
    r = station.client.get("/healthz")
    assert r.status_code == 503 and "does not load" in r.get_data(as_text=True)
    station.status.update(state="running", last_frame_time=time.time() - 60)
    assert station.client.get("/healthz").status_code == 503


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_parse_and_count(station):
    station.status.update(queue_depth=3, reconnects=2, dropped=5)
    station.frame(latency_ms=7.0)
    station.frame(latency_ms=70.0)
    r = station.client.get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    m = samples(r.get_data(as_text=True))
    base = (("part", "disc"), ("station", "s1"))
    assert m[("edge_ad_frames_total", base)] == 2 and m[("edge_ad_mqtt_queue_depth", base)] == 3
    assert m[("edge_ad_camera_reconnects_total", base)] == 2 and m[("edge_ad_dropped_frames_total", base)] == 5
    assert m[("edge_ad_latency_seconds_bucket", tuple(sorted(base + (("le", "0.01"),))))] == 1
    assert m[("edge_ad_latency_seconds_count", base)] == 2 and m[("edge_ad_latency_seconds_sum", base)] == pytest.approx(0.077)
    info = tuple(sorted(base + (("version", "v1"), ("method", "rd"), ("backend", "onnxruntime"))))
    assert m[("edge_ad_bundle_info", info)] == 1
    station.frame()
    assert samples(station.client.get("/metrics").get_data(as_text=True))[("edge_ad_frames_total", base)] == 3


def test_protect_read_needs_the_token_or_a_login(tmp_path, monkeypatch):
    s = Station(tmp_path, monkeypatch, protect_read=True)
    c = s.client
    assert c.get("/").status_code == 302 and c.get("/api/status").status_code == 401
    assert c.get("/metrics").status_code == 401 and c.get("/live.jpg").status_code == 401
    assert c.get("/healthz").status_code == 503  # open: it tells only whether frames flow
    assert c.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200  # how Prometheus asks
    assert c.post("/login", data={"token": "nope"}).status_code == 403
    r = c.post("/login", data={"token": TOKEN})
    assert r.status_code == 302
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert c.get("/api/status").status_code == 200
    # logged in to read is not allowed to change: a change still needs the token itself
    assert c.post("/api/threshold", json={"threshold": 0.7, "who": "a"}).status_code == 401


def test_token_from_file_config_errors_and_cli_flag(tmp_path):
    from edge_ad.station.web.auth import load_token

    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    cfg = station_config_from_dict({"web": {"token_file": str(f)}})
    assert load_token(cfg.web) == TOKEN
    f.write_text("short\n")
    with pytest.raises(EdgeAdError, match="shorter than"):
        load_token(cfg.web)
    cfg.web.token_file = str(tmp_path / "missing")
    with pytest.raises(EdgeAdError, match="cannot read"):
        load_token(cfg.web)
    for web, msg in (({"port": 70000}, "web.port"), ({"token_env": "A", "token_file": "b"}, "web.token_file"),
                     ({"protect_read": True}, "web.protect_read"), ({"threads": 2, "live_clients": 4}, "web.threads"),
                     ({"live_fps": 0}, "web.live_fps"), ({"hots": 1}, "web.hots")):
        with pytest.raises(EdgeAdError, match=msg):
            station_config_from_dict({"web": web})
    assert station_config_from_dict({}).web.enabled is False and station_config_from_dict({}).web.host == "127.0.0.1"
    assert parse_host_port("127.0.0.1:8080") == ("127.0.0.1", 8080) and parse_host_port("[::1]:9") == ("::1", 9)
    assert parse_host_port("8080") == ("127.0.0.1", 8080)
    with pytest.raises(EdgeAdError, match="HOST:PORT"):
        parse_host_port("localhost:http")


def test_live_view_encodes_at_a_capped_rate_once_for_all_viewers(station):
    enc = LiveEncoder(station.status, fps=2.0, width=64, quality=70)
    assert enc.latest() == (-1, None)  # no frame yet: nothing, never an old picture
    station.frame()
    seq, jpeg = enc.latest()
    assert seq == station.status.live.seq and jpeg[:2] == b"\xff\xd8"
    import cv2

    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[1] == 64  # shrunk to live_width
    for _ in range(20):  # frames arrive faster than the cap: the viewers keep the last encode
        station.frame()
        assert enc.latest()[0] == seq
    assert enc.encoded == 1
    enc._at -= 1.0  # the cap's half second has passed
    assert enc.latest()[0] == station.status.live.seq and enc.encoded == 2


def test_start_web_serves_logs_the_url_and_closes(tmp_path, monkeypatch, caplog):
    import threading
    import urllib.request

    s = Station(tmp_path, monkeypatch)
    before = threading.active_count()
    with caplog.at_level("INFO"):
        web = start_web(s.cfg, s.status, s.stop)
    assert web.url.startswith("http://127.0.0.1:") and f"web view at {web.url}" in caplog.text
    assert TOKEN not in caplog.text
    s.frame()
    with urllib.request.urlopen(web.url + "live.mjpg", timeout=5) as stream:  # a viewer still connected at close
        assert stream.read(9) == b"--frame\r\n"
        t0 = time.monotonic()
        web.close()
        assert time.monotonic() - t0 < 3
    assert threading.active_count() <= before
    s.cfg.web.enabled = False
    assert start_web(s.cfg, s.status, s.stop).url == ""


def test_a_web_view_that_cannot_start_never_stops_the_station(tmp_path, monkeypatch, caplog):
    s = Station(tmp_path, monkeypatch)
    monkeypatch.delenv("EDGE_AD_WEB_TOKEN")
    with caplog.at_level("ERROR"):
        web = start_web(s.cfg, s.status, s.stop)
    assert web.url == "" and "web view off: web.token_env" in caplog.text
    web.close()


def test_web_modules_import_no_torch():
    code = ("import sys; import edge_ad.station.web.server, edge_ad.station.web.routes, edge_ad.station.loop; "
            "print([m for m in ('torch', 'tensorrt') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
