"""The reproductions of ../shared/trials/station-faults.md, run as written there (shortened) and checked for the
fixed behaviour: one row of the fault harness (reliability.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from reliability_kit import Env, SmallDisk, StationProc, fresh, since, station_cfg  # noqa: E402

from helpers import wait_until  # noqa: E402  (tests/, put on sys.path by reliability_kit)
from mosquitto_fixture import free_port  # noqa: E402

from edge_ad import bundle as B  # noqa: E402


# ------------------------------------------------------------------------------------------------ reproductions


def trial_reproductions(env: Env, args: argparse.Namespace) -> dict:
    """Each failed trial of station-faults.md, run as written there (shortened), checked for the fixed behaviour."""
    folder = fresh(env.work / "repro")
    M, D = env.model, env.data
    good = D / "test" / "good"
    one = sorted(good.iterdir())[0]
    results: dict[str, str] = {}

    def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_ad.cli", *map(str, argv)], cwd=folder, capture_output=True,
                              text=True, timeout=timeout)

    def check(tid: str, ok: bool, why: str = "") -> None:
        results[tid] = "ok" if ok else f"FAILED {why}"[:200]

    def clean(r: subprocess.CompletedProcess, rc: int, *words: str) -> bool:
        return r.returncode == rc and "Traceback" not in r.stderr and all(w in r.stderr + r.stdout for w in words)

    def station_yaml(name: str, **kw) -> Path:
        cfg = {"bundle": str(M), "frame_log": "", "evidence": {"enabled": False}, "camera": {"source": str(good)}, **kw}
        path = folder / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    r = cli("predict", "--model", M, "--out", "out", good)
    check("1h", r.returncode == 0 and r.stdout.count("score=") == len(list(good.iterdir())), r.stderr[-200:])
    import cv2
    f = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    f[0, 0] = np.nan
    cv2.imwrite(str(folder / "nan.tiff"), f)
    r = cli("predict", "--model", M, "--out", "out", folder / "nan.tiff")
    check("1i", r.returncode == 0 and "Warning" not in r.stderr, r.stderr[-200:])
    (folder / "list.yaml").write_text("- a\n- b\n")
    (folder / "nullsec.yaml").write_text("train:\n")
    r1 = cli("train", "--config", folder / "list.yaml", "--data", D, "--out", "o1")
    r2 = cli("train", "--config", folder / "nullsec.yaml", "--data", D, "--out", "o1", "--set", "train.epochs=abc")
    check("2h", clean(r1, 2, "list.yaml", "mapping") and clean(r2, 2, "train.epochs"), r1.stderr[-100:] + r2.stderr[-100:])
    r = cli("run", "--config", station_yaml("port.yaml", mqtt={"enabled": True, "port": 70000}), "--max-frames", "3")
    check("2l", clean(r, 2, "mqtt.port"), r.stderr[-200:])
    r1 = cli("run", "--config", station_yaml("roi3.yaml", roi=[0, 0, 10]), "--max-frames", "3")
    r2 = cli("run", "--config", station_yaml("roi0.yaml", roi=[0, 0, 0, 0]), "--max-frames", "3")
    check("2m", clean(r1, 2, "roi") and clean(r2, 2, "roi"), r1.stderr[-100:] + r2.stderr[-100:])
    edits = {"3d": ("o", lambda d: d["scoring"].__setitem__("out_size", [100])),
             "3e": ("g", lambda d: d["scoring"].__setitem__("groups", [[0, 1, 5]])),
             "3f": ("s", lambda d: d["scoring"].__setitem__("image_score", "median"))}
    for tid, (name, edit) in edits.items():
        d = folder / name
        d.mkdir()
        shutil.copy(M / "model.onnx", d)
        doc = json.loads((M / "model.json").read_text())
        edit(doc)
        (d / "model.json").write_text(json.dumps(doc))
        r = cli("predict", "--model", d, "--out", "out", one)
        check(tid, clean(r, 2, str(d)), r.stderr[-200:])
    st = StationProc(folder / "stg", station_cfg(env, folder / "stg", bundle=str(folder / "g")))
    faulted = st.wait(lambda s: s["state"] == "fault" and "scoring.groups" in s["fault"], timeout=60)
    rc = st.stop()
    if not (faulted and rc == 0 and "Traceback" not in st.log()):
        results["3e"] = f"FAILED the station on a bad model.json: fault {faulted}, rc {rc}"
    results["3g"] = repro_model_pt(env, folder, cli)
    results["4a4"] = repro_silent_broker(env, folder)
    (folder / "bad").mkdir()
    (folder / "bad" / "a.png").write_text("x")
    busy = station_yaml("busy.yaml", camera={"source": str(folder / "bad"), "live": True})
    t0 = time.monotonic()
    r = subprocess.run(["timeout", "5", sys.executable, "-m", "edge_ad.cli", "run", "--config", str(busy)], cwd=folder,
                       capture_output=True, text=True)
    lines = len(r.stderr.splitlines())
    check("4b5", lines < 40 and "Traceback" not in r.stderr, f"{lines} log lines in {since(t0)} s")
    results["4c2"], exit_s = repro_hung_rtsp(env, folder)
    parts = folder / "parts"
    for text in "ab":
        B.write_bundle(parts, "p5", {"model.onnx": M / "model.onnx", "model.json": M / "model.json"}, {"note": text})
    (parts / "p5" / "v1" / "model.onnx").unlink()
    r = cli("parts", "rollback", "p5", "--parts-root", parts, "--to", "1")
    check("5g", clean(r, 2, "not rolling back to v1") and B.current_version(parts, "p5") == 2, r.stderr[-200:])
    r = subprocess.run(f"{sys.executable} -m edge_ad.cli parts show p5 --parts-root {parts} | head -1", shell=True,
                       cwd=folder, capture_output=True, text=True, executable="/bin/bash")
    check("5h", r.stderr == "", r.stderr[-200:])
    results.update(repro_full_disk(env, folder, cli, station_yaml, good, one))
    failed = {k: v for k, v in results.items() if v != "ok"}
    return {"cases": len(results), "failures": len(failed), "ids": " ".join(results), "sigterm_exit_s_4c2": exit_s,
            "log_lines_5s_4b5": lines,
            "note": "; ".join(f"{k}: {v}" for k, v in failed.items()) or
            "every reproduction behaves as fixed; 4d2/4d3: sighup row, 5d/5e: calibrate_kill, 8a/8c: soak"}


def repro_model_pt(env: Env, folder: Path, cli) -> str:
    import torch

    ck = torch.load(env.model / "model.pt", map_location="cpu", weights_only=True)
    variants = {"pt_arch": {**ck, "config": {**ck["config"], "model": {**ck["config"]["model"], "width": 32}}},
                "pt_nothr": {**ck, "meta": {k: v for k, v in ck["meta"].items() if k != "threshold"}},
                "pt_fmt": {**ck, "format": "edge_ad-model-9"}}
    one = sorted((env.data / "test" / "good").iterdir())[0]
    for name, obj in variants.items():
        (folder / name).mkdir()
        torch.save(obj, folder / name / "model.pt")
        r = cli("predict", "--model", folder / name, "--out", "out", one)
        if "Traceback" in r.stderr or r.returncode not in (0, 2) or (r.returncode == 2 and name not in r.stderr):
            return f"FAILED {name}: rc {r.returncode} {r.stderr[-150:]}"
    return "ok"


def repro_silent_broker(env: Env, folder: Path) -> str:
    """A broker that accepts TCP and never answers: the station says so within mqtt.connect_timeout_s (5 s)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(9)
    cfg = station_cfg(env, folder / "silent", camera={"source": str(env.alternating), "live": True, "fps": 4.0},
                      mqtt={"enabled": True, "host": "127.0.0.1", "port": srv.getsockname()[1],
                            "queue_dir": str(folder / "silent" / "q"), "close_timeout_s": 0.0})
    st = StationProc(folder / "silent", cfg)
    said = wait_until(lambda: "no connection to broker" in st.log(), timeout=30)
    rc = st.stop()
    srv.close()
    return "ok" if said and rc == 0 else f"FAILED warned {said}, rc {rc}"


