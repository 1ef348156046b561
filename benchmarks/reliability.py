"""Fault harness: the station tried as a plant's bad day would, one row per trial in benchmarks/results/reliability.*.

Trials (each row: trial, cases, failures and its figures; the target is 0 failures everywhere):
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

Usage: python benchmarks/reliability.py [--only TRIAL ...] [--soak-minutes 30] [--work DIR]
Rows of trials not run this time are kept from the last results. Needs root for the disk trial (tmpfs) and strace
for the syscall check; each says why it was skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import load_rows, write_results  # noqa: E402
from reliability_kit import (ROOT, Env, SmallDisk, StationProc, make_env, outcome, rss_mb, since,  # noqa: E402
                             station_cfg)

from helpers import Subscriber, wait_until  # noqa: E402  (tests/, put on sys.path by reliability_kit)
from mosquitto_fixture import Broker, free_port, mosquitto_binary  # noqa: E402

from edge_ad import bundle as B  # noqa: E402

TRIALS = ("broker", "source", "sighup", "disk", "calibrate_kill", "fuzz", "soak", "exposure")
COLUMNS = [("trial", "trial"), ("cases", "cases"), ("failures", "failures"), ("figures", "figures"),
           ("minutes", "minutes"), ("note", "note")]
EXPOSURE_BEFORE = 4.3  # jetson/edge_ad.service before the syscall filter and the /proc, log and mount settings


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


# ------------------------------------------------------------------------------------------------ calibrate


def trial_calibrate_kill(env: Env, args: argparse.Namespace) -> dict:
    """kill -9 during `edge_ad calibrate` (half at random times, half inside the bundle stage), then the same command
    again: no half-written bundle is ever `current`, no version is written twice, nothing is left behind."""
    from test_calibrate import TINY_RECIPE

    rng = random.Random(args.seed + 2)
    folder = fresh(env.work / "calibrate_kill")
    root, work = folder / "parts", folder / "work"
    cmd = [sys.executable, "-m", "edge_ad.cli", "calibrate", "--part", "p", "--source", str(env.data / "train" / "good"),
           "--parts-root", str(root), "--work", str(work)]
    for key, value in TINY_RECIPE.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    t0 = time.monotonic()
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    full_s = time.monotonic() - t0
    if first.returncode != 0:
        return {"cases": 0, "failures": 1, "note": f"calibrate does not run: {first.stderr.strip()[-300:]}"}
    half_loaded = dup = leftovers = rerun_failed = finished_first = 0
    modes = ("at a random time", "once .incoming-* holds 3 files", "as v<N+1> appears", "at a random time in bundle")
    for i in range(args.calibrate_kills):
        mode = modes[0] if i % 2 == 0 else modes[1 + (i // 2) % 3]
        log = folder / f"kill_{i:02d}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            if not kill_when(proc, mode, rng, full_s, root, log):
                finished_first += 1
        half_loaded += current_not_intact(root)
        rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        rerun_failed += rerun.returncode != 0
        half_loaded += current_not_intact(root)
        stagings = [B.read_manifest(root / "p" / f"v{v}").get("staging") for v in B.versions(root, "p")]
        dup = max(dup, len(stagings) - len(set(stagings)))
        leftovers += len(B.leftovers(root, "p")) + len(list((root / "p").glob(".*.tmp")))
    versions = B.versions(root, "p")
    failures = half_loaded + dup + leftovers + rerun_failed
    return {"cases": args.calibrate_kills, "failures": failures, "kills": args.calibrate_kills - finished_first,
            "half_written_loaded": half_loaded, "duplicate_versions": dup, "leftovers_after_rerun": leftovers,
            "reruns_failed": rerun_failed, "versions": len(versions), "calibrate_s": round(full_s, 1),
            "note": "kill modes: " + "; ".join(modes) + "; recipe: tests/test_calibrate.py TINY_RECIPE"}


def kill_when(proc: subprocess.Popen, mode: str, rng: random.Random, full_s: float, root: Path, log: Path) -> bool:
    """SIGKILL the calibrate at the chosen point; False when it finished before that point came."""
    part = root / "p"
    before = len(B.versions(root, "p"))
    if mode == "at a random time":
        deadline = time.monotonic() + rng.uniform(0.3, 0.95 * full_s)
        if not poll(proc, lambda: time.monotonic() >= deadline, 0.01):
            return False
    else:  # wait (coarsely) for the bundle stage, then watch finely for the moment
        if not poll(proc, lambda: re.search(r"\] bundle\s*$", log.read_text(), re.M) is not None, 0.01):
            return False
        if mode == "once .incoming-* holds 3 files":
            moment = lambda: any(len(list(p.iterdir())) >= 3 for p in part.glob(".incoming-*"))  # noqa: E731
        elif mode == "as v<N+1> appears":
            moment = lambda: len(B.versions(root, "p")) > before  # noqa: E731
        else:
            deadline = time.monotonic() + rng.uniform(0.0, 0.5)
            moment = lambda: time.monotonic() >= deadline  # noqa: E731
        if not poll(proc, moment, 0.0005):
            return False
    proc.kill()
    proc.wait()
    return True


def poll(proc: subprocess.Popen, cond, interval: float) -> bool:
    """Wait until cond() (True) or the process ends (False)."""
    while proc.poll() is None:
        try:
            if cond():
                return True
        except OSError:  # a folder renamed under the poll
            pass
        time.sleep(interval)
    return False


def current_not_intact(root: Path) -> int:
    """1 when `current` points at a bundle a station must not load (missing, partial, changed)."""
    link = root / "p" / B.CURRENT
    if not link.is_symlink():
        return 0
    return int(bool(B.damage(link.resolve())))


# ------------------------------------------------------------------------------------------------ fuzz


def trial_fuzz(env: Env, args: argparse.Namespace) -> dict:
    """Mutated inputs of every kind a user hands the station: each must load or be one line naming the file."""
    from edge_ad import data as D
    from edge_ad.calibrate.recipe import load_recipe
    from edge_ad.config import load_config
    from edge_ad.runtime.detector import open_detector
    from edge_ad.station.config import load_station_config

    rng = random.Random(args.seed + 3)
    folder = fresh(env.work / "fuzz")
    det = open_detector(env.model / "model.onnx")
    per = max(args.fuzz // 5, 1)
    results: dict[str, list[str]] = {}

    def image_case(path: Path) -> None:
        det.detect(D.load_image(path))

    kinds = {
        "image": (fuzz_images(env, folder / "images", per + args.fuzz % 5, rng), image_case),
        "station_yaml": (fuzz_yaml(yaml.safe_load((ROOT / "jetson" / "station.example.yaml").read_text()),
                                   folder / "station", per, rng), load_station_config),
        "train_yaml": (fuzz_yaml(train_tree(), folder / "train", per, rng),
                       lambda p: load_config(p, {"train.epochs": 1} if rng.random() < 0.5 else None)),
        "recipe_yaml": (fuzz_yaml(yaml.safe_load((ROOT / "calibration" / "default.yaml").read_text()),
                                  folder / "recipe", per, rng), load_recipe),
        "model_json": (fuzz_model_json(env, folder / "model_json", per, rng), lambda p: open_detector(p.parent)),
    }
    bad_examples = []
    for kind, (paths, load) in kinds.items():
        results[kind] = []
        for path in paths:
            how = outcome(lambda: load(path), path)
            results[kind].append(how)
            if how.startswith("bad") and len(bad_examples) < 5:
                bad_examples.append(f"{kind} {path.name}: {how}")
    cli_bad = fuzz_cli_sample(env, kinds, rng)
    n = sum(len(v) for v in results.values())
    bad = sum(h.startswith("bad") for v in results.values() for h in v)
    row = {"cases": n, "failures": bad + cli_bad, "tracebacks": bad,
           "one_line_errors": sum(h == "clean" for v in results.values() for h in v),
           "accepted": sum(h == "ok" for v in results.values() for h in v), "cli_sample_tracebacks": cli_bad}
    row.update({f"{k}_cases": len(v) for k, v in results.items()})
    row["note"] = "; ".join(bad_examples) or "loaders called in-process; 15 of them also through the CLI"
    return row


def train_tree() -> dict:
    from edge_ad.config import Config, to_dict

    return to_dict(Config())


WILD = [None, True, False, -1, 0, 1, 7, 2 ** 63, -(2 ** 63), 1e308, -1e-308, float("nan"), float("inf"), "", "x" * 5000,
        "../../../etc/passwd", "csi://0", "0", [], [1, 2, 3], [[1]], [0, 0, 0, 0], {}, {"a": 1}, 3.5, "\x00\x01",
        "日本語", "{{", "%s%s%s", "rtsp://256.1.1.1:99999/x"]


def mutate_tree(tree: dict, rng: random.Random) -> object:
    """One or more structural or value mutations of a nested mapping."""
    doc = json.loads(json.dumps(tree, default=str))
    for _ in range(rng.randint(1, 3)):
        paths = list(walk(doc))
        op = rng.random()
        if not paths or op < 0.05:
            return rng.choice([[1, 2], "just text", 42, None, [{"a": 1}]])
        parent, key = rng.choice(paths)
        if op < 0.25:
            del parent[key]
        elif op < 0.75:
            parent[key] = rng.choice(WILD)
        elif op < 0.9:
            parent[f"{key}_typo"] = parent[key]
        else:
            parent[key] = {"nested": parent[key]}
    return doc


def walk(node: object, depth: int = 0):
    if isinstance(node, dict) and depth < 6:
        for k in list(node):
            yield node, k
            yield from walk(node[k], depth + 1)


def fuzz_yaml(tree: dict, folder: Path, n: int, rng: random.Random) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{i:04d}.yaml"
        kind = rng.random()
        if kind < 0.6:
            text = yaml.safe_dump(mutate_tree(tree, rng), allow_unicode=True)
        elif kind < 0.85:  # corrupt YAML text
            text = yaml.safe_dump(tree)
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(len(text))
                text = text[:at] + rng.choice(":{}[]-#&*!|>'\"%@`\t\n") + text[at + rng.randint(0, 3):]
        elif kind < 0.9:
            text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdef", "bcdefg")) \
                + "camera: *g\nroi: *g\ntrain: *g\n"  # an alias bomb: a billion references
        elif kind < 0.95:
            p.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 400))))
            out.append(p)
            continue
        else:
            text = rng.choice(["", "---\n", "null\n", "- a\n- b\n", "42\n", "train:\n", "camera:\n  source:\n"])
        p.write_text(text)
        out.append(p)
    return out


def fuzz_images(env: Env, folder: Path, n: int, rng: random.Random) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    img = cv2.imread(str(next((env.data / "train" / "good").glob("*.png"))))
    bases = {ext: cv2.imencode(ext, img)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp")}
    odd = {"gray16.png": (img[:, :, 0].astype(np.uint16) * 257), "float_nan.tiff": nan_float(img),
           "tiny.png": img[:1, :1], "bgra.png": cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), "wide.png": img[:1]}
    out = []
    for name, arr in odd.items():
        cv2.imwrite(str(folder / name), arr)
        out.append(folder / name)
    for i in range(n - len(out)):
        ext, data = rng.choice(list(bases.items()))
        data = bytearray(data)
        op = rng.random()
        if op < 0.35:
            for _ in range(rng.randint(1, 40)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op < 0.6:
            data = data[:rng.randrange(len(data))]
        elif op < 0.8:
            data = patch_size(data, ext, rng)
        elif op < 0.95:
            data = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        else:
            data = bytearray()
        p = folder / f"{i:04d}{ext}"
        p.write_bytes(bytes(data))
        out.append(p)
    return out


def nan_float(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32) / 255
    f[0, 0] = np.nan
    f[1, 1] = np.inf
    return f


def patch_size(data: bytearray, ext: str, rng: random.Random) -> bytearray:
    """Claim another (often absurd) size in the header: a decompression bomb or a lie."""
    w, h = rng.choice([(0, 0), (1, 1), (65535, 65535), (100000, 100000), (2 ** 31 - 1, 1), (7, 2 ** 20)])
    if ext == ".png":
        data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    elif ext == ".bmp":
        data[18:26] = (w % 2 ** 31).to_bytes(4, "little") + (h % 2 ** 31).to_bytes(4, "little")
    elif ext == ".jpg":
        at = data.find(b"\xff\xc0")
        if at > 0:
            data[at + 5:at + 9] = (h % 65536).to_bytes(2, "big") + (w % 65536).to_bytes(2, "big")
    return data


def fuzz_model_json(env: Env, folder: Path, n: int, rng: random.Random) -> list[Path]:
    tree = json.loads((env.model / "model.json").read_text())
    out = []
    for i in range(n):
        d = folder / f"{i:04d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.onnx").unlink(missing_ok=True)
        (d / "model.onnx").symlink_to(env.model / "model.onnx")
        p = d / "model.json"
        if rng.random() < 0.85:
            p.write_text(json.dumps(mutate_tree(tree, rng), default=str))
        else:
            text = json.dumps(tree)
            at = rng.randrange(len(text))
            p.write_text(text[:at] + rng.choice('{}[]",:') + text[at + 1:])
        out.append(p)
    return out


def fuzz_cli_sample(env: Env, kinds: dict, rng: random.Random) -> int:
    """A few of the fuzzed files through the real command line: rc 0/1/2 and never a traceback."""
    bad = 0
    calls = [["predict", "--model", str(env.model), "--out", str(env.work / "fuzz" / "out"), str(p)]
             for p in rng.sample(kinds["image"][0], 5)]
    calls += [["predict", "--model", str(p.parent), "--out", str(env.work / "fuzz" / "out"),
               str(kinds["image"][0][0])] for p in rng.sample(kinds["model_json"][0], 5)]
    calls += [["run", "--config", str(p), "--max-frames", "1", "--source", str(env.good)]
              for p in rng.sample(kinds["station_yaml"][0], 5)]
    for argv in calls:
        try:
            r = subprocess.run([sys.executable, "-m", "edge_ad.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                               timeout=20)
            bad += "Traceback" in r.stderr or r.returncode not in (0, 1, 2)
        except subprocess.TimeoutExpired:
            pass  # a valid config with a live camera runs on: not an error
    return bad


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
    warm = min(60.0, 0.2 * duration)
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
            "note": f"live replay at camera.fps 1000 (as fast as inference goes), frame log on (rotated at 5 MB); RSS "
                    f"growth = mean of the last {window} samples - mean of the first {window} after {warm:.0f} s warm-up"}


# ------------------------------------------------------------------------------------------------ exposure


def trial_exposure(env: Env, args: argparse.Namespace) -> dict:
    """systemd-analyze security of the shipped unit, and strace of a station run as an unprivileged user against the
    unit's own SystemCallFilter (CPU path: onnxruntime, OpenCV, paho, waitress, sd_notify)."""
    if shutil.which("systemd-analyze") is None:
        return {"cases": 0, "failures": 0, "note": "skipped: systemd-analyze not installed"}
    folder = fresh(env.work / "exposure")
    unit_text = (ROOT / "jetson" / "edge_ad.service").read_text()
    (folder / "edge_ad.service").write_text(unit_text.replace("ExecStart=/opt/edge_ad/venv/bin/edge_ad ",
                                                              f"ExecStart={sys.executable} "))
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", str(folder / "edge_ad.service")],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for edge_ad.service: ([0-9.]+)", res.stdout)
    exposure = float(m.group(1)) if m else float("nan")
    row = {"cases": 2, "exposure": exposure, "exposure_before": EXPOSURE_BEFORE}
    outside, used, note = syscalls_outside_filter(env, folder, unit_text)
    row.update(syscalls_used=used, syscalls_outside_filter=len(outside) if outside is not None else "not checked")
    row["failures"] = int(not exposure <= 3.0) + (len(outside) if outside else 0)
    row["note"] = note + (f"; outside: {', '.join(sorted(outside))}" if outside else "")
    return row


