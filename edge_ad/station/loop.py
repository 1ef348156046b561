"""The inspection loop: capture -> ROI -> detect -> debounce -> alarm -> record (torch-free).

Everything with state (camera, detector, alarms, evidence, systemd) is a named piece; this module
only wires them, so the loop reads in one breath.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_ad.station.alarms import build_alarms
from edge_ad.station.alarms.base import AlarmEvent
from edge_ad.station.camera import Camera
from edge_ad.data import crop_roi, geometry
from edge_ad.errors import EdgeAdError
from edge_ad.station.evidence import EvidenceStore
from edge_ad.runtime.detector import AnomalyDetector, open_detector
from edge_ad.station.service import Notifier, StopFlag
from edge_ad.station.config import StationConfig
from edge_ad.station.status import StationStatus
from edge_ad.station.web import start_web

log = logging.getLogger(__name__)

FPS_WINDOW = 50  # frames averaged for the STATUS fps
READ_TIMEOUT_S = 1.0  # wake up this often without frames, to ping the watchdog and see signals


@dataclass
class LoopStats:
    frames: int = 0
    anomalous: int = 0
    alarms: int = 0
    errors: int = 0
    dropped: int = 0
    reloads: int = 0
    last_score: float | None = None
    latencies_ms: list[float] = field(default_factory=list)  # capture -> verdict, per frame


def load_detector(cfg: StationConfig) -> tuple[AnomalyDetector, str]:
    """The detector of the part bundle (resolved now, so a later `current` switch needs a reload)."""
    bundle = cfg.bundle_dir()
    if not bundle.exists():
        raise EdgeAdError(f"part bundle not found: {bundle} (calibrate the part or set `bundle:` in the station config)")
    resolved = bundle.resolve()
    det = open_detector(resolved, cfg.runtime, threshold=cfg.threshold)
    version = resolved.name
    log.info("model %s (%s) threshold %.4f", resolved, version, det.threshold)
    return det, version


class FrameLog:
    """One JSON line per frame; flushed per line so a crash loses at most the current frame."""

    def __init__(self, path: str):
        self.f = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "a", buffering=1)

    def write(self, rec: dict) -> None:
        if self.f:
            self.f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        if self.f:
            self.f.close()


def run_station(cfg: StationConfig, stop: StopFlag | None = None, max_frames: int | None = None) -> LoopStats:
    """Run until the source ends, `stop` is set (SIGTERM/SIGINT) or max_frames; SIGHUP reloads the bundle."""
    det, version = load_detector(cfg)
    stop = stop if stop is not None else StopFlag()  # StopFlag is falsy until set
    notifier = Notifier(status_interval_s=cfg.service.status_interval_s)
    cam = Camera(cfg.camera.source, cfg.camera)
    alarms = build_alarms(cfg)
    store = EvidenceStore(cfg.evidence)
    frame_log = FrameLog(cfg.frame_log)
    stats, recent = LoopStats(), deque(maxlen=FPS_WINDOW)
    status = StationStatus(station=cfg.station, part=cfg.part)
    cam.start()
    notifier.ready(f"inspecting {cfg.part or version}")
    web = start_web(cfg, status, stop)  # off unless web.enabled; never stops the loop
    try:
        while not stop and (max_frames is None or stats.frames < max_frames):
            if stop.reload_requested():
                notifier.reloading()
                det, version = load_detector(cfg)
                alarms.reset()
                stats.reloads += 1
                notifier.ready(f"reloaded {version}")
            frame = cam.read(timeout=READ_TIMEOUT_S)
            if frame is None:
                if cam.finished:
                    break
                notifier.tick()
                continue
            result = inspect_frame(frame, cfg, det, version, alarms, store, frame_log, stats)
            if cfg.preview and result is not None:
                cfg.preview = show_preview(frame.image, result)
            recent.append(time.monotonic())
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else None
            notifier.tick(fps=fps, last_score=stats.last_score)
    finally:
        web.close()
        notifier.stopping()
        cam.stop()
        stats.dropped = cam.stats.dropped
        alarms.close()  # flushes the MQTT queue, drives GPIO inactive
        frame_log.close()
        notifier.close()
    log.info("stopped after %d frames (%d alarms, %d dropped)", stats.frames, stats.alarms, stats.dropped)
    return stats


def inspect_frame(frame, cfg: StationConfig, det: AnomalyDetector, version: str, alarms, store: EvidenceStore,
                  frame_log: FrameLog, stats: LoopStats):
    """One frame through detect -> decide -> alarm -> record; a bad frame is logged, never fatal."""
    try:
        image = crop_roi(frame.image, cfg.roi)
        r = det.detect(image)
    except EdgeAdError as e:
        stats.errors += 1
        log.warning("frame %d skipped: %s", frame.index, e)
        return None
    decision = alarms.update(r.is_anomaly)
    latency = (time.time() - frame.time) * 1e3
    stats.frames += 1
    stats.anomalous += int(r.is_anomaly)
    stats.latencies_ms.append(latency)
    stats.last_score = r.score
    rec = {"time": frame.time, "frame": frame.index, "source": frame.name, "score": round(r.score, 6),
           "anomaly": r.is_anomaly, "alarm": decision.active, "latency_ms": round(latency, 2),
           **{k: round(v, 3) for k, v in r.timings.items()}}
    if decision.rising:
        ev = store.save(image, r.anomaly_map, r.threshold, r.score, meta={"frame": frame.index, "model": version},
                        geometry=geometry(image.shape[:2], det.info.data), when=frame.time)
        alarms.fire(AlarmEvent(cfg.station, cfg.part, version, r.score, r.threshold, ev.boxes,
                               str(ev.path or ""), frame.time, frame.index))
        stats.alarms += 1
        rec["event"] = str(ev.path or "")
        rec["alarm_latency_ms"] = round((time.time() - frame.time) * 1e3, 2)  # capture -> alarm handed to sinks
    frame_log.write(rec)
    return r


def show_preview(image: np.ndarray, r) -> bool:
    """Heatmap window for bench set-up; returns False (stop previewing) where OpenCV has no GUI."""
    import cv2

    from edge_ad.visualize import heatmap_overlay

    try:
        cv2.imshow("edge_ad", heatmap_overlay(image, r.anomaly_map, 0.0, max(2 * r.threshold, r.score), r.threshold))
        cv2.waitKey(1)
        return True
    except cv2.error:
        log.warning("preview disabled: this OpenCV build has no GUI (opencv-python-headless) or no display")
        return False

