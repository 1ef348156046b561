"""The whole station loop vs the bare detector on the same model and frames, in one run.

Rows: bare detector fps; loop fps (video file, every frame, alarms + evidence + frame log on);
capture-to-verdict latency p50/p99 and capture-to-alarm for alarm frames; a camera faster than
inference (live replay at a high fps): dropped frames, and whether latency grows over time; the loop
with the web view off and on with one headless browser watching it (runs interleaved, steady state).
Usage: python benchmarks/loop.py [--frames 300] [--threads 2] [--model runs/bench/bottle/rd/model.onnx]
                                 [--web-seconds 15] [--web-reps 4]
Smoke run (seconds: the demo part's tiny model, a short video, one web round without a browser, results in a temp
folder): python benchmarks/loop.py --smoke [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from common import DATA_ROOT, write_results  # noqa: E402

from edge_ad.station.loop import run_station  # noqa: E402
from edge_ad.station.service import StopFlag  # noqa: E402
from edge_ad.runtime.detector import open_detector  # noqa: E402
from edge_ad.station.config import station_config_from_dict  # noqa: E402

COLUMNS = [("variant", "variant"), ("fps", "frames/s"), ("overhead_pct", "overhead vs bare reading the video %"),
           ("overhead_vs_predecoded_pct", "overhead vs bare on decoded frames %"), ("ms_p50", "latency p50 ms"),
           ("ms_p99", "latency p99 ms"), ("alarm_ms_p50", "capture->alarm p50 ms"),
           ("alarm_ms_p99", "capture->alarm p99 ms"), ("dropped", "dropped"),
           ("p99_first_half", "p99 1st half ms"), ("p99_second_half", "p99 2nd half ms"), ("frames", "frames"),
           ("fps_vs_web_off_pct", "fps vs web off %"), ("p99_vs_web_off_pct", "p99 vs web off %")]
WARMUP_S = 3.0  # web rows: frames captured in the first seconds of a run are left out (and all until the browser
# shows the live view, plus a second, in both runs of a pair)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


VIDEO_SOURCE = DATA_ROOT / "bottle" / "test"
VIDEO_KINDS = ("good", "broken_large", "contamination")
SMOKE_VIDEO_KINDS = ("good", "scratch", "hole")  # the demo part's test folders
SMOKE_AFTER_READY_S = 2.0  # smoke web runs end this long after the client showed the live view
MIN_STEADY_FRAMES = 100  # a web row from fewer frames says little: rerun longer


def make_video(path: Path, n: int, fps: float = 30.0) -> list[np.ndarray]:
    """Bottle test images (good and defective) cycled into an MJPG video; noise when data is absent."""
    imgs = []
    for sub in VIDEO_KINDS:
        d = VIDEO_SOURCE / sub
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def viewer(url: str, ready: str, priority: str) -> None:
    """One operator's browser (its own process): opens the page, waits for the live image, then keeps watching.
    Writes `ready`.launched once the browser runs (the station is started then) and `ready` with the time the live
    image showed. `priority` "idle" runs it and the chromium it starts under SCHED_IDLE, so it only gets CPU time the
    station leaves (a tablet's CPU is not the station's). nice 19 does not do that: chromium run as root resets its
    processes' niceness (seen here: browser and GPU process at -8, renderers at 0 and 5), SCHED_IDLE it keeps.
    "normal" leaves it as a browser on the station itself."""
    import os

    from playwright.sync_api import Error, sync_playwright

    if priority == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        Path(ready + ".launched").write_text(str(time.time()))
        deadline = time.monotonic() + 60
        while True:
            try:
                page.goto(url)
                break
            except Error:  # the station's server is not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        page.wait_for_function("() => document.querySelector('#live').naturalWidth > 0", timeout=60_000)
        Path(ready).write_text(str(time.time()))
        while True:
            page.wait_for_timeout(1000)


def replay(url: str, ready: str, priority: str) -> None:
    """What the station serves one browser, without a browser: the live MJPEG stream read to the end and the page's
    polls at its rates (status 1 s, scores and alarms 2 s, parts 5 s, each new alarm's thumbnail once), under
    SCHED_IDLE. Separates the station's own cost of a viewer from the cost of rendering the page on the same cores."""
    import json as json_
    import os
    import threading
    import urllib.request

    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    Path(ready + ".launched").write_text(str(time.time()))

    def get(path: str) -> bytes:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            return r.read()

    def stream() -> None:
        while True:
            try:
                with urllib.request.urlopen(url + "live.mjpg", timeout=10) as r:
                    seen = 0
                    while chunk := r.read(16384):
                        seen += chunk.count(b"\xff\xd8")
                        if seen and not Path(ready).is_file():
                            Path(ready).write_text(str(time.time()))
            except OSError:
                time.sleep(0.2)

    threading.Thread(target=stream, daemon=True).start()
    thumbs: set[str] = set()
    for tick in range(10**9):
        try:
            get("api/status")
            if tick % 2 == 0:
                get("api/scores")
                for row in json_.loads(get("api/alarms"))["rows"]:
                    if row["id"] and row["id"] not in thumbs:
                        thumbs.add(row["id"])
                        get(f"evidence/{row['id']}/thumb.jpg")
            if tick % 5 == 0:
                get("api/parts")
        except OSError:  # the station is not up yet, or has ended
            pass
        time.sleep(1.0)


def wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.is_file()


def steady(log: Path, since: float) -> tuple[float, list[float], int]:
    """fps and latencies of the frames captured after `since` (capture times from the frame log)."""
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    recs = [r for r in recs if r["time"] >= since]
    fps = (len(recs) - 1) / (recs[-1]["time"] - recs[0]["time"]) if len(recs) > 1 else float("nan")
    return fps, [r["latency_ms"] for r in recs], len(recs)


# web rows: (key, browser priority or None for no web view, row name)
WEB_VARIANTS = [("off", None, "web view off"),
                ("tablet", "idle", "web view on, one browser watching (chromium under SCHED_IDLE: the operator's tablet)"),
                ("local", "normal", "web view on, one browser watching (chromium at normal priority on the same cores)"),
                ("replay", "replay", "web view on, the page's requests replayed by a plain HTTP client under SCHED_IDLE "
                 "(the station's own cost of one viewer, no page rendering)")]


def stop_after_ready(stop: StopFlag, ready: Path, client: bool, start: float, after_s: float, done: threading.Event) -> None:
    """Ends a run `after_s` seconds after the second that follows the viewer showing the live view (the frames the
    rows count; without a viewer: after the first second), so a smoke run on loaded cores always has frames after
    the viewer came, however late it came."""
    while not done.wait(0.1):
        text = ready.read_text().strip() if client and ready.is_file() else ""
        since = float(text) if text else (None if client else start)  # a viewer's run counts from its viewer
        if since is not None and time.time() > since + 1.0 + after_s:
            stop.set()
            return


def web_run(model: Path, video: Path, work: Path, name: str, priority: str | None,
            after_ready_s: float | None = None) -> tuple[Path, float, float | None]:
    """One loop run (frame log path, start time, time the browser showed the live view); with `after_ready_s` the run
    ends that long after the browser showed it, else at the end of the video."""
    log, ready = work / f"frames_{name}.jsonl", work / f"ready_{name}"
    doc = station(model, video, work, file_mode="every")
    doc["frame_log"] = str(log)
    client = None
    if priority is not None:
        port = free_port()
        doc["web"] = {"enabled": True, "port": port}
        client = multiprocessing.get_context("spawn").Process(
            target=replay if priority == "replay" else viewer, args=(f"http://127.0.0.1:{port}/", str(ready), priority),
            daemon=True)
        client.start()
        if not wait_file(Path(str(ready) + ".launched"), 120):
            sys.exit("the headless browser did not start (is /usr/bin/chromium installed?)")
    start = time.time()
    stop, done = StopFlag(), threading.Event()
    if after_ready_s is not None:
        threading.Thread(target=stop_after_ready, args=(stop, ready, client is not None, start, after_ready_s, done),
                         daemon=True).start()
    try:
        run_station(station_config_from_dict(doc), stop=stop)
    finally:
        done.set()
        if client is not None:
            client.terminate()
            client.join(10)
    return log, start, float(ready.read_text()) if ready.is_file() else None


def web_rows(model: Path, video: Path, work: Path, reps: int, variants: list = WEB_VARIANTS,
             min_frames: int = MIN_STEADY_FRAMES, warmup_s: float = WARMUP_S,
             after_ready_s: float | None = None) -> list[dict]:
    """The loop without the web view and with it and one browser, interleaved `reps` times; medians of the runs."""
    runs: dict[str, list[tuple[float, float, float, int]]] = {key: [] for key, _, _ in variants}
    order = np.random.default_rng(0)
    for rep in range(reps):  # each round runs the variants in a new order, so a drifting machine load favours none
        done = {key: web_run(model, video, work, f"{rep}_{key}", prio, after_ready_s)
                for key, prio, _ in (variants[i] for i in order.permutation(len(variants)))}
        if any(prio is not None and done[key][2] is None for key, prio, _ in variants):
            sys.exit("the browser never showed the live view: rerun with a longer --web-seconds")
        # the same leading seconds are left out of every run of a round: until every browser showed the live view
        skip = max([warmup_s] + [ready - start + 1.0 for _, start, ready in done.values() if ready is not None])
        for key, (log, start, ready) in done.items():
            if after_ready_s is not None:  # runs that end on their own clock: each skips to its own viewer
                skip = ready - start + 1.0 if ready is not None else warmup_s
            fps, lat, n = steady(log, start + skip)
            if n < min_frames:
                sys.exit(f"only {n} frames after the browser connected: rerun with a longer --web-seconds")
            runs[key].append((fps, pct(lat, 50), pct(lat, 99), n))
            print({"web": key, "fps": fps, "ms_p99": pct(lat, 99), "frames": n, "skipped_s": skip}, flush=True)
    med = {key: [float(np.median([r[i] for r in runs[key]])) for i in range(4)] for key in runs}
    rows = []
    for key, prio, name in variants:
        fps, p50, p99, n = med[key]
        row = {"variant": f"loop, video file, every frame, {name} (steady state, median of {reps} interleaved runs)",
               "fps": fps, "ms_p50": p50, "ms_p99": p99, "frames": int(n),
               "fps_runs": ", ".join(f"{r[0]:.1f}" for r in runs[key]),
               "p99_runs": ", ".join(f"{r[2]:.1f}" for r in runs[key])}
        if prio is not None:
            row["fps_vs_web_off_pct"] = 100 * (fps / med["off"][0] - 1)
            row["p99_vs_web_off_pct"] = 100 * (p99 / med["off"][2] - 1)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="runs/bench/bottle/rd/model_int8_cpu_percentile.onnx",
                    help="exported model (with its .json); benchmarks/int8.py writes the default")
    ap.add_argument("--web-seconds", type=float, default=15.0,
                    help="length of each web view off/on run, at the loop's measured frame rate")
    ap.add_argument("--web-reps", type=int, default=4, help="interleaved off/on rounds (0: skip the web rows)")
    common.add_smoke_args(ap)
    args = ap.parse_args()
    variants, min_frames, warmup_s, after_ready_s = WEB_VARIANTS, MIN_STEADY_FRAMES, WARMUP_S, None
    if args.smoke:  # the tiny rd model exported to ONNX; the web view served to the replay client, not a browser
        global VIDEO_SOURCE, VIDEO_KINDS
        root = common.smoke_folder(args.out)
        pt = common.smoke_model(root)
        from edge_ad.deploy.export import export_onnx

        onnx = pt.with_suffix(".onnx")  # int8.py --smoke exports it; a loop smoke run alone exports it here
        args.model = str(onnx if onnx.is_file() else export_onnx(pt, onnx))
        VIDEO_SOURCE, VIDEO_KINDS = root / "data" / common.SMOKE_DATASET / "test", SMOKE_VIDEO_KINDS
        # a long video that each web run ends itself SMOKE_AFTER_READY_S after the replay client connected: on
        # shared cores (parallel tests) the client connects late, and a fixed-length video could end before it did
        args.frames, args.threads, args.web_reps, args.web_seconds = 30, 1, 1, 120.0
        variants, min_frames, warmup_s = [v for v in WEB_VARIANTS if v[1] in (None, "replay")], 1, 0.5
        after_ready_s = SMOKE_AFTER_READY_S
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
        if args.web_reps:
            long_video = work / "long.avi"
            make_video(long_video, int(np.clip(loop_fps * args.web_seconds, 300, 5000)))
            rows += web_rows(bundle / "model.onnx", long_video, work, args.web_reps, variants, min_frames, warmup_s,
                             after_ready_s)
        for r in rows:
            print(r, flush=True)
    write_results("loop", rows, COLUMNS, NOTES.format(model=model, threads=args.threads, warmup=warmup_s))