def repro_hung_rtsp(env: Env, folder: Path) -> tuple[str, float]:
    """SIGTERM while OpenCV's RTSP open hangs on a server that never answers: the station exits within 2 s."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(9)
    cfg = station_cfg(env, folder / "hang", camera={"source": f"rtsp://127.0.0.1:{srv.getsockname()[1]}/stream"},
                      web={"enabled": False})
    st = StationProc(folder / "hang", cfg)
    conn = srv.accept()[0]  # the open is in progress now, and hangs
    wait_until(lambda: "threshold" in st.log(), timeout=60)
    time.sleep(2.0)
    t0 = time.monotonic()
    rc = st.stop(timeout=30)
    took = time.monotonic() - t0
    conn.close()
    srv.close()
    return ("ok" if rc == 0 and took <= 2.0 else f"FAILED exit after {took:.2f} s, rc {rc}"), round(took, 2)


def repro_full_disk(env: Env, folder: Path, cli, station_yaml, good: Path, one: Path) -> dict[str, str]:
    try:
        disk = SmallDisk(folder / "tiny", 1024)
    except PermissionError as e:
        return {k: f"skipped ({e})" for k in ("6a", "6c", "6f")}
    out = {}
    try:
        (disk.path / "q").mkdir()
        (disk.path / "out").mkdir()
        disk.fill()
        r = cli("run", "--config", station_yaml("full.yaml", frame_log=str(disk.path / "frames.jsonl")), "--max-frames", "3")
        out["6a"] = "ok" if r.returncode == 0 and "Traceback" not in r.stderr and "cannot write" in r.stderr \
            else f"FAILED rc {r.returncode} {r.stderr[-150:]}"
        fullq = station_yaml("fullq.yaml", camera={"source": str(env.alternating)}, threshold=env.threshold,
                             debounce={"window": 1, "min_anomalous": 1, "hold_s": 0.0},
                             mqtt={"enabled": True, "host": "127.0.0.1", "port": free_port(),
                                   "queue_dir": str(disk.path / "q"), "close_timeout_s": 0.0})
        r = cli("run", "--config", fullq, "--max-frames", "6")
        tmp_left = list((disk.path / "q").glob(".*.tmp"))
        out["6c"] = "ok" if r.returncode == 0 and "Traceback" not in r.stderr and "kept in memory" in r.stderr \
            and not tmp_left else f"FAILED rc {r.returncode}, {len(tmp_left)} .tmp left, {r.stderr[-150:]}"
        r = cli("predict", "--model", env.model, "--out", disk.path / "out", one)
        out["6f"] = "ok" if r.returncode == 1 and "cannot write" in r.stderr and not list((disk.path / "out").iterdir()) \
            else f"FAILED rc {r.returncode} {r.stderr[-150:]}"
    finally:
        disk.close()
    return out
