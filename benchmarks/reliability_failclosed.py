"""Issue 21, fail closed: six rows of the fault harness, each the issue's reproduction against a real `edge_ad run`
process (or real processes racing for a part), checked for the refusal or fault that must happen.

  nan_model          a bundle whose graph yields NaN maps: detector fault, no frame passed, predict says error
  threshold_version  a threshold change / rollback made for a version that is not the running one or no longer
                     current is refused; calibrate writers and web changes in separate processes never lose a switch
  threshold_range    1e300, 1e-300 and a x10^4 typo are refused unless confirmed; the new version's readiness is judged
                     at its threshold
  no_manifest        a NOT READY bundle under parts_dir whose manifest.json was deleted: a fault with the reason
  web_bounds         150 idle connections, then 150 slowloris ones, held while /healthz is timed; a 200 MiB POST:
                     bytes the station wrote to disk
  evidence_links     symlinked files and event folders in the evidence folder: none served
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reliability_kit import ROOT, Env, StationProc, fresh, station_cfg  # noqa: E402

from helpers import wait_until  # noqa: E402  (tests/, put on sys.path by reliability_kit)
from test_fail_closed import nan_graph  # noqa: E402  (the NaN copy of a graph the fast test uses)

from edge_ad import bundle as B  # noqa: E402
from edge_ad import rejudge  # noqa: E402

TOKEN = "reliability-fail-closed-token-42"
TOKEN_ENV = {"EDGE_AD_REL_TOKEN": TOKEN}
IDLE_CONNECTIONS = 150
BODY_MIB = 200  # the 900 MiB POST, smaller: refused on its headers either way
HEALTH_SAMPLES = 100
RACE_ROUNDS = 10


def _parts_station(env: Env, folder: Path, **kw) -> dict:
    """A station on parts_dir/part/current (no fixed bundle, the bundle's own threshold), web API with a token."""
    return station_cfg(env, folder, bundle="", threshold=None, parts_dir=str(folder / "parts"),
                       web={"token_env": "EDGE_AD_REL_TOKEN"}, **kw)


def _files(env: Env, folder: Path, threshold: float | None = None, val: list[float] | None = None) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    info = json.loads((env.model / "model.json").read_text())
    info["threshold"] = env.threshold if threshold is None else threshold
    (folder / "model.json").write_text(json.dumps(info))
    files = {"model.onnx": env.model / "model.onnx", "model.json": folder / "model.json"}
    if val is not None:
        (folder / "scores.json").write_text(json.dumps({"threshold": info["threshold"], "val_good": [
            {"image": f"{i}.png", "score": s} for i, s in enumerate(val)]}))
        files["scores.json"] = folder / "scores.json"
    return files


def _val_scores(env: Env) -> list[float]:
    from edge_ad import data as D
    from edge_ad.runtime.detector import open_detector

    det = open_detector(env.model / "model.onnx")
    return [det.detect(D.load_image(p)).score for p in D.list_images(env.good)]


def _post(base: str, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Edge-Ad-Token": TOKEN})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _base(st: StationProc) -> str:
    return st.url.rsplit("api/status", 1)[0]


# ------------------------------------------------------------------------------------------------ nan_model


def trial_nan_model(env: Env, args: argparse.Namespace) -> dict:
    folder = fresh(env.work / "nan_model")
    files = {**_files(env, folder / "src"), "model.onnx": nan_graph(env.model / "model.onnx", folder / "model.onnx")}
    B.write_bundle(folder / "parts", "part", files, {"readiness": {"ready": True, "reason": "judged"}})
    st = StationProc(folder, _parts_station(env, folder, fault={"retry_s": 0.5, "camera_lost_s": 1.0,
                                                                "frame_errors": 5}), env=TOKEN_ENV)
    t0 = time.monotonic()
    try:
        fault = st.wait(lambda s: s["state"] == "fault" and "non-finite" in s["fault"], timeout=120)
        to_fault = time.monotonic() - t0
        time.sleep(3.0)
        s = st.status() or {}
        health = urllib.request.Request(_base(st) + "healthz")
        try:
            health_code = urllib.request.urlopen(health, timeout=5).status
        except urllib.error.HTTPError as e:
            health_code = e.code
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    pred = subprocess.run([sys.executable, "-m", "edge_ad.cli", "predict", str(next(env.good.iterdir())), "--model",
                           str(folder / "parts" / "part" / "current"), "--out", str(folder / "pred")],
                          cwd=ROOT, capture_output=True, text=True)
    predict_error = "\terror\t" in pred.stderr and "score=nan" not in pred.stdout and pred.returncode == 1
    failures = (not fault) + (s.get("frames", 1) != 0) + (s.get("anomalous", 0) != 0) + (health_code != 503) \
        + (not predict_error) + (rc != 0)
    return {"cases": 2, "failures": failures, "state": s.get("state"), "frames_inspected": s.get("frames"),
            "frame_errors": s.get("errors"), "seconds_to_fault": round(to_fault, 1), "healthz": health_code,
            "predict_says_error": int(predict_error), "station_rc": rc,
            "note": "graph = the tiny model + NaN on every output; fault.frame_errors 5; fault: "
                    + str(s.get("fault", ""))[:120]}


# ------------------------------------------------------------------------------------------------ threshold_version


RACE_CALIBRATE = """
import json, sys
from pathlib import Path
from edge_ad import bundle as B
root, onnx, info = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
B.write_bundle(root, "part", {"model.onnx": onnx, "model.json": info}, {"payload": "calibrate"})
"""
RACE_WEB = """
import sys
from pathlib import Path
from edge_ad import bundle as B
from edge_ad.errors import EdgeAdError
try:
    B.write_threshold_version(Path(sys.argv[1]), "part", float(sys.argv[2]), "web", from_version=1, confirm=True)
    print("written")
except EdgeAdError as e:
    print("refused:", e)
"""


def trial_threshold_version(env: Env, args: argparse.Namespace) -> dict:
    folder = fresh(env.work / "threshold_version")
    parts = folder / "parts"
    val = _val_scores(env)
    B.write_bundle(parts, "part", _files(env, folder / "v1", val=val), {"method": "rd", "threshold": env.threshold})
    st = StationProc(folder, _parts_station(env, folder), env=TOKEN_ENV)
    refused = stale_ok = 0
    try:
        st.wait(lambda s: s["state"] == "running" and s["version"] == "v1", timeout=120)
        # calibrate switches `current` to v2 (another scale); the station keeps v1 until SIGHUP
        B.write_bundle(parts, "part", _files(env, folder / "v2", threshold=32.5, val=[20.0, 30.0]),
                       {"method": "gauss", "threshold": 32.5})
        base = _base(st)
        for body in ({"threshold": env.threshold * 1.01, "who": "ana", "running": "v1"},  # current moved on
                     {"threshold": env.threshold * 1.01, "who": "ana", "running": "v2"},  # not the running one
                     {"threshold": env.threshold * 1.01, "who": "ana"}):  # no version named
            refused += _post(base, "api/threshold", body)[0] == 400
        refused += _post(base, "api/rollback", {"version": 1, "who": "ana", "running": "v1", "current": 1})[0] == 400
        unchanged = B.versions(parts, "part") == [1, 2] and B.current_version(parts, "part") == 2
        s = st.status() or {}
        stale_ok = int(s.get("version") == "v1")
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    lost = written = refused_race = errors = 0
    for r in range(RACE_ROUNDS):
        root = fresh(folder / f"race{r}") / "parts"
        B.write_bundle(root, "part", _files(env, folder / f"race{r}" / "v1", val=val), {"payload": "v1"})
        procs = [subprocess.Popen([sys.executable, "-c", RACE_CALIBRATE, str(root), str(env.model / "model.onnx"),
                                  str(folder / "v2" / "model.json")], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                 subprocess.Popen([sys.executable, "-c", RACE_WEB, str(root), str(env.threshold * 1.01)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        outs = [p.communicate(timeout=120) for p in procs]
        errors += sum(p.returncode != 0 for p in procs)
        web_out = outs[1][0]
        written += web_out.startswith("written")
        refused_race += web_out.startswith("refused")
        lost += B.read_manifest(B.resolve(root, "part")).get("payload") != "calibrate"  # calibrate's switch undone
        errors += bool(B.leftovers(root, "part")) + any(B.verify(root / "part" / f"v{v}") for v in B.versions(root, "part"))
    failures = (4 - refused) + (not unchanged) + (not stale_ok) + lost + errors + (rc != 0)
    return {"cases": 4 + RACE_ROUNDS, "failures": failures, "stale_changes_refused": f"{refused}/4",
            "nothing_written": int(unchanged), "race_rounds": RACE_ROUNDS, "race_web_written": written,
            "race_web_refused": refused_race, "calibrate_switch_lost": lost, "race_errors": errors, "station_rc": rc,
            "note": "station runs v1, calibrate made v2 (gauss, 32.5) current; each race round starts a calibrate "
                    "writer and a web change for v1 as two processes at once"}


# ------------------------------------------------------------------------------------------------ threshold_range


def trial_threshold_range(env: Env, args: argparse.Namespace) -> dict:
    folder = fresh(env.work / "threshold_range")
    parts = folder / "parts"
    val = _val_scores(env)
    ready = {"ready": True, "reason": "judged", "false_alarms": {"rate": 0.024, "ci_low": 0.0, "ci_high": 0.1},
             "rules": {"max_false_alarm_rate": 0.05, "min_image_auroc": 0.9, "min_detection_large": 0.5}}
    B.write_bundle(parts, "part", _files(env, folder / "v1", val=val),
                   {"method": "rd", "threshold": env.threshold, "readiness": ready,
                    "metrics": {"val_false_alarm_rate": 0.024, "f1": 0.9}})
    st = StationProc(folder, _parts_station(env, folder), env=TOKEN_ENV)
    far = {"1e300": 1e300, "1e-300": 1e-300, "x10^4 typo": env.threshold * 1e4}
    asked = 0
    try:
        st.wait(lambda s: s["state"] == "running" and s["version"] == "v1", timeout=120)
        base = _base(st)
        for value in far.values():
            code, body = _post(base, "api/threshold", {"threshold": value, "who": "ana", "running": "v1"})
            asked += code == 409 and bool(body.get("confirm_needed"))
        none_written = B.versions(parts, "part") == [1]
        code, body = _post(base, "api/threshold", {"threshold": env.threshold * 1e4, "who": "ana", "running": "v1",
                                                   "confirm": True})
        written = code == 200
        rd = B.read_manifest(parts / "part" / body["version"]).get("readiness", {}) if written else {}
        not_judged = rd.get("ready") is None and "not judged at this threshold" in rd.get("reason", "")
        shown = subprocess.run([sys.executable, "-m", "edge_ad.cli", "parts", "show", "part", "--parts-root",
                                str(parts)], cwd=ROOT, capture_output=True, text=True).stdout
        v2_line = next((x for x in shown.splitlines() if " v2 " in x), "")
        stale_estimate = "2.4%" in v2_line
        lo, hi = rejudge.window(val, rejudge.ThresholdRules())
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    failures = (len(far) - asked) + (not none_written) + (not written) + (not not_judged) + stale_estimate + (rc != 0)
    return {"cases": len(far) + 1, "failures": failures, "refused_unless_confirmed": f"{asked}/{len(far)}",
            "window": f"{lo:.4g}..{hi:.4g}", "calibrated_threshold": round(env.threshold, 4),
            "confirmed_version_readiness": "not judged" if not_judged else str(rd.get("ready")),
            "stale_estimate_shown": int(stale_estimate), "station_rc": rc,
            "note": f"window = validation scores widened by {rejudge.ThresholdRules().range_multiple:g}x their range; "
                    "the tiny bundle has no synthetic scores, so the confirmed version is 'not judged at this threshold' "
                    "and parts show gives no estimate for it"}


# ------------------------------------------------------------------------------------------------ no_manifest


def trial_no_manifest(env: Env, args: argparse.Namespace) -> dict:
    folder = fresh(env.work / "no_manifest")
    v1 = B.write_bundle(folder / "parts", "part", _files(env, folder / "v1"),
                        {"readiness": {"ready": False, "reason": "12 validation images"}})
    (v1 / B.MANIFEST).unlink()
    st = StationProc(folder, _parts_station(env, folder), env=TOKEN_ENV)
    try:
        fault = st.wait(lambda s: s["state"] == "fault" and "no manifest.json" in s["fault"], timeout=120)
        time.sleep(2.0)
        s = st.status() or {}
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    failures = (not fault) + (s.get("frames", 1) != 0) + (rc != 0)
    return {"cases": 1, "failures": failures, "state": s.get("state"), "frames_inspected": s.get("frames"),
            "station_rc": rc, "note": "fault: " + str(s.get("fault", ""))[:140]}


# ------------------------------------------------------------------------------------------------ web_bounds


def _healthz_ms(host: str, port: int, n: int) -> tuple[list[float], int]:
    """n /healthz requests, each on a new connection: latencies in ms and how many failed or timed out."""
    times, failed = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as r:
                r.read()
                failed += r.status != 200
        except (OSError, urllib.error.HTTPError):
            failed += 1
        times.append((time.perf_counter() - t0) * 1e3)
    return times, failed


def _p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]


def _write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes"):
            return int(line.split()[1])
    return 0


def trial_web_bounds(env: Env, args: argparse.Namespace) -> dict:
    folder = fresh(env.work / "web_bounds")
    cfg = station_cfg(env, folder, frame_log="", evidence={"enabled": False})
    st = StationProc(folder, cfg)
    host, port = "127.0.0.1", cfg["web"]["port"]
    row: dict = {}
    failures = 0
    try:
        st.wait(lambda s: s["state"] == "running" and s["frames"] > 3, timeout=120)
        base, base_failed = _healthz_ms(host, port, HEALTH_SAMPLES)
        for kind in ("idle", "slowloris"):
            held = []
            for _ in range(IDLE_CONNECTIONS):
                s = socket.create_connection((host, port), timeout=10)
                if kind == "slowloris":
                    s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                held.append(s)
            times, failed = [], 0
            t_end = time.monotonic() + 10.0
            while time.monotonic() < t_end or len(times) < HEALTH_SAMPLES:
                if kind == "slowloris":
                    for s in held:  # a byte each round: waitress's idle timeout never fires for them
                        try:
                            s.send(b"a")
                        except OSError:
                            pass
                t, f = _healthz_ms(host, port, 10)
                times, failed = times + t, failed + f
            for s in held:
                s.close()
            row[f"healthz_p50_ms_{kind}"] = round(statistics.median(times), 1)
            row[f"healthz_p99_ms_{kind}"] = round(_p99(times), 1)
            row[f"healthz_failed_{kind}"] = failed
            failures += failed + (_p99(times) > 1000.0)
        before = _write_bytes(st.proc.pid)
        s = socket.create_connection((host, port), timeout=10)
        size = BODY_MIB * 2**20
        t0 = time.perf_counter()
        s.sendall(f"POST /api/threshold HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode())
        reply = s.recv(4096)
        refused_ms = (time.perf_counter() - t0) * 1e3
        sent = 0
        try:
            while sent < size:
                sent += s.send(b"x" * 2**20)
        except OSError:
            pass
        s.close()
        time.sleep(1.0)
        written = _write_bytes(st.proc.pid) - before
        status = st.status() or {}
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    failures += (not reply.startswith(b"HTTP/1.1 413")) + (written > 2**20) + base_failed + (rc != 0) \
        + (status.get("state") != "running")
    return {"cases": 3, "failures": failures, "healthz_p50_ms_quiet": round(statistics.median(base), 1),
            "healthz_p99_ms_quiet": round(_p99(base), 1), **row, "post_mib": BODY_MIB,
            "post_reply": reply.split(b"\r\n", 1)[0].decode(errors="replace"), "post_refused_ms": round(refused_ms, 1),
            "post_bytes_accepted_before_reset": sent, "disk_bytes_written_by_station": written, "station_rc": rc,
            "note": f"{IDLE_CONNECTIONS} connections held from one client (idle, then slowloris sending a header byte "
                    "per round) while /healthz is timed on new connections for 10 s; web.max_connections 32 (the "
                    "oldest without a request gives way), idle_timeout_s 5; disk bytes = /proc/<station>/io "
                    f"write_bytes across a {BODY_MIB} MiB POST (frame log and evidence off)"}


# ------------------------------------------------------------------------------------------------ evidence_links


def trial_evidence_links(env: Env, args: argparse.Namespace) -> dict:
    import cv2
    import numpy as np

    folder = fresh(env.work / "evidence_links")
    cfg = station_cfg(env, folder, threshold=1e9)  # no alarms of its own: only the planted events
    ev = Path(cfg["evidence"]["dir"])
    real = ev / "00000001_20260101T000000.000Z"
    real.mkdir(parents=True)
    cv2.imwrite(str(real / "overlay.jpg"), np.full((16, 16, 3), 99, np.uint8))
    (real / "boxes.json").symlink_to("/etc/passwd")
    (real / "original.jpg").symlink_to("/etc/passwd")
    other = folder / "elsewhere"
    other.mkdir()
    (other / "overlay.jpg").write_bytes((real / "overlay.jpg").read_bytes())
    (other / "boxes.json").write_text(json.dumps({"score": 1.0}))
    (ev / "00000002_20260101T000001.000Z").symlink_to(other, target_is_directory=True)
    st = StationProc(folder, cfg)
    probes = [f"evidence/{real.name}/boxes.json", f"evidence/{real.name}/original.jpg",
              "evidence/00000002_20260101T000001.000Z/overlay.jpg", "evidence/00000002_20260101T000001.000Z/thumb.jpg",
              "evidence/00000002_20260101T000001.000Z/boxes.json", "alarm/00000002_20260101T000001.000Z",
              f"evidence/{real.name}/..%2F..%2Fetc%2Fpasswd"]
    served = leaked = 0
    try:
        st.wait(lambda s: s["state"] == "running", timeout=120)
        base = _base(st)
        for p in probes:
            try:
                with urllib.request.urlopen(base + p, timeout=10) as r:
                    body = r.read()
                    served += 1
                    leaked += b"root:" in body
            except urllib.error.HTTPError:
                pass
        with urllib.request.urlopen(base + f"evidence/{real.name}/overlay.jpg", timeout=10) as r:
            regular_ok = r.status == 200
        with urllib.request.urlopen(base + "api/alarms", timeout=10) as r:
            listed = [x["id"] for x in json.loads(r.read())["rows"]]
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    failures = served + leaked + (not regular_ok) + (listed != [real.name]) + (rc != 0)
    return {"cases": len(probes) + 1, "failures": failures, "linked_served": served, "passwd_leaked": leaked,
            "regular_file_served": int(regular_ok), "events_listed": len(listed), "station_rc": rc,
            "note": "files symlinked to /etc/passwd inside an event folder, an event folder symlinked elsewhere, an "
                    "encoded traversal; the regular overlay.jpg is still served"}


TRIALS = {"nan_model": trial_nan_model, "threshold_version": trial_threshold_version,
          "threshold_range": trial_threshold_range, "no_manifest": trial_no_manifest, "web_bounds": trial_web_bounds,
          "evidence_links": trial_evidence_links}
