"""Triggered mode: one trigger in, exactly one result for that part out, a reject pulse when it reaches the rejector.

The pieces (trigger queue and sources, encoder, rejector) are built by `open_line`; the loop calls `inspect_part`
for each trigger in order. The frame is scored by the same ModelSlot.score as in continuous mode. A part that cannot
be judged (a fault, no frame in time, a frame the detector fails on, a full queue, a stop) gets `error` with the
reason: the PLC, MQTT, OPC UA, the frame log and the rejector hear about every part.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import cv2

from edge_ad.data import geometry
from edge_ad.station.alarms import Alarms
from edge_ad.station.camera import Frame
from edge_ad.station.config import StationConfig
from edge_ad.station.gpio_input import make_input
from edge_ad.station.pieces import Line, Station
from edge_ad.station.trigger import Encoder, GpioTrigger, TimerTrigger, Trigger, TriggerQueue, part_id_from_payload


log = logging.getLogger(__name__)

RESULT_TOPIC = "result"  # <prefix>/<station>/<part>/result: one message per part
TRIGGER_TOPIC = "trigger"  # <prefix>/<station>/<part>/trigger: a trigger command (payload: part id, JSON or text)


@dataclass
class PartResult:
    """What every output says about one part (MQTT, OPC UA, frame log, web view)."""

    station: str
    part: str  # the part type the station inspects
    part_id: str  # this part: from the trigger, or <trigger.part_id_prefix><counter>
    seq: int  # trigger number since start
    source: str  # what triggered it: gpio | mqtt | http | opcua | timer
    verdict: str  # ok | nok | error
    reason: str = ""  # why `error`
    score: float | None = None
    threshold: float | None = None
    regions: int = 0  # anomalous regions on a NOK part (evidence boxes)
    model_version: str = ""
    trigger_time: float = 0.0  # time.time()
    trigger_mono: float = 0.0  # time.monotonic() of the trigger (latency, frame choice)
    frame_time: float | None = None  # capture time of the inspected frame
    frame_index: int = -1
    latency_ms: float = 0.0  # trigger -> result
    timings: dict[str, float] = field(default_factory=dict)  # wait_frame_ms, preprocess/infer/postprocess_ms
    evidence: str = ""  # evidence folder of a NOK part
    time: float = 0.0  # time.time() the result was ready

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["time_iso"] = datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds")
        return doc


def open_line(cfg: StationConfig, alarms: Alarms) -> Line:
    """The trigger queue and sources, encoder and rejector that cfg.trigger / cfg.reject ask for."""
    from edge_ad.station.alarms.gpio import make_backend

    t, r = cfg.trigger, cfg.reject
    encoder = Encoder(make_input(cfg.gpio, r.encoder_pin)) if r.enabled and r.encoder_pin >= 0 else None
    queue = TriggerQueue(t, (lambda: encoder.count) if encoder is not None else None)
    line = Line(queue, encoder=encoder)
    try:
        if encoder is not None:
            line.sources.append(encoder.start())
        if r.enabled:
            from edge_ad.station.reject import Rejector

            line.rejector = Rejector(r, make_backend(cfg.gpio, r.pin), encoder)
            queue.listen(line.rejector.track)
        if t.gpio_pin >= 0:
            line.trigger_input = make_input(cfg.gpio, t.gpio_pin)
            line.sources.append(GpioTrigger(queue, line.trigger_input, t).start())
        if t.timer_s > 0:
            line.sources.append(TimerTrigger(queue, t.timer_s).start())
        mqtt = next((s for s in alarms.sinks if getattr(s, "name", "") == "mqtt"), None)
        if t.mqtt and mqtt is not None:
            mqtt.subscribe(TRIGGER_TOPIC, lambda payload: _mqtt_trigger(queue, payload))
    except BaseException:
        line.close()
        raise
    return line


def camera_args(cfg: StationConfig) -> dict[str, Any]:
    """Triggered mode's camera: frames kept by capture time (trigger.history); a file is played at its own frame rate
    like a camera (file_mode every would wait for a reader that triggered mode never is)."""
    if not cfg.trigger.enabled:
        return {}
    mode = "realtime" if cfg.camera.file_mode == "every" else cfg.camera.file_mode
    return {"mode": mode, "history": cfg.trigger.history}


def _mqtt_trigger(queue: TriggerQueue, payload: bytes) -> None:
    try:
        part_id = part_id_from_payload(payload)
    except ValueError as exc:
        log.warning("mqtt trigger refused: %s", exc)
        return
    queue.fire("mqtt", part_id)


def sharpest(frames: list[Frame]) -> Frame:
    """Best of N: the frame with the most detail (variance of the Laplacian), i.e. the least motion blur."""
    if len(frames) == 1:
        return frames[0]

    def detail(f: Frame) -> float:
        grey = f.image if f.image.ndim == 2 else cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_32F).var())

    return max(frames, key=detail)


def inspect_part(st: Station, trig: Trigger) -> PartResult:
    """One trigger -> its frame -> the one scoring path -> one result, published everywhere."""
    cfg = st.cfg
    res = PartResult(cfg.station, cfg.part, trig.part_id, trig.seq, trig.source, "error", trigger_time=trig.time,
                     trigger_mono=trig.mono, model_version=st.status.version)
    res.reason = trig.error or (st.faults.reason and f"station in fault: {st.faults.reason}") or \
        ("" if st.model.ready else "no model loaded")
    if not res.reason:
        _judge(st, trig, res)
    return publish(st, res)


def _judge(st: Station, trig: Trigger, res: PartResult) -> None:
    t = st.cfg.trigger
    t0 = time.monotonic()  # the monotonic clock throughout: an NTP step of the wall clock moves no frame or latency
    since = trig.mono + t.delay_s
    frames, why = st.camera.frames_from(since, t.frames, max(0.0, since + t.frame_timeout_s - t0))
    res.timings["wait_frame_ms"] = round((time.monotonic() - t0) * 1e3, 3)
    if not frames:
        res.reason = f"no frame for the part: {why} (trigger.frame_timeout_s {t.frame_timeout_s:g} after trigger + " \
                     f"delay_s {t.delay_s:g}; camera {st.camera.state})"
        return
    frame = sharpest(frames)
    res.frame_time, res.frame_index = frame.time, frame.index
    scored = st.model.score(frame.image, st.cfg.roi, frame.index)
    if scored is None:
        res.reason = f"frame not inspected: {st.model.last_failure}"
        return
    image, r = scored
    model = st.model.model
    assert model is not None
    res.verdict = "nok" if r.is_anomaly else "ok"
    res.score, res.threshold, res.model_version = round(float(r.score), 6), float(r.threshold), model.version
    res.timings.update({k: round(v, 3) for k, v in r.timings.items()})
    st.status.record_frame(image, r.anomaly_map, r.score, r.threshold, r.is_anomaly,
                           (time.monotonic() - frame.mono) * 1e3, frame.time)
    if r.is_anomaly:
        ev = st.store.save(image, r.anomaly_map, r.threshold, r.score,
                           meta={"part_id": trig.part_id, "frame": frame.index, "model": model.version},
                           geometry=geometry(image.shape[:2], model.detector.info.data), when=frame.time)
        res.regions, res.evidence = len(ev.boxes), str(ev.path or "")


def publish(st: Station, res: PartResult) -> PartResult:
    """The rejector first (the part is moving), then MQTT / OPC UA (the sinks), the status and the frame log."""
    res.time = time.time()
    res.latency_ms = round((time.monotonic() - res.trigger_mono) * 1e3, 3)
    if st.line is not None and st.line.rejector is not None:
        st.line.rejector.decide(res.seq, res.verdict)
    if res.verdict == "error":
        log.warning("part %s: error: %s", res.part_id, res.reason)
    st.alarms.result(res)
    st.status.record_result(res.to_dict())
    if st.line is not None:
        st.status.update(triggers=st.line.queue.fired)
    st.frame_log.write({"kind": "part", **{k: v for k, v in res.to_dict().items() if k not in ("station", "part")}})
    return res


def answer_left(st: Station, reason: str) -> int:
    """At a stop: every trigger still waiting gets its `error` result; returns how many."""
    assert st.line is not None
    left = st.line.queue.drain()
    for trig in left:
        trig.error = trig.error or reason
        inspect_part(st, trig)
    return len(left)
