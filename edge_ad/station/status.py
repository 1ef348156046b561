"""What the station is doing right now, in one thread-safe object: the loop writes it, and everyone who
shows the station (systemd STATUS, MQTT status, the web view, /healthz, /metrics) reads it.

Everything in it is bounded: latencies and scores live in fixed-size windows, alarms in a short list, and
the live view holds references to the newest frame and map only (no copies, no encoding in the loop).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LATENCY_WINDOW = 2048  # frames whose capture->verdict latency gives p50/p99
SCORE_HISTORY = 3600  # (time, score) points for the score plot: an hour at 1 fps, a minute at 60 fps
RECENT_ALARMS = 50
FPS_WINDOW = 50  # frames averaged for fps
# upper bounds (ms) of the cumulative latency histogram that /metrics exports (Prometheus `le` buckets)
LATENCY_BUCKETS_MS = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)

STATES = ("starting", "running", "fault", "stopped")
VERDICTS = ("ok", "nok", "error")  # a triggered part's result: exactly one of these per trigger
RECENT_RESULTS = 50  # triggered parts listed in the web view


@dataclass
class AlarmRecord:
    """One fired alarm as people see it: when, how bad, where its evidence is."""

    time: float
    frame: int
    score: float
    threshold: float
    evidence: str  # evidence folder, "" when nothing was saved
    boxes: int


@dataclass
class LiveView:
    """The newest inspected frame (references only; the reader encodes it)."""

    seq: int = 0  # increases with every frame, so a reader can tell a new frame from the last one
    image: np.ndarray | None = None  # BGR frame as inspected (after the roi)
    anomaly_map: np.ndarray | None = None
    score: float = 0.0
    threshold: float = 0.0
    anomaly: bool = False
    time: float = 0.0


@dataclass
class StationStatus:
    """Counters and state of one running station. Mutate only through the methods (they take the lock)."""

    station: str = ""
    part: str = ""
    state: str = "starting"
    fault: str = ""  # why the station cannot inspect, while state == "fault"
    bundle: str = ""  # resolved bundle folder
    version: str = ""  # bundle version name, e.g. v3
    method: str = ""
    backend: str = ""
    threshold: float = 0.0
    ready: bool | None = None  # the bundle's readiness verdict (None: the bundle has none)
    started: float = field(default_factory=time.time)
    frames: int = 0
    anomalous: int = 0
    alarms: int = 0
    errors: int = 0
    dropped: int = 0
    reloads: int = 0
    reconnects: int = 0
    writes_dropped: int = 0  # frame-log lines, evidence events and queued alarms that could not be written to disk
    camera: str = "starting"  # starting | ok | lost | ended
    broker: str = "off"  # off | connected | disconnected
    queue_depth: int = 0
    last_score: float | None = None
    last_frame_time: float = 0.0  # time.time() of the newest inspected frame
    mode: str = "continuous"  # continuous | triggered
    triggers: int = 0  # triggers received (triggered mode)
    parts_ok: int = 0
    parts_nok: int = 0
    parts_error: int = 0
    last_result: dict | None = None  # the newest part's result (triggered mode)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW), repr=False)
    _frame_times: deque = field(default_factory=lambda: deque(maxlen=FPS_WINDOW), repr=False)
    _scores: deque = field(default_factory=lambda: deque(maxlen=SCORE_HISTORY), repr=False)
    _alarms: deque = field(default_factory=lambda: deque(maxlen=RECENT_ALARMS), repr=False)
    _latency_counts: list = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1), repr=False)
    _latency_sum_ms: float = field(default=0.0, repr=False)
    _results: deque = field(default_factory=lambda: deque(maxlen=RECENT_RESULTS), repr=False)
    _part_latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW), repr=False)
    _part_counts: list = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1), repr=False)
    _part_sum_ms: float = field(default=0.0, repr=False)
    live: LiveView = field(default_factory=LiveView, repr=False)

    # --- writers (the loop) ------------------------------------------------------------------
    def update(self, **fields: Any) -> None:
        """Set plain fields (state, fault, bundle, version, camera, broker, ...)."""
        with self._lock:
            for key, value in fields.items():
                if key.startswith("_") or not hasattr(self, key):
                    raise AttributeError(f"StationStatus has no field {key!r}")
                setattr(self, key, value)

    def record_frame(self, image: np.ndarray, anomaly_map: np.ndarray, score: float, threshold: float,
                     anomaly: bool, latency_ms: float, when: float) -> None:
        """One inspected frame: counters, bounded windows and the live-view references."""
        now = time.monotonic()
        with self._lock:
            self.frames += 1
            self.anomalous += int(anomaly)
            self.last_score = float(score)
            self.last_frame_time = when
            self.threshold = float(threshold)
            self._latencies.append(float(latency_ms))
            self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
            self._latency_sum_ms += float(latency_ms)
            self._frame_times.append(now)
            self._scores.append((when, float(score)))
            self.live = LiveView(self.live.seq + 1, image, anomaly_map, float(score), float(threshold), bool(anomaly), when)

    def record_result(self, result: dict) -> None:
        """One triggered part's result (verdict ok | nok | error, latency_ms trigger -> result): counters, the recent
        list and the trigger-to-result latency windows."""
        latency = float(result.get("latency_ms") or 0.0)
        with self._lock:
            key = f"parts_{result['verdict']}"
            setattr(self, key, getattr(self, key) + 1)
            self.last_result = dict(result)
            self._results.append(self.last_result)
            self._part_latencies.append(latency)
            self._part_counts[bisect.bisect_left(LATENCY_BUCKETS_MS, latency)] += 1
            self._part_sum_ms += latency

    def recent_results(self) -> list[dict]:
        """Triggered parts, newest first."""
        with self._lock:
            return list(reversed(self._results))

    def part_latency_ms(self, q: float) -> float | None:
        """Quantile q (0..100) of the recent trigger->result latencies."""
        with self._lock:
            lat = list(self._part_latencies)
        return float(np.percentile(lat, q)) if lat else None

    def part_latency_histogram(self) -> tuple[list[tuple[float, int]], float]:
        """Every part's trigger->result latency since start as cumulative (upper bound ms, count) buckets, and the sum."""
        with self._lock:
            counts, total = list(self._part_counts), self._part_sum_ms
        cumulative = [sum(counts[:i + 1]) for i in range(len(counts))]
        return list(zip((*LATENCY_BUCKETS_MS, float("inf")), cumulative)), total

    def record_alarm(self, alarm: AlarmRecord) -> None:
        with self._lock:
            self.alarms += 1
            self._alarms.append(alarm)

    def count(self, name: str, n: int = 1) -> None:
        """Add to a counter (errors, reloads, reconnects, dropped)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    # --- readers -----------------------------------------------------------------------------
    def fps(self) -> float | None:
        with self._lock:
            t = self._frame_times
            return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else None

    def latency_ms(self, q: float) -> float | None:
        """Quantile q (0..100) of the recent capture->verdict latencies."""
        with self._lock:
            lat = list(self._latencies)
        return float(np.percentile(lat, q)) if lat else None

    def latency_histogram(self) -> tuple[list[tuple[float, int]], float]:
        """Every frame's latency since start as cumulative (upper bound ms, count) buckets, +inf last, and the sum."""
        with self._lock:
            counts, total = list(self._latency_counts), self._latency_sum_ms
        cumulative = [sum(counts[:i + 1]) for i in range(len(counts))]
        return list(zip((*LATENCY_BUCKETS_MS, float("inf")), cumulative)), total

    def latencies(self) -> list[float]:
        """The recent capture->verdict latencies (ms), oldest first: at most LATENCY_WINDOW of them."""
        with self._lock:
            return list(self._latencies)

    def scores(self, since: float = 0.0) -> list[tuple[float, float]]:
        with self._lock:  # a C-level copy under the lock: the loop's record_frame never waits on a viewer's filter
            points = list(self._scores)
        return [(t, s) for t, s in points if t >= since]

    def recent_alarms(self) -> list[AlarmRecord]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._alarms))

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-ready copy of the state and counters (no frames)."""
        with self._lock:
            doc = {k: getattr(self, k) for k in self.__dataclass_fields__ if not k.startswith("_") and k != "live"}
        doc.update(fps=self.fps(), latency_ms_p50=self.latency_ms(50), latency_ms_p99=self.latency_ms(99),
                   part_latency_ms_p50=self.part_latency_ms(50), part_latency_ms_p99=self.part_latency_ms(99))
        return doc

    def healthy(self, max_age_s: float) -> bool:
        """Frames are flowing and a detector is loaded: the newest frame is younger than max_age_s."""
        with self._lock:
            if self.mode == "triggered":  # frames are inspected per trigger: healthy while the camera delivers
                return self.state == "running" and self.camera == "ok"
            return self.state == "running" and self.last_frame_time > 0 and time.time() - self.last_frame_time <= max_age_s
