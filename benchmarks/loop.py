"""The whole station loop vs the bare detector on the same model and frames, in one run.

Rows: bare detector fps; loop fps (video file, every frame, alarms + evidence + frame log on);
capture-to-verdict latency p50/p99 and capture-to-alarm for alarm frames; a camera faster than
inference (live replay at a high fps): dropped frames, and whether latency grows over time.
Usage: python benchmarks/loop.py [--frames 300] [--threads 2] [--model runs/bench/bottle/rd/model.onnx]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA_ROOT, write_results  # noqa: E402

from edge_ad.station.loop import run_station  # noqa: E402
from edge_ad.runtime.detector import open_detector  # noqa: E402
from edge_ad.station.config import station_config_from_dict  # noqa: E402

COLUMNS = [("variant", "variant"), ("fps", "frames/s"), ("overhead_pct", "overhead vs bare reading the video %"),
           ("overhead_vs_predecoded_pct", "overhead vs bare on decoded frames %"), ("ms_p50", "latency p50 ms"),
           ("ms_p99", "latency p99 ms"), ("alarm_ms_p50", "capture->alarm p50 ms"),
           ("alarm_ms_p99", "capture->alarm p99 ms"), ("dropped", "dropped"),
           ("p99_first_half", "p99 1st half ms"), ("p99_second_half", "p99 2nd half ms"), ("frames", "frames")]


def make_video(path: Path, n: int, fps: float = 30.0) -> list[np.ndarray]:
    """Bottle test images (good and defective) cycled into an MJPG video; noise when data is absent."""
    imgs = []
    for sub in ("good", "broken_large", "contamination"):
        d = DATA_ROOT / "bottle" / "test" / sub
        imgs += [cv2.imread(str(p)) for p in sorted(d.glob("*.png"))[:6]] if d.is_dir() else []
    if not imgs:
        imgs = [np.random.default_rng(i).integers(0, 255, (320, 320, 3), dtype=np.uint8) for i in range(12)]
    h, w = imgs[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    frames = [imgs[i % len(imgs)] for i in range(n)]
    for f in frames:
        wr.write(f)
    wr.release()
    cap, decoded = cv2.VideoCapture(str(path)), []
    while len(decoded) < n:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f)
    return decoded


def station(model: Path, video: Path, work: Path, **camera) -> dict:
    return {"station": "bench", "part": "bottle", "bundle": str(model.parent), "frame_log": str(work / "frames.jsonl"),
            "camera": {"source": str(video), **camera}, "debounce": {"window": 3, "min_anomalous": 2, "hold_s": 0.0},
            "evidence": {"dir": str(work / "evidence"), "max_mb": 200.0}}


def pct(a, q):
    return float(np.percentile(np.asarray(a), q)) if len(a) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="runs/bench/bottle/rd/model_int8_cpu_percentile.onnx",
                    help="exported model (with its .json); benchmarks/int8.py writes the default")
    args = ap.parse_args()
    model = Path(args.model)
    if not model.is_file():
        sys.exit(f"{model} missing: run benchmarks/accuracy.py and benchmarks/int8.py first, or pass --model")
    with tempfile.TemporaryDirectory(prefix="edge_ad_loopbench.") as tmp:
        work = Path(tmp)
        # the loop opens the bundle folder: give it this model as model.onnx
        bundle = work / "bundle"
        bundle.mkdir()
        (bundle / "model.onnx").symlink_to(model.resolve())
        (bundle / "model.json").symlink_to(model.with_suffix(".json").resolve())
        video = work / "line.avi"
        frames = make_video(video, args.frames)

        det = open_detector(bundle / "model.onnx", threads=args.threads)
        for f in frames[:10]:
            det.detect(f)
        t0 = time.perf_counter()
        for f in frames:
            det.detect(f)
        bare_fps = len(frames) / (time.perf_counter() - t0)
        cap, n, t0 = cv2.VideoCapture(str(video)), 0, time.perf_counter()
        while True:  # the same detector reading the same video itself: decode + detect, nothing else
            ok, f = cap.read()
            if not ok:
                break
            det.detect(f)
            n += 1
        bare_decode_fps = n / (time.perf_counter() - t0)
        rows = [{"variant": "bare detector, frames decoded beforehand", "fps": bare_fps, "frames": len(frames)},
                {"variant": "bare detector reading the video (decode + detect)", "fps": bare_decode_fps, "frames": n}]

        cfg = station_config_from_dict(station(bundle / "model.onnx", video, work, file_mode="every"))
        t0 = time.perf_counter()
        stats = run_station(cfg)
        loop_fps = stats.frames / (time.perf_counter() - t0)
        lat = stats.latencies_ms
        recs = [json.loads(x) for x in (work / "frames.jsonl").read_text().splitlines()]
        alarm_lat = [r["alarm_latency_ms"] for r in recs if "alarm_latency_ms" in r]
        rows.append({"variant": "loop, video file, every frame (includes decode)", "fps": loop_fps,
                     "overhead_pct": 100 * (bare_decode_fps / loop_fps - 1),
                     "overhead_vs_predecoded_pct": 100 * (bare_fps / loop_fps - 1), "ms_p50": pct(lat, 50), "ms_p99": pct(lat, 99),
                     "alarm_ms_p50": pct(alarm_lat, 50), "alarm_ms_p99": pct(alarm_lat, 99), "dropped": stats.dropped, "frames": stats.frames,
                     "alarms": stats.alarms})

        fast = round(max(2 * bare_fps, 120.0))
        fast_video = work / "fast.avi"  # a replayed file is paced at its own frame rate
        make_video(fast_video, args.frames, fps=fast)
        cfg = station_config_from_dict(station(bundle / "model.onnx", fast_video, work, live=True))
        stats = run_station(cfg, max_frames=args.frames)
        lat = stats.latencies_ms
        half = len(lat) // 2
        rows.append({"variant": f"loop, camera at {fast:.0f} fps (faster than inference)",
                     "ms_p50": pct(lat, 50), "ms_p99": pct(lat, 99), "dropped": stats.dropped, "frames": stats.frames,
                     "p99_first_half": pct(lat[:half], 99), "p99_second_half": pct(lat[half:], 99)})
        for r in rows:
            print(r, flush=True)
    write_results("loop", rows, COLUMNS, NOTES.format(model=model, threads=args.threads))


NOTES = ("Model: `{model}` (onnxruntime, {threads} threads, batch 1). The bare detector runs once on frames already "
         "decoded and once reading the MJPG video itself; the loop decodes in its grabber thread and also writes a JSON "
         "line per frame, alarms (log sink) and evidence JPEGs (17 alarms in 300 frames: far more than a real line). Latency is capture (grab time) to verdict. With a camera faster than "
         "inference the grabber keeps only the newest frame: dropped frames grow, latency does not.")

if __name__ == "__main__":
    main()
