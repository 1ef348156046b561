"""The inspection loop: capture -> ROI -> detect -> debounce -> alarm -> record (torch-free).

Everything with state (camera, model, faults, alarms, evidence, frame log, systemd) is a named piece; this module
only wires them, so the loop reads in one breath. Nothing in it can end the station but a stop request or the
end of a file source: a bundle that does not load, a lost camera or a failing detector is a fault that is
reported everywhere and retried (edge_ad.station.faults), a full disk drops writes and counts them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edge_ad.data import geometry
from edge_ad.station.alarms import Debouncer, build_alarms
from edge_ad.station.alarms.base import AlarmEvent
from edge_ad.station.camera import Camera, Frame
from edge_ad.station.config import StationConfig
from edge_ad.station.evidence import EvidenceStore
from edge_ad.station.faults import Faults
from edge_ad.station.framelog import FrameLog
from edge_ad.station.line import answer_left, camera_args, inspect_part, open_line
from edge_ad.station.model import ModelSlot
from edge_ad.station.reload import reread
from edge_ad.station.service import Notifier, StopFlag
from edge_ad.station.status import AlarmRecord, StationStatus
from edge_ad.station.opcua import start_opcua
from edge_ad.station.pieces import Station
from edge_ad.station.web import start_web

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.25  # wake up this often without frames: watchdog, signals (a stop is seen within this), retries


@dataclass
class LoopStats:
    """What a run did, taken from StationStatus when it ends (nothing here grows with the frame count)."""

    frames: int = 0
    anomalous: int = 0
    alarms: int = 0
    errors: int = 0
    dropped: int = 0
    reloads: int = 0
    writes_dropped: int = 0
    last_score: float | None = None
    state: str = ""
    fault: str = ""
    latencies_ms: list[float] = field(default_factory=list)  # the newest status.LATENCY_WINDOW frames only

    @classmethod
    def of(cls, status: StationStatus) -> LoopStats:
        s = status.snapshot()
        return cls(**{k: s[k] for k in ("frames", "anomalous", "alarms", "errors", "dropped", "reloads",
                                         "writes_dropped", "last_score", "state", "fault")},
                   latencies_ms=status.latencies())


def open_station(cfg: StationConfig, status: StationStatus | None = None) -> Station:
    """Build every piece; config and hardware errors raise here (EdgeAdError), before anything runs."""
    status = status or StationStatus(station=cfg.station, part=cfg.part)
    notifier = Notifier(status_interval_s=cfg.service.status_interval_s)
    camera = Camera(cfg.camera.source, cfg.camera, **camera_args(cfg))
    alarms = build_alarms(cfg)
    try:
        line = open_line(cfg, alarms) if cfg.trigger.enabled else None
    except BaseException:
        alarms.close()
        raise
    status.update(mode="triggered" if line is not None else "continuous")
    faults = Faults(status, alarms, notifier)
    model = ModelSlot(faults, status, cfg.fault.retry_s, cfg.fault.frame_errors)
    return Station(cfg, status, notifier, camera, alarms, faults, model, EvidenceStore(cfg.evidence),
                   FrameLog(cfg.frame_log, cfg.frame_log_max_mb), line)


def run_station(cfg: StationConfig, stop: StopFlag | None = None, max_frames: int | None = None,
                load_config: Callable[[], StationConfig] | None = None,
                status: StationStatus | None = None, opened: Callable[[Station], None] | None = None) -> LoopStats:
    """Run until the source ends, `stop` is set (SIGTERM/SIGINT) or max_frames (triggered mode: results); SIGHUP
    reloads the bundle (and re-reads the station config through `load_config`). `opened(station)` is called once
    every piece is built (tests reach the fake GPIO lines through it)."""
    stop = stop if stop is not None else StopFlag()  # StopFlag is falsy until set
    st = open_station(cfg, status)
    st.model.load(st.cfg)  # a bundle that does not load is a fault here, not an exit
    try:
        st.camera.start()  # a file source that cannot be opened is a config error: one line, exit 2
        start_opcua(st, stop)  # off unless opcua.enabled; then a sink like MQTT (faults, results)
    except BaseException:
        st.camera.stop()
        if st.line is not None:
            st.line.close()
        st.alarms.close()
        raise
    st.faults.publish()
    st.notifier.ready(f"inspecting {cfg.part or st.status.version}" if st.model.ready else st.faults.summary())
    web = start_web(cfg, st.status, stop, st.line.queue if st.line else None)  # off unless web.enabled
    st.web_url = web.url
    if opened is not None:
        opened(st)
    try:
        while not stop and (max_frames is None or _progress(st) < max_frames):
            if stop.reload_requested():
                reload(st, load_config)
            st.model.retry(st.cfg)
            if st.line is not None:  # triggered mode: one result per trigger, in trigger order
                trig = st.line.queue.next(READ_TIMEOUT_S)
                watch(st)
                if trig is not None:
                    inspect_part(st, trig)
                elif st.camera.finished:
                    break
                continue
            frame = st.camera.read(timeout=READ_TIMEOUT_S) if st.model.ready else _idle(stop)
            watch(st)
            if frame is None:
                if st.camera.finished:
                    break
                continue
            result = inspect_frame(st, frame)
            if st.cfg.preview and result is not None:
                st.cfg.preview = show_preview(frame.image, result)
    finally:
        if st.line is not None:
            answer_left(st, "the station stopped before inspecting it")
            st.line.close()
        web.close()
        st.notifier.stopping()
        st.camera.stop()
        st.status.update(dropped=st.camera.stats.dropped)
        st.alarms.close()  # flushes the MQTT queue, drives GPIO inactive (the fault line active)
        st.frame_log.close()
        st.notifier.close()
        st.status.update(state="stopped")
    stats = LoopStats.of(st.status)
    log.info("stopped after %d frames (%d alarms, %d dropped, %d errors)", stats.frames, stats.alarms, stats.dropped,
             stats.errors)
    return stats


def _progress(st: Station) -> int:
    """What max_frames counts: inspected frames, or in triggered mode results (ok, nok and error)."""
    s = st.status
    return s.frames if st.line is None else s.parts_ok + s.parts_nok + s.parts_error


def _idle(stop: StopFlag) -> None:
    """No model to inspect with: frames are not taken (a live camera keeps only its newest), retry soon."""
    stop.wait(READ_TIMEOUT_S)
    return None


def reload(st: Station, load_config: Callable[[], StationConfig] | None) -> None:
    """SIGHUP: the station config's live keys, then the bundle; a bundle that does not load leaves the running one."""
    st.notifier.reloading()
    st.alarms.reset()  # releases a held alarm output with the old debouncer
    if load_config is not None:
        st.cfg = reread(st.cfg, load_config)
        logging.getLogger().setLevel(st.cfg.log_level)
        d = st.cfg.debounce
        st.alarms.debouncer = Debouncer(d.window, d.min_anomalous, d.hold_s)
        st.model.retry_s, st.model.frame_errors = st.cfg.fault.retry_s, st.cfg.fault.frame_errors
    loaded = st.model.load(st.cfg)
    st.status.count("reloads")
    st.notifier.ready(f"reloaded {st.status.version}" if loaded else st.faults.summary())