def syscalls_outside_filter(env: Env, folder: Path, unit_text: str) -> tuple[set[str] | None, int, str]:
    if shutil.which("strace") is None or shutil.which("unshare") is None:
        return None, 0, "syscall check skipped: strace or unshare missing"
    allowed = filter_allow_list([v for k, v in unit_settings(unit_text) if k == "SystemCallFilter"])
    run = folder / "run"
    run.mkdir()
    broker = Broker(folder / "broker").start() if mosquitto_binary() else None
    cfg = station_cfg(env, run, camera={"source": str(env.alternating), "live": True, "fps": 20.0},
                      mqtt={"enabled": bool(broker), "host": "127.0.0.1", "port": broker.port if broker else 1,
                            "queue_dir": str(run / "queue")},
                      gpio={"enabled": True, "backend": "fake", "fault_pin": 11})
    (run / "station.yaml").write_text(yaml.safe_dump(cfg))
    trace = folder / "strace.out"
    # an unmapped user namespace: the station runs as uid 65534 (no privilege, as the service user) while this
    # checkout and its Python stay readable wherever they are installed
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # systemd's end of sd_notify (READY, WATCHDOG)
    notify.bind(str(run / "notify"))
    cmd = ["strace", "-f", "-qq", "-o", str(trace), "unshare", "--user", "env", f"HOME={run}",
           f"NOTIFY_SOCKET={run / 'notify'}", "WATCHDOG_USEC=1000000", sys.executable, "-m", "edge_ad.cli", "run", "--config", str(run / "station.yaml"),
           "--max-frames", "100"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    notify.close()
    if broker:
        broker.stop()
    used = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace.read_text(), re.M))
    if res.returncode != 0:
        return None, len(used), f"syscall check: the unprivileged station failed: {res.stderr.strip()[-200:]}"
    return used - allowed, len(used), ("station run unprivileged (uid 65534, user namespace) under strace for 100 "
                                       "frames: onnxruntime, OpenCV, MQTT, web view, GPIO fake, sd_notify with a watchdog")