NOTES = ("Model: `{model}` (onnxruntime, {threads} threads, batch 1). The bare detector runs once on frames already "
         "decoded and once reading the MJPG video itself; the loop decodes in its grabber thread and also writes a JSON "
         "line per frame, alarms (log sink) and evidence JPEGs (17 alarms in 300 frames: far more than a real line). Latency is capture (grab time) to verdict. With a camera faster than "
         "inference the grabber keeps only the newest frame: dropped frames grow, latency does not. Web view rows: the "
         "same loop on a longer video, with `web.enabled` and a headless chromium (Playwright, its own process, on the "
         "same 2 cores) showing the page (live MJPEG at the default 4 frames/s, status every second, plot and alarms "
         "every 2 s). On a line the browser runs on a tablet or PC, not on the station: the SCHED_IDLE row stands in for "
         "that (the browser only gets CPU time the station leaves; `nice 19` does not, chromium run as root resets its "
         "processes to nice -8..5); the normal-priority row is a browser on the station itself; the replay row sends the "
         "station exactly the page's requests (MJPEG stream, polls, thumbnails) from a plain HTTP client under "
         "SCHED_IDLE, to separate the station's own cost of a viewer from the browser's rendering on the same 2 cores. Off and on runs alternate (in a new order each round); each row is the median of its runs (all runs listed in the JSON); frames "
         "captured before every browser of the round showed the live view (at least {warmup:g} s) are left out.")

if __name__ == "__main__":
    main()
