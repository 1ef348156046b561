"""Light stations for benchmarks/fleet.py: processes that speak the fleet's protocol without a camera or a model.

`stations`: K simulated stations in one process, each with the real fleet agent (TUF client, S3 fetch, stage,
switch `current`, retained fleet status over MQTT) and a stand-in for the inspection loop that "inspects" at a
given fps by drawing scores recorded from the real model on the line video against the running bundle's threshold
(so a bundle whose threshold is too low raises the alarm rate as it would on a real station).
`load`: M MQTT clients that publish a retained fleet status every report_s and events at a rate (broker load only).
Started by benchmarks/fleet.py (its --smoke runs it too); stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_ad import bundle as B  # noqa: E402
from edge_ad.errors import EdgeAdError  # noqa: E402
from edge_ad.fleet.agent import Agent  # noqa: E402
from edge_ad.station.config import station_config_from_dict  # noqa: E402
from edge_ad.station.status import StationStatus  # noqa: E402

PIXEL = np.zeros((1, 1, 3), np.uint8)  # the stand-in loop's "frame": the status keeps a reference, nothing more
MAP = np.zeros((1, 1), np.float32)


class SimStation:
    """One simulated station: the real agent beside a stand-in loop that reloads on request as SIGHUP does."""

    def __init__(self, raw: dict, scores: list[float], fps: float, stop: threading.Event, seed: int) -> None:
        self.cfg = station_config_from_dict(raw)
        self.status = StationStatus(station=self.cfg.station, part=self.cfg.part)
        self.scores, self.fps, self.stop = scores, fps, stop
        self.rng = random.Random(seed)
        self._reload = threading.Event()
        self.threshold: float | None = None
        self.agent = Agent(self.cfg, self.status, self._reload.set)
        self.loop = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._load()
        self.loop.start()
        self.agent.start()

    def _load(self) -> None:
        """What ModelSlot.load checks, without opening a model: the bundle is intact and says its threshold."""
        path = self.cfg.bundle_dir()
        try:
            resolved = path.resolve(strict=True)
            why = B.damage(resolved)
            if why:
                raise EdgeAdError(why)
            self.threshold = float(json.loads((resolved / "model.json").read_text())["threshold"])
            self.status.update(version=resolved.name, bundle=str(resolved), state="running", fault="")
        except (OSError, ValueError, KeyError, EdgeAdError) as e:
            if self.threshold is None:
                self.status.update(state="fault", fault=f"bundle: {e}")

    def _loop(self) -> None:
        period = 1.0 / self.fps
        while not self.stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self._load()
                self.status.count("reloads")
            if self.threshold is not None:
                s = self.rng.choice(self.scores)
                self.status.record_frame(PIXEL, MAP, s, self.threshold, s >= self.threshold, 1.0, time.time())
            self.stop.wait(period)


def run_stations(args) -> None:
    spec = json.loads(Path(args.spec).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sims = [SimStation(raw, spec["scores"], spec["fps"], stop, i) for i, raw in enumerate(spec["stations"])]
    for s in sims:
        s.start()
    print(f"{len(sims)} simulated stations started", flush=True)
    stop.wait()
    for s in sims:
        s.agent.close()


def run_load(args) -> None:
    """Broker load: M clients, each a retained status every report_s and events at events_per_s."""
    import paho.mqtt.client as mqtt

    spec = json.loads(Path(args.spec).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    clients = []
    for name in spec["stations"]:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-{name}")
        c.connect(spec["host"], spec["port"], keepalive=60)
        c.loop_start()
        clients.append((name, c))
    print(f"{len(clients)} load clients connected", flush=True)
    seq = 0
    status_every = max(1, round(spec["report_s"] * spec["events_per_s"])) if spec["events_per_s"] else 1
    tick = 1.0 / spec["events_per_s"] if spec["events_per_s"] else spec["report_s"]
    while not stop.is_set():
        t0 = time.monotonic()
        for name, c in clients:
            if spec["events_per_s"]:
                c.publish(f"edge_ad/{name}/demo/event", json.dumps({"station": name, "seq": seq, "pad": "x" * 300}),
                          qos=1)
            if seq % status_every == 0:
                c.publish(f"edge_ad/{name}/fleet", json.dumps({"station": name, "state": "running", "seq": seq,
                                                               "version": "v1", "pad": "x" * 500}), qos=1, retain=True)
        seq += 1
        stop.wait(max(0.0, tick - (time.monotonic() - t0)))
    for _, c in clients:
        c.disconnect()
        c.loop_stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["stations", "load"])
    ap.add_argument("--spec", required=True, help="JSON written by benchmarks/fleet.py")
    args = ap.parse_args()
    (run_stations if args.mode == "stations" else run_load)(args)


if __name__ == "__main__":
    main()