def unit_settings(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in text.splitlines()  # type: ignore[misc]
            if "=" in line and not line.lstrip().startswith(("#", ";", "["))]


def filter_allow_list(lines: list[str]) -> set[str]:
    """The system calls an allow-list SystemCallFilter= sequence permits (groups expanded by systemd-analyze)."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if line.startswith("@"):
            current = s.split()[0]
            groups[current] = []
        elif current:
            groups[current].append(s.split()[0])

    def expand(items: list[str]) -> set[str]:
        names: set[str] = set()
        for item in items:
            names |= expand(groups.get(item, [])) if item.startswith("@") else {item}
        return names

    allowed: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        names = expand(line.lstrip("~").split())
        allowed = allowed - names if deny else allowed | names
    return allowed


# ------------------------------------------------------------------------------------------------ main


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


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
    rows = {r["trial"]: r for r in load_rows("reliability")}
    for name in run:
        t0 = time.monotonic()
        print(f"--- {name}", flush=True)
        row = {"trial": name, **globals()[f"trial_{name}"](env, args)}
        row["minutes"] = round(since(t0) / 60, 1)
        row["figures"] = figures(row)
        print(json.dumps(row), flush=True)
        rows[name] = row
        write_results("reliability", [rows[t] for t in TRIALS if t in rows], COLUMNS, NOTES)


NOTES = ("Every trial runs the real thing: `edge_ad run` in its own process (watched through its web API and frame "
         "log), a real mosquitto, OpenCV reading a real HTTP MJPEG stream, a real tmpfs filled to the last byte, real "
         "`edge_ad calibrate` processes killed with SIGKILL. Target: 0 failures on every row, soak RSS growth < 5 MB, "
         "exposure <= 3.0. The soak row says how many minutes it ran (the full check is 30). Shared 2-core machine: "
         "fps figures are noisy.")

if __name__ == "__main__":
    main()
