"""Triggered mode as a line runs it: a light barrier (the fake GPIO input) fires a trigger per part at a set part
rate, the station takes the first frame from a real HTTP MJPEG camera at or after it, scores it, and answers each part
once over MQTT (a real mosquitto) and OPC UA (a real asyncua client subscribed to the result nodes); NOK and error
parts are rejected by a GPIO pulse (the fake output records it) reject.delay_s after their trigger.

Rows (one station process runs them all, one after another):
  main     --parts triggers at --rate parts/s: results delivered over MQTT and OPC UA, each matched to its part id,
           reject pulses in part order with their time error, trigger-to-result latency p50 / p99
  sweep    --sweep-parts triggers at each rate of --sweep: the highest part rate the station sustains (every part
           judged ok/nok, every result on MQTT and OPC UA, no reject later than its part)
  faults   --fault-parts triggers at --rate with the camera stream dropped and the broker restarted meanwhile: every
           trigger still gets one result, the parts without a frame `error` with the reason, not missing ones

Usage: python benchmarks/trigger.py [--bundle DIR] [--parts 1000] [--rate 10] [--sweep 10,20,30,40,50]
                                    [--sweep-parts 200] [--fault-parts 300] [--fps 30]
Smoke run (seconds: the demo part's tiny model, a few triggers per row, results in a temp folder):
  python benchmarks/trigger.py --smoke [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
import common  # noqa: E402
from common import DATA_ROOT, write_results  # noqa: E402
from helpers import Subscriber, wait_until  # noqa: E402
from mosquitto_fixture import Broker  # noqa: E402

from edge_ad.station.config import station_config_from_dict  # noqa: E402
from edge_ad.station.loop import run_station  # noqa: E402
from edge_ad.station.opcua import node_id  # noqa: E402
from edge_ad.station.service import StopFlag  # noqa: E402
from edge_ad.station.status import StationStatus  # noqa: E402

DEFAULT_BUNDLE = "runs/bench_calibrate/bottle/parts/bottle/current"  # benchmarks/calibrate.py's bottle bundle
IMAGES = DATA_ROOT / "bottle" / "test"
IMAGE_KINDS = ("good", "broken_large", "contamination")
SMOKE_KINDS = ("good", "scratch", "hole")
REJECT_DELAY_S = 1.0  # barrier -> rejector: 0.5 m of conveyor at 0.5 m/s
PULSE_S = 0.02
FRAME_TIMEOUT_S = 0.25  # < REJECT_DELAY_S: a part without a frame is answered before it reaches the rejector
BARRIER_PIN, REJECT_PIN = 5, 6
SETTLE_TIMEOUT_S = 120.0  # after the last trigger of a row: results, MQTT and OPC UA must all be in by then
CAMERA_DROP_S, BROKER_DOWN_S = 2.0, 2.0
ROWS = ("main", "sweep", "faults")
COLUMNS = [("row", "row"), ("rate", "parts/s"), ("parts", "triggers"), ("results", "results"),
           ("ok", "ok"), ("nok", "nok"), ("error", "error"), ("mqtt_delivered", "MQTT results"),
           ("mqtt_matched", "MQTT matched to part id"), ("mqtt_duplicates", "MQTT duplicates"),
           ("opcua_delivered", "OPC UA results"),
           ("opcua_matched", "OPC UA matched"), ("rejects", "NOK + error"), ("pulses", "reject pulses on the output"),
           ("rejects_in_order", "in part order"), ("pulse_err_ms_p50", "pulse err p50 ms"),
           ("pulse_err_ms_p99", "pulse err p99 ms"), ("late_rejects", "late"), ("ms_p50", "trigger->result p50 ms"),
           ("ms_p99", "trigger->result p99 ms"), ("sustained", "sustained"), ("load_1min", "load avg")]


class MjpegCamera:
    """An IP camera stand-in: JPEGs of real part images at `fps` over HTTP multipart; stop()/start() drop and restore
    it on the same port."""

    def __init__(self, images: list[np.ndarray], fps: float) -> None:
        self.jpegs = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for im in images]
        self.fps, self.port, self._server = fps, 0, None
        self._alive = threading.Event()

    def start(self) -> MjpegCamera:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start, n = time.monotonic(), 0
                rng = np.random.default_rng(owner.port)  # the part in view: random, never in step with the triggers
                try:
                    while owner._alive.is_set():
                        jpg = owner.jpegs[int(rng.integers(len(owner.jpegs)))]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                        n += 1
                        time.sleep(max(0.0, start + n / owner.fps - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._alive.set()
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._alive.clear()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cam.mjpg"


class OpcuaWatcher:
    """A PLC's OPC UA client in its own thread: subscribed to LastResult.PartId and ResultId, every change kept."""

    def __init__(self, url: str, ns: int) -> None:
        self.url, self.ns = url, ns
        self.part_ids: list[str] = []
        self.result_ids: list[str] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> OpcuaWatcher:
        self._thread.start()
        assert self.ready.wait(30), "OPC UA client did not subscribe"
        return self

    async def _main(self) -> None:
        from asyncua import Client

        watcher = self

        class Handler:
            def datachange_notification(self, node, val, _data):
                if val:
                    (watcher.part_ids if node.nodeid.Identifier.endswith("PartId") else watcher.result_ids).append(val)

        async with Client(self.url, timeout=10) as client:
            sub = await client.create_subscription(20, Handler())
            nodes = [client.get_node(f"ns={self.ns};s={node_id('ResultManagement.LastResult.' + n)}")
                     for n in ("PartId", "ResultId")]
            await sub.subscribe_data_change(nodes, queuesize=10000)
            self.ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def load_images(kinds: tuple[str, ...], root: Path) -> list[np.ndarray]:
    """Good and defective images of the part, interleaved, so parts come out ok and nok."""
    groups = [[cv2.imread(str(p)) for p in sorted((root / k).glob("*.png"))[:8]] for k in kinds if (root / k).is_dir()]
    images = [im for row in zip(*groups) for im in row if im is not None]
    if not images:
        sys.exit(f"no test images under {root} ({', '.join(kinds)})")
    return images


