"""Fault harness: the station tried as a plant's bad day would, one row per trial in benchmarks/results/reliability.*.

Trials (each row: trial, cases, failures and its figures; the target is 0 failures everywhere):
  reproductions   the command-line reproductions of ../shared/trials/station-faults.md, each checked for the fixed
                  behaviour (4d2/4d3: sighup row; 5d/5e: calibrate_kill; 6a/6c: also disk; 8a/8c: soak)
  broker          mosquitto SIGKILLed and restarted under a running station: events sent/received/duplicated/out of order
  source          the camera stream (HTTP MJPEG through FFmpeg) dropped and restored: reconnect seconds, fault reported
  sighup          SIGHUP onto broken bundles and a broken station.yaml: old model kept, fault reported, recovery
  disk            frame log, evidence and MQTT queue on a full tmpfs: station alive, writes dropped counted, then resumed
  calibrate_kill  kill -9 at random points of `edge_ad calibrate` (tiny recipe), then rerun: half-written bundles
                  loaded, duplicate versions, leftovers
  fuzz            mutated images, station/train/recipe YAML and model.json: tracebacks, one-line errors naming the file
  soak            the station at max rate for --soak-minutes: RSS growth MB (target < 5), fps drift %
  exposure        `systemd-analyze security` of jetson/edge_ad.service (target <= 3.0), and the system calls a station
                  makes as an unprivileged user checked against the unit's SystemCallFilter
  nan_model, threshold_version, threshold_range, no_manifest, web_bounds, evidence_links
                  issue 21 (fail closed, never open): see reliability_failclosed.py

Usage: python benchmarks/reliability.py [--only TRIAL ...] [--soak-minutes 30] [--work DIR]
Rows of trials not run this time are kept from the last results. Needs root for the disk trial (tmpfs) and strace
for the syscall check; each says why it was skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from common import load_rows, write_results  # noqa: E402
from reliability_calibrate import trial_calibrate_kill  # noqa: E402
from reliability_failclosed import TRIALS as FAIL_CLOSED  # noqa: E402
from reliability_fuzz import trial_fuzz  # noqa: E402
from reliability_kit import Env, SmallDisk, StationProc, fresh, make_env, rss_mb, since, station_cfg  # noqa: E402
from reliability_repro import trial_reproductions  # noqa: E402
from reliability_unit import trial_exposure  # noqa: E402

from helpers import Subscriber, wait_until  # noqa: E402  (tests/, put on sys.path by reliability_kit)
from mosquitto_fixture import Broker, free_port, mosquitto_binary  # noqa: E402

from edge_ad import bundle as B  # noqa: E402
from edge_ad.station.status import SCORE_HISTORY  # noqa: E402

TRIALS = ("reproductions", "broker", "source", "sighup", "disk", "calibrate_kill", "fuzz", "soak", "exposure",
          *FAIL_CLOSED)
COLUMNS = [("trial", "trial"), ("cases", "cases"), ("failures", "failures"), ("figures", "figures"),
           ("minutes", "minutes"), ("note", "note")]


# ------------------------------------------------------------------------------------------------ broker


def trial_broker(env: Env, args: argparse.Namespace) -> dict:
    """Alarms at ~5/s while the broker is SIGKILLed and restarted; every event must arrive once, in order."""
    if mosquitto_binary() is None:
        return {"cases": 0, "failures": 0, "note": "skipped: mosquitto not installed"}
    rng = random.Random(args.seed)
    folder = fresh(env.work / "broker")
    broker = Broker(folder / "broker", persistence=True,
                    extra_conf="autosave_interval 1\nautosave_on_changes true").start()  # a killed broker loses ~nothing
    topic = "edge_ad/rel/part/event"
    sub = Subscriber(broker, topic, client_id="edge_ad-rel-sub", clean=False)
    cfg = station_cfg(env, folder, mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port,
                                         "queue_dir": str(folder / "queue"), "reconnect_min_s": 0.1,
                                         "reconnect_max_s": 1.0, "close_timeout_s": 60.0})
    st = StationProc(folder, cfg)
    try:
        st.wait(lambda s: s["alarms"] >= 3, timeout=120)
        for _ in range(args.broker_kills):
            time.sleep(rng.uniform(1.5, 4.0))
            broker.proc.kill()  # SIGKILL: no clean shutdown
            broker.proc.wait()
            time.sleep(rng.uniform(0.3, 3.0))
            broker.start()
        time.sleep(3.0)
        rc = st.stop()  # the stop waits until the queue is delivered
        sub.sync(broker, topic, timeout=30)
    finally:
        sub.close()
        broker.stop()
    sent = [r["frame"] for r in st.frames() if "event" in r]
    got = [p["frame_index"] for p in sub.payloads()]
    firsts = list(dict.fromkeys(got))
    lost = len(set(sent) - set(got))
    out_of_order = sum(b < a for a, b in zip(firsts, firsts[1:]))
    unknown = len(set(got) - set(sent))
    failures = lost + out_of_order + unknown + (rc != 0)
    return {"cases": args.broker_kills, "failures": failures, "kills": args.broker_kills, "events_sent": len(sent),
            "events_received": len(set(got)), "duplicated": len(got) - len(firsts), "out_of_order": out_of_order,
            "lost": lost, "station_rc": rc,
            "note": "broker SIGKILLed mid-stream; duplicates are QoS 1 re-sends of an event whose PUBACK the kill ate"}


# ------------------------------------------------------------------------------------------------ source


def trial_source(env: Env, args: argparse.Namespace) -> dict:
    """An IP camera (HTTP MJPEG, read by OpenCV's FFmpeg) dropped for 0.5-4 s, again and again."""
    from test_camera import MjpegServer

    rng = random.Random(args.seed + 1)
    folder = fresh(env.work / "source")
    server = MjpegServer(fps=30.0).start()
    lost_s = 1.0
    cfg = station_cfg(env, folder, threshold=1e9,
                      camera={"source": server.url, "live": True, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
                              "open_timeout_s": 2.0, "read_timeout_s": 1.0},
                      fault={"camera_lost_s": lost_s})
    st = StationProc(folder, cfg)
    reconnects, missed_faults, stuck_faults, failures = [], 0, 0, 0
    try:
        st.wait(lambda s: s["frames"] > 5 and s["state"] == "running", timeout=120)
        for _ in range(args.source_drops):
            time.sleep(rng.uniform(1.0, 2.0))
            outage = rng.uniform(0.5, 4.0)
            server.stop()
            t_down, saw_fault = time.monotonic(), False
            while time.monotonic() - t_down < outage:
                s = st.status() or {}
                saw_fault |= s.get("state") == "fault" and "camera" in s.get("fault", "")
                time.sleep(0.1)
            server.start()
            t_up = time.time()
            back = wait_until(lambda: any(r.get("time", 0) > t_up for r in st.frames()[-50:]), timeout=30, interval=0.05)
            first = min((r["time"] for r in st.frames()[-50:] if r.get("time", 0) > t_up), default=float("nan"))
            reconnects.append(first - t_up)
            if outage > lost_s + 1.0 and not saw_fault:  # long enough that the fault must have shown
                missed_faults += 1
            if not st.wait(lambda s: s["state"] == "running", timeout=10):
                stuck_faults += 1
            failures += (not back) or not (first - t_up <= cfg["camera"]["reconnect_max_s"] + 3.0)
        rc = st.stop()
    finally:
        server.stop()
    failures += missed_faults + stuck_faults + (rc != 0)
    return {"cases": args.source_drops, "failures": failures, "drops": args.source_drops,
            "reconnect_s_median": round(statistics.median(reconnects), 2), "reconnect_s_max": round(max(reconnects), 2),
            "faults_missed": missed_faults, "faults_not_cleared": stuck_faults, "station_rc": rc,
            "note": f"camera.reconnect_max_s 1.0, fault.camera_lost_s {lost_s:g}; reconnect = stream back -> first frame"}


# ------------------------------------------------------------------------------------------------ sighup


def trial_sighup(env: Env, args: argparse.Namespace) -> dict:
    """SIGHUP onto bundles that must not run, and onto a broken station.yaml: v1 keeps inspecting, the fault says why,
    and the station recovers by itself when `current` points at v1 again."""
    folder = fresh(env.work / "sighup")
    parts = folder / "parts"
    files = {n: env.model / n for n in ("model.onnx", "model.json")}
    B.write_bundle(parts, "part", files, {})
    cfg = station_cfg(env, folder, bundle="", parts_dir=str(parts))
    st = StationProc(folder, cfg)
    cases = {
        "truncated model.onnx": lambda: damage(B.write_bundle(parts, "part", files, {}, activate=False), "model.onnx", 2000),
        "file changed after writing": lambda: damage(B.write_bundle(parts, "part", files, {}, activate=False), "model.json", None),
        "no model.json": lambda: B.write_bundle(parts, "part", {"model.onnx": files["model.onnx"]}, {}, activate=False),
        "calibrate says not ready": lambda: B.write_bundle(parts, "part", files, {"readiness": {"ready": False,
                                                           "reason": "too few validation images"}}, activate=False),
        "scoring needs maps the graph lacks": lambda: B.write_bundle(parts, "part", {**files, "model.json": bad_groups(env, folder)},
                                                                     {}, activate=False),
    }
    kept = reported = recovered = 0
    try:
        st.wait(lambda s: s["frames"] > 5 and s["state"] == "running", timeout=120)
        for name, make in cases.items():
            v = int(make().name[1:])
            B.switch_current(parts, "part", v)
            frames = st.status()["frames"]
            st.signal(signal.SIGHUP)
            ok_fault = st.wait(lambda s: s["state"] == "fault" and "still inspecting with v1" in s["fault"], timeout=60)
            ok_kept = st.wait(lambda s: s["frames"] > frames + 10 and s["version"] == "v1", timeout=60)
            B.switch_current(parts, "part", 1)  # the operator rolls back: no signal needed
            ok_back = st.wait(lambda s: s["state"] == "running", timeout=60)
            reported, kept, recovered = reported + ok_fault, kept + ok_kept, recovered + ok_back
        # the station config itself broken, then a threshold change: the first is ignored, the second applied
        st.config.write_text("camera: [unclosed\n")
        st.signal(signal.SIGHUP)
        ignored = wait_until(lambda: "the station config does not load" in st.log(), timeout=60) and \
            st.wait(lambda s: s["state"] == "running" and s["reloads"] == len(cases) + 1, timeout=60)
        st.write_config({**cfg, "threshold": env.threshold * 2})
        st.signal(signal.SIGHUP)
        applied = st.wait(lambda s: abs(s["threshold"] - 2 * env.threshold) < 1e-6, timeout=60)
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    n = len(cases)
    models = {r.get("model") for r in st.frames() if "model" in r}
    failures = (n - kept) + (n - reported) + (n - recovered) + (not ignored) + (not applied) + (rc != 0) + (models != {"v1"})
    return {"cases": n + 2, "failures": failures, "old_model_kept": kept, "fault_reported": reported,
            "recovered_by_itself": recovered, "broken_yaml_ignored": int(ignored), "yaml_threshold_applied": int(applied),
            "models_in_frame_log": ",".join(sorted(m for m in models if m)), "station_rc": rc,
            "note": "cases: " + "; ".join(cases) + "; broken station.yaml; threshold change in station.yaml"}


def damage(bundle: Path, name: str, keep: int | None) -> Path:
    data = (bundle / name).read_bytes()
    (bundle / name).write_bytes(data[:keep] if keep is not None else data + b" ")
    return bundle


def bad_groups(env: Env, folder: Path) -> Path:
    doc = json.loads((env.model / "model.json").read_text())
    doc["scoring"]["groups"] = [[0, 1, 5]]
    out = folder / "bad_groups.json"
    out.write_text(json.dumps(doc))
    return out


# ------------------------------------------------------------------------------------------------ disk


def trial_disk(env: Env, args: argparse.Namespace) -> dict:
    """Frame log, evidence and MQTT queue on a 2 MiB tmpfs filled to the last byte, broker down; then space comes
    back, then the broker: nothing dies, every dropped write is counted, every alarm still reaches the broker."""
    folder = fresh(env.work / "disk")
    try:
        disk = SmallDisk(folder / "tmpfs", 2048)
    except PermissionError as e:
        return {"cases": 0, "failures": 0, "note": f"skipped: cannot mount a tmpfs here ({e}); run as root"}
    port = free_port()
    cfg = station_cfg(env, folder, frame_log=str(disk.path / "frames.jsonl"),
                      evidence={"dir": str(disk.path / "evidence"), "max_mb": 1.0, "min_free_mb": 0.0},
                      mqtt={"enabled": True, "host": "127.0.0.1", "port": port, "queue_dir": str(disk.path / "queue"),
                            "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "close_timeout_s": 60.0})
    log_path = disk.path / "frames.jsonl"
    ev_dir = disk.path / "evidence"
    broker = Broker(folder / "broker", port=port)
    sub = None
    disk.fill()
    st = StationProc(folder, cfg)
    try:
        full_ok = st.wait(lambda s: s["frames"] > 30 and s["alarms"] > 5 and s["writes_dropped"] > 30, timeout=180)
        s_full = st.status() or {}
        size_full = log_path.stat().st_size if log_path.exists() else 0
        events_full = len(list(ev_dir.glob("0*"))) if ev_dir.is_dir() else 0
        disk.free_up()
        dropped_at_free = s_full.get("writes_dropped", 0)
        resumed = wait_until(lambda: log_path.exists() and log_path.stat().st_size > size_full + 2000, timeout=60)
        ev_resumed = wait_until(lambda: ev_dir.is_dir() and len(list(ev_dir.glob("0*"))) > events_full, timeout=60)
        broker.start()
        sub = Subscriber(broker, "edge_ad/rel/part/event")
        time.sleep(3.0)
        s_last = st.status() or s_full
        rc = st.stop()
        sub.sync(broker, "edge_ad/rel/part/event", timeout=30)
        received = {p["frame_index"] for p in sub.payloads()}
        alarms_fired = {r["frame"] for r in st.frames() if "event" in r}  # read before the tmpfs goes
    finally:
        if st.alive:
            st.stop()
        if sub:
            sub.close()
        broker.stop()
        disk.close()
    log_text = st.log()
    queue_ok = len(received) >= s_last.get("alarms", 0) > s_full.get("alarms", 0)
    failures = (not full_ok) + (not resumed) + (not ev_resumed) + (not queue_ok) + (rc != 0) + ("Traceback" in log_text)
    return {"cases": 3, "failures": failures, "frames_while_full": s_full.get("frames", 0),
            "alarms_while_full": s_full.get("alarms", 0), "writes_dropped_while_full": dropped_at_free,
            "frame_log_resumed": int(resumed), "evidence_resumed": int(ev_resumed),
            "alarms": s_last.get("alarms", 0), "events_delivered": len(received),
            "alarm_lines_in_frame_log": len(alarms_fired), "station_rc": rc,
            "note": "2 MiB tmpfs filled to the last byte before the start; broker down until space came back"}


# ------------------------------------------------------------------------------------------------ soak


def trial_soak(env: Env, args: argparse.Namespace) -> dict:
    """The station as fast as it goes on a replayed folder, with its frame log on: memory and speed over time."""
    folder = fresh(env.work / "soak")
    duration = args.soak_minutes * 60
    cfg = station_cfg(env, folder, camera={"source": str(env.good), "live": True, "fps": 1000.0},
                      frame_log_max_mb=5.0, evidence={"enabled": False})
    st = StationProc(folder, cfg)
    samples = []  # (seconds, rss MB, frames)
    try:
        if not st.wait(lambda s: s["frames"] > 10, timeout=120):
            return {"cases": 1, "failures": 1, "note": "the station did not start: " + st.log()[-300:]}
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration and st.alive:
            s = st.status() or {}
            samples.append((time.monotonic() - t0, rss_mb(st.proc.pid), s.get("frames", 0)))
            time.sleep(5.0)
        alive = st.alive
        rc = st.stop()
    finally:
        if st.alive:
            st.stop()
    # warm-up: until the status windows are full (the score history holds SCORE_HISTORY frames), and 30 s at least
    warm = max(30.0, next((t for t, _, frames in samples if frames >= SCORE_HISTORY), samples[-1][0]))
    after = [x for x in samples if x[0] >= warm]
    window = max(3, len(after) // 5)
    first, last = after[:window], after[-window:]
    rss_growth = statistics.mean(r for _, r, _ in last) - statistics.mean(r for _, r, _ in first)
    fps = lambda w: (w[-1][2] - w[0][2]) / (w[-1][0] - w[0][0])  # noqa: E731
    drift = 100 * (fps(last) / fps(first) - 1)
    lines = len(st.log().splitlines())
    failures = (rss_growth >= 5.0) + (not alive) + (rc != 0)
    return {"cases": 1, "failures": failures, "soak_minutes": args.soak_minutes, "frames": samples[-1][2],
            "fps_start": round(fps(first), 1), "fps_end": round(fps(last), 1), "fps_drift_pct": round(drift, 1),
            "rss_start_mb": round(statistics.mean(r for _, r, _ in first), 1),
            "rss_growth_mb": round(rss_growth, 2), "log_lines": lines, "station_rc": rc,
            "rss_mb_every_30s": " ".join(f"{r:.1f}" for t, r, _ in samples[::6]),
            "note": f"live replay at camera.fps 1000 (as fast as inference goes), frame log on (rotated at 5 MB); RSS "
                    f"growth = mean of the last {window} samples (5 s apart) - mean of the first {window} after a "
                    f"{warm:.0f} s warm-up (until the status windows are full)"}


# ------------------------------------------------------------------------------------------------ main


TRIAL_RUNS = {"reproductions": trial_reproductions, "broker": trial_broker, "source": trial_source,
              "sighup": trial_sighup, "disk": trial_disk, "calibrate_kill": trial_calibrate_kill, "fuzz": trial_fuzz,
              "soak": trial_soak, "exposure": trial_exposure, **FAIL_CLOSED}


def figures(row: dict) -> str:
    skip = {"trial", "cases", "failures", "figures", "minutes", "note"}
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row.items() if k not in skip)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=TRIALS, metavar="TRIAL", help=f"run these ({', '.join(TRIALS)})")
    ap.add_argument("--soak-minutes", type=float, default=30.0)
    ap.add_argument("--broker-kills", type=int, default=10)
    ap.add_argument("--source-drops", type=int, default=10)
    ap.add_argument("--calibrate-kills", type=int, default=20)
    ap.add_argument("--fuzz", type=int, default=1000, help="fuzzed inputs in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge_ad-reliability"))
    args = ap.parse_args()
    run = args.only or list(TRIALS)
    env = make_env(args.work)
    for name in run:
        t0 = time.monotonic()
        print(f"--- {name}", flush=True)
        row = {"trial": name, **TRIAL_RUNS[name](env, args)}
        row["minutes"] = round(since(t0) / 60, 1)
        row["figures"] = figures(row)
        print(json.dumps(row), flush=True)
        rows = {r["trial"]: r for r in load_rows("reliability")}  # again: another run may have written meanwhile
        rows[name] = row
        write_results("reliability", [rows[t] for t in TRIALS if t in rows], COLUMNS, NOTES)


NOTES = ("Every trial runs the real thing: `edge_ad run` in its own process (watched through its web API and frame "
         "log), a real mosquitto, OpenCV reading a real HTTP MJPEG stream, a real tmpfs filled to the last byte, real "
         "`edge_ad calibrate` processes killed with SIGKILL. Target: 0 failures on every row, soak RSS growth < 5 MB, "
         "exposure <= 3.0. The soak row says how many minutes it ran (the full check is 30). Shared 2-core machine: "
         "fps figures are noisy.")

if __name__ == "__main__":
    main()
