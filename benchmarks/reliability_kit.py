"""Pieces the fault harness (reliability.py) drives: a tiny model and frames, a station process watched through its
web API, a small full-able disk, and the outcome of a loader call on a fuzzed file. Not a benchmark itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import SmallDisk, wait_until  # noqa: E402, F401  (SmallDisk: for the trials)
from mosquitto_fixture import free_port  # noqa: E402
from test_loop import defect  # noqa: E402  (the painted defect the loop tests use)

TINY = {"data.image_size": [64, 64], "model.width": 16, "train.epochs": 3, "train.batch_size": 4, "train.threads": 2}


@dataclass
class Env:
    """What every trial shares (made once per work folder, reused by later runs)."""

    work: Path
    data: Path  # MVTec-layout demo part
    model: Path  # folder with model.onnx + model.json (+ model.pt)
    threshold: float  # between the worst good frame and the mildest painted defect
    alternating: Path  # folder: good, defect, good, defect, ... (an alarm on every defect frame)
    good: Path  # folder of good frames only


def make_env(work: Path) -> Env:
    """Demo data, a tiny rd model exported to ONNX, and frame folders (seconds; cached in `work`)."""
    from edge_ad import data as D
    from edge_ad.runtime.detector import open_detector

    work.mkdir(parents=True, exist_ok=True)
    data, model = work / "demo", work / "model"
    if not (data / "train" / "good").is_dir():
        from edge_ad.training.demo_data import make_demo_data

        make_demo_data(data, n_train=12, n_test_good=6, n_test_bad=6, size=128, progress=False)
    if not (model / "model.onnx").is_file():
        from edge_ad.config import load_config
        from edge_ad.deploy.export import export_onnx
        from edge_ad.training.train import train

        pt = train(load_config(None, {**TINY, "data.root": str(data), "train.out_dir": str(model)}))
        export_onnx(pt, pt.with_suffix(".onnx"))
    goods = [D.load_image(p) for p in D.list_images(data / "train" / "good")]
    alternating, good = work / "frames_alternating", work / "frames_good"
    for folder in (alternating, good):
        folder.mkdir(exist_ok=True)
    for i, img in enumerate(goods):
        cv2.imwrite(str(good / f"{i:03d}.png"), img)
        cv2.imwrite(str(alternating / f"{2 * i:03d}.png"), img)
        cv2.imwrite(str(alternating / f"{2 * i + 1:03d}.png"), defect(img))
    det = open_detector(model / "model.onnx")
    good_scores = [det.detect(g).score for g in goods]
    bad_scores = [det.detect(defect(g)).score for g in goods]
    if min(bad_scores) <= max(good_scores):
        raise SystemExit("the tiny model does not separate the painted defects: delete the work folder and rerun")
    return Env(work, data, model, (min(bad_scores) + max(good_scores)) / 2, alternating, good)


def station_cfg(env: Env, folder: Path, **kw: Any) -> dict:
    """A station on a live replayed folder, web API on for watching it, evidence and frame log in its folder."""
    cfg: dict[str, Any] = {
        "station": "rel", "part": "part", "bundle": str(env.model), "threshold": env.threshold,
        "camera": {"source": str(env.alternating), "live": True, "fps": 10.0, "reconnect_min_s": 0.1,
                   "reconnect_max_s": 1.0},
        "debounce": {"window": 1, "min_anomalous": 1, "hold_s": 0.0},
        "frame_log": str(folder / "frames.jsonl"),
        "evidence": {"dir": str(folder / "evidence"), "max_mb": 20.0},
        "fault": {"retry_s": 0.5, "camera_lost_s": 1.0},
        "web": {"enabled": True, "port": free_port()},
    }
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


class StationProc:
    """`edge_ad run` in its own process, as systemd runs it; watched through /api/status and its log."""

    def __init__(self, folder: Path, cfg: dict, argv: list[str] | None = None, env: dict | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.cfg = cfg
        self.config = folder / "station.yaml"
        self.write_config(cfg)
        self.log_path = folder / "station.log"
        self.url = f"http://127.0.0.1:{cfg['web']['port']}/api/status" if cfg.get("web", {}).get("enabled") else ""
        self._err = open(self.log_path, "w")
        cmd = argv or [sys.executable, "-m", "edge_ad.cli", "run", "--config", str(self.config)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._err,
                                     env={**os.environ, **(env or {})})

    def write_config(self, cfg: dict) -> None:
        self.config.write_text(yaml.safe_dump(cfg))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(self.url, timeout=3) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def wait(self, pred: Callable[[dict], bool], timeout: float) -> bool:
        def check() -> bool:
            s = self.status()
            return s is not None and bool(pred(s))
        return wait_until(check, timeout=timeout, interval=0.2)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self._err.close()
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def frames(self) -> list[dict]:
        """The frame log's records (the rotated part too), whole lines only."""
        path = Path(self.cfg["frame_log"])
        out = []
        for p in (path.with_name(path.name + ".1"), path):
            if p.is_file():
                for line in p.read_text().splitlines():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        out.append({"broken_line": line})
        return out


def outcome(call: Callable[[], Any], path: Path) -> str:
    """How a loader took an untrusted file: ok | clean (one-line EdgeAdError naming the file) | bad: <why>."""
    from edge_ad.errors import EdgeAdError

    try:
        call()
        return "ok"
    except EdgeAdError as e:
        text = str(e)
        if "\n" in text:
            return f"bad: multi-line error: {text[:200]!r}"
        if path.name not in text:
            return f"bad: error does not name the file: {text[:200]!r}"
        return "clean"
    except Exception as e:  # noqa: BLE001 - exactly what the fuzz trial counts
        return f"bad: {type(e).__name__}: {str(e)[:200]}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fresh(folder: Path) -> Path:
    """An empty folder (what an earlier run left there is removed, tmpfs mounts included)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        mount = line.split()[1]
        if mount.startswith(str(folder) + "/"):
            subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def since(t0: float) -> float:
    return round(time.monotonic() - t0, 1)