def pct(values, q) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


class Bench:
    """One running station with its camera, broker, PLC client, MQTT subscriber, barrier and rejector output."""

    def __init__(self, bundle: Path, work: Path, images: list[np.ndarray], fps: float) -> None:
        self.work = work
        self.camera = MjpegCamera(images, fps).start()
        self.broker = Broker(work / "broker", persistence=True).start()
        cfg = {"station": "bench", "part": "part", "bundle": str(bundle), "frame_log": str(work / "frames.jsonl"),
               "camera": {"source": self.camera.url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                          "open_timeout_s": 2.0, "read_timeout_s": 1.0},
               "evidence": {"dir": str(work / "evidence"), "max_mb": 500.0},
               "gpio": {"backend": "fake"},
               "trigger": {"enabled": True, "gpio_pin": BARRIER_PIN, "frame_timeout_s": FRAME_TIMEOUT_S,
                           "part_id_prefix": "P", "history": 128, "queue_max": 1024},
               "reject": {"enabled": True, "pin": REJECT_PIN, "delay_s": REJECT_DELAY_S, "pulse_s": PULSE_S},
               "mqtt": {"enabled": True, "host": self.broker.host, "port": self.broker.port,
                        "queue_dir": str(work / "queue"), "queue_fsync": False, "reconnect_min_s": 0.1,
                        "reconnect_max_s": 0.5},
               "opcua": {"enabled": True, "port": 0}}
        self.cfg = station_config_from_dict(cfg)
        self.stop = StopFlag()
        self.status = StationStatus(station="bench", part="part")
        box: dict = {}
        self.thread = threading.Thread(target=lambda: run_station(self.cfg, self.stop, status=self.status,
                                                                  opened=lambda s: box.update(st=s)), daemon=True)
        self.thread.start()
        assert wait_until(lambda: "st" in box, timeout=120), "station did not start"
        self.st = box["st"]
        self.barrier = self.st.line.trigger_input
        self.output = self.st.line.rejector.backend
        assert wait_until(lambda: self.status.state == "running" and self.status.camera == "ok"
                          and self.status.broker == "connected", timeout=60), self.status.snapshot()
        self.sub = Subscriber(self.broker, "edge_ad/bench/part/result", client_id="bench-plc", clean=False)
        opc = next(s for s in self.st.alarms.sinks if s.name == "opcua")
        self.plc = OpcuaWatcher(opc.url, opc.ns).start()

    def results(self) -> int:
        s = self.status
        return s.parts_ok + s.parts_nok + s.parts_error

    def row(self, name: str, n: int, rate: float, faults: bool = False) -> dict:
        """n triggers from the light barrier at `rate` parts/s (with faults: camera drop, broker restart meanwhile)."""
        first = self.results()
        mqtt0, opc0 = len(self.sub.payloads()), len(self.plc.part_ids)
        edges0, out0 = len(self.barrier.edges), len(self.output.transitions)
        fault_log: list[str] = []
        if faults:
            threading.Thread(target=self._faults, args=(n / rate, fault_log), daemon=True).start()
        start = time.monotonic()
        for i in range(n):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            t = self.barrier.edge(True)
            self.barrier.edge(False, t + 0.001)
        ok = wait_until(lambda: self.results() >= first + n, timeout=SETTLE_TIMEOUT_S)
        ok &= wait_until(lambda: self.st.line.rejector.in_flight() == 0, timeout=SETTLE_TIMEOUT_S)
        ok &= wait_until(lambda: len(self.sub.payloads()) >= mqtt0 + n and len(self.plc.part_ids) >= opc0 + n,
                         timeout=SETTLE_TIMEOUT_S)
        time.sleep(PULSE_S * 3)  # the last pulse ends (it was fired when in_flight went to 0)
        rows = [r for r in map(json.loads, (self.work / "frames.jsonl").read_text().splitlines())
                if r.get("kind") == "part"][first:]
        expected_ids = [r["part_id"] for r in rows]
        mqtt = self.sub.payloads()[mqtt0:]
        mqtt_ids = [m["part_id"] for m in mqtt]
        once = sorted({m["seq"]: m for m in mqtt}.values(), key=lambda m: m["seq"])  # QoS 1 is at-least-once
        opc_ids = self.plc.part_ids[opc0:]
        edges = [t for t, level in self.barrier.edges[edges0:] if level == 1]
        rises = [t for (t, level) in self.output.transitions[out0:] if level == int(self.cfg.reject.active_high)]
        rejected = [r for r in rows if r["verdict"] in ("nok", "error")]
        seq0 = rows[0]["seq"] if rows else 0
        pulses = [p for p in self.st.line.rejector.pulses if p.seq >= seq0]  # the rejector's record of what it fired
        late = sum(p.late for p in pulses)
        # pulse error: when the rejector drove the line for the part - (its barrier edge + the conveyor delay); every
        # such time must show on the fake output's own record as a rising edge, or as the line already high (a
        # pulse that came during the previous part's: merged into one longer pulse)
        due = [edges[p.seq - seq0] + REJECT_DELAY_S for p in pulses]
        err_ms = [(p.fired - d) * 1e3 for p, d in zip(pulses, due)]
        trans = self.output.transitions[out0:]
        active = int(self.cfg.reject.active_high)
        seen = sum(any(lv == active for t, lv in trans if t <= p.fired + 1e-3)
                   and [lv for t, lv in trans if t <= p.fired + 1e-3][-1] == active for p in pulses)
        lat = [r["latency_ms"] for r in rows]
        verdicts = [r["verdict"] for r in rows]
        row = {"row": name, "rate": rate, "parts": n, "results": len(rows), "ok": verdicts.count("ok"),
               "nok": verdicts.count("nok"), "error": verdicts.count("error"),
               "mqtt_delivered": len(set(mqtt_ids) & set(expected_ids)), "mqtt_duplicates": len(mqtt_ids) - len(set(mqtt_ids)),
               "mqtt_matched": sum(m["part_id"] == r["part_id"] and m["verdict"] == r["verdict"]
                                   for m, r in zip(once, rows)),
               "opcua_delivered": len(opc_ids), "opcua_matched": sum(a == b for a, b in zip(opc_ids, expected_ids)),
               "rejects": len(rejected), "pulses": seen, "output_rises": len(rises),
               "rejects_in_order": seen == len(pulses) and [p.seq for p in pulses] == sorted(p.seq for p in pulses)
               and {r["seq"] for r in rejected} <= {p.seq for p in pulses},
               "pulse_err_ms_p50": pct(err_ms, 50), "pulse_err_ms_p99": pct(err_ms, 99),
               "pulse_err_ms_max": max(err_ms) if err_ms else None, "late_rejects": late,
               "ms_p50": pct(lat, 50), "ms_p99": pct(lat, 99), "ms_max": max(lat) if lat else None,
               "settled": bool(ok), "faults": "; ".join(fault_log), "load_1min": round(os.getloadavg()[0], 2),
               "error_reasons": sorted({r["reason"] for r in rows if r["verdict"] == "error"})}
        row["sustained"] = bool(ok and row["results"] == n and row["error"] == 0 and late == 0
                                and row["mqtt_matched"] == n and row["opcua_matched"] == n and row["rejects_in_order"])
        print(json.dumps(row), flush=True)
        return row

    def _faults(self, duration: float, out: list[str]) -> None:
        """A third in: the camera stream drops for CAMERA_DROP_S; two thirds in: the broker restarts."""
        time.sleep(duration / 3)
        self.camera.stop()
        out.append(f"camera stream down {CAMERA_DROP_S:g} s")
        time.sleep(CAMERA_DROP_S)
        self.camera.start()
        time.sleep(max(0.0, duration / 3 - CAMERA_DROP_S))
        self.broker.stop()
        out.append(f"broker stopped {BROKER_DOWN_S:g} s and restarted")
        time.sleep(BROKER_DOWN_S)
        self.broker.start()

    def close(self) -> None:
        self.plc.close()
        self.stop.set()
        self.thread.join(60)
        self.sub.close()
        self.broker.stop()
        self.camera.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE, help="part bundle to run (benchmarks/calibrate.py makes it)")
    ap.add_argument("--parts", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=3.0, help="parts per second of the main and fault rows")
    ap.add_argument("--sweep", default="3,4,5,6,8", help="part rates tried for the highest sustained one")
    ap.add_argument("--sweep-parts", type=int, default=100)
    ap.add_argument("--fault-parts", type=int, default=200)
    ap.add_argument("--fps", type=float, default=30.0, help="the camera's frame rate")
    ap.add_argument("--work", help="keep the run's frame log, evidence and broker files here (default: a temp folder)")
    ap.add_argument("--rows", default=",".join(ROWS), help="rows to run; the others are kept from the last results")
    common.add_smoke_args(ap)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("asyncua", "edge_ad.station.line", "edge_ad.station.camera", "edge_ad.station.alarms.mqtt"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    root_images, kinds = IMAGES, IMAGE_KINDS
    if args.smoke:
        root = common.smoke_folder(args.out)
        pt = common.smoke_model(root)
        from edge_ad.deploy.export import export_onnx

        onnx = pt.with_suffix(".onnx")
        if not onnx.is_file():
            export_onnx(pt, onnx)
        args.bundle = str(onnx.parent)
        root_images, kinds = root / "data" / common.SMOKE_DATASET / "test", SMOKE_KINDS
        global CAMERA_DROP_S, BROKER_DOWN_S
        args.parts, args.rate, args.sweep, args.sweep_parts, args.fault_parts = 10, 10.0, "20", 10, 30
        CAMERA_DROP_S, BROKER_DOWN_S = 0.5, 0.5
    bundle = Path(args.bundle)
    if not (bundle / "model.json").is_file():
        sys.exit(f"{bundle}: no part bundle there: run benchmarks/calibrate.py first (bottle) or pass --bundle")
    rates = [float(r) for r in args.sweep.split(",") if r.strip()]
    with tempfile.TemporaryDirectory(prefix="edge_ad_triggerbench.") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(bundle, work, load_images(kinds, root_images), args.fps)
        wanted = [r for r in ROWS if r in args.rows.split(",")]
        rows = []
        try:
            if "main" in wanted:
                rows.append(bench.row("main", args.parts, args.rate))
            for rate in rates if "sweep" in wanted else []:
                rows.append(bench.row("sweep", args.sweep_parts, rate))
                if not rows[-1]["sustained"]:
                    break
            if "faults" in wanted:
                rows.append(bench.row("faults", args.fault_parts, args.rate, faults=True))
        finally:
            bench.close()
    kept = [r for r in common.load_rows("trigger") if r["row"] not in wanted]  # rows of the rows not run this time
    rows = sorted(kept + rows, key=lambda r: (ROWS.index(r["row"]), r["rate"]))
    sustained = [r["rate"] for r in rows if r["row"] == "sweep" and r["sustained"]]
    rates = sorted({r["rate"] for r in rows if r["row"] == "sweep"})
    for r in rows:
        r["variant"] = r["row"]
    notes = NOTES.format(bundle=bundle.resolve(), fps=args.fps, delay=REJECT_DELAY_S, pulse=PULSE_S,
                         timeout=FRAME_TIMEOUT_S, best=f"{max(sustained):g} parts/s" if sustained else "none of those tried",
                         tried=", ".join(f"{r:g}" for r in rates), drop=CAMERA_DROP_S, down=BROKER_DOWN_S)
    write_results("trigger", rows, COLUMNS, notes)


NOTES = ("Bundle: `{bundle}` (onnxruntime on this CPU). Camera: an HTTP MJPEG stream at {fps:g} fps (FFmpeg, the "
         "station's grabber). Triggers: the fake GPIO light barrier, one rising edge per part on a fixed schedule; "
         "frame: the first captured at or after the trigger (trigger.delay_s 0), `error` when none comes within "
         "{timeout:g} s. Results: one MQTT message per part on <prefix>/bench/part/result (QoS 1, the disk queue; a "
         "persistent subscriber) and OPC UA LastResult.PartId / ResultId (a subscribed asyncua client), each matched to "
         "the frame log's part id in order. Rejects: NOK and error parts (reject.on_error) pulse the fake output "
         "{pulse:g} s, reject.delay_s {delay:g} s after their trigger; pulse error = when the rejector drove the line "
         "(each such time found high on the fake output's own record) - (barrier edge + delay). Latency: trigger to "
         "result handed to the outputs (evidence for NOK included). Highest sustained part rate (every part judged, "
         "every result on MQTT and OPC UA, no late reject) among {tried} parts/s: {best}. Faults row: the camera "
         "stream stopped for {drop:g} s a third into the row, the broker stopped for {down:g} s and restarted two "
         "thirds in. `load avg`: the machine's 1-minute load average at the end of the row (other jobs shared the 2 "
         "cores; at a load of 11 an earlier run at 4 parts/s had 175 of 1000 parts at the rejector before their "
         "result).")


if __name__ == "__main__":
    main()