def watch(st: Station) -> None:
    """Once per pass: camera loss past its limit is a fault; the status gets camera, broker and disk counters;
    systemd gets its watchdog ping and STATUS line."""
    cam, limit = st.camera, st.cfg.fault.camera_lost_s
    if cam.live and cam.seconds_without_frames() > limit:
        st.faults.set("camera", f"camera {cam.uri}: no frame for more than {limit:g} s "
                                f"({cam.last_error or 'nothing received'})")
    elif cam.state == "ok":
        st.faults.clear("camera")
    st.faults.remind()
    sinks = st.alarms.health()
    writes_dropped = st.frame_log.dropped + st.store.write_errors + sinks.pop("queue_write_errors", 0)
    st.status.update(camera=cam.state, reconnects=cam.stats.reconnects, dropped=cam.stats.dropped,
                     writes_dropped=writes_dropped, **sinks)
    st.notifier.tick(fps=st.status.fps(), last_score=st.status.last_score, extra=st.faults.summary())


def inspect_frame(st: Station, frame: Frame):
    """One frame through detect -> decide -> alarm -> record; a frame that fails is counted, never fatal."""
    cfg, model = st.cfg, st.model.model
    assert model is not None
    scored = st.model.score(frame.image, cfg.roi, frame.index)  # the one scoring path (triggered mode too)
    if scored is None:
        return None
    image, r = scored
    decision = st.alarms.update(r.is_anomaly)
    latency = (time.time() - frame.time) * 1e3
    st.status.record_frame(image, r.anomaly_map, r.score, r.threshold, r.is_anomaly, latency, frame.time)
    rec = {"time": frame.time, "frame": frame.index, "source": frame.name, "model": model.version,
           "score": round(r.score, 6), "anomaly": r.is_anomaly, "alarm": decision.active, "latency_ms": round(latency, 2),
           **{k: round(v, 3) for k, v in r.timings.items()}}
    if decision.rising:
        ev = st.store.save(image, r.anomaly_map, r.threshold, r.score, meta={"frame": frame.index, "model": model.version},
                           geometry=geometry(image.shape[:2], model.detector.info.data), when=frame.time)
        st.alarms.fire(AlarmEvent(cfg.station, cfg.part, model.version, r.score, r.threshold, ev.boxes,
                                  str(ev.path or ""), frame.time, frame.index))
        st.status.record_alarm(AlarmRecord(frame.time, frame.index, r.score, r.threshold, str(ev.path or ""),
                                           len(ev.boxes)))
        rec["event"] = str(ev.path or "")
        rec["alarm_latency_ms"] = round((time.time() - frame.time) * 1e3, 2)  # capture -> alarm handed to sinks
    st.frame_log.write(rec)
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
