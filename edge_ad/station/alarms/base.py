"""The alarm event, the sink interface, and the hub that feeds every sink from one debouncer."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from edge_ad.station.alarms.debounce import Debouncer, Decision
from edge_ad.station.lograte import log_limited

log = logging.getLogger(__name__)


@dataclass
class AlarmEvent:
    """What every sink reports about one alarm (the debounced rising edge)."""

    station: str
    part: str
    model_version: str
    score: float
    threshold: float
    boxes: list[dict[str, Any]] = field(default_factory=list)  # from edge_ad.station.evidence.find_boxes
    evidence: str = ""  # evidence folder of this event, empty when not saved
    time: float = field(default_factory=time.time)  # Unix seconds
    frame_index: int = -1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `time_iso` is for humans and dashboards, `time` for code."""
        data = asdict(self)
        data["score"] = float(self.score)
        data["threshold"] = float(self.threshold)
        data["time_iso"] = datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds")
        return data


class Sink(Protocol):
    """An alarm output. Must return quickly: it runs inside the inspection loop."""

    name: str

    def on_event(self, event: AlarmEvent) -> None:
        """The alarm fired (once per debounced rising edge)."""

    def set_active(self, active: bool) -> None:
        """The debounced alarm level changed (for outputs held while anomalous)."""

    def close(self) -> None:
        """Flush, drive outputs inactive, release resources."""

    # Optional: set_fault(reason: str) shows that the station cannot inspect ("" when it can again);
    # health() -> dict adds fields to the station status (broker state, queue depth);
    # on_result(result) reports one triggered part's result (edge_ad.station.line.PartResult).


class Alarms:
    """Debouncer plus sinks. One failing sink is logged and never stops the others or the loop."""

    def __init__(self, sinks: list[Sink], debouncer: Debouncer) -> None:
        self.sinks = list(sinks)
        self.debouncer = debouncer
        self.events_fired = 0

    def update(self, is_anomaly: bool, now: float | None = None) -> Decision:
        """Feed one frame's verdict; on `rising` the caller saves evidence and calls fire()."""
        decision = self.debouncer.update(is_anomaly, now)
        if decision.rising or decision.falling:
            self._each("set_active", decision.active)
        return decision

    def fire(self, event: AlarmEvent) -> None:
        self.events_fired += 1
        self._each("on_event", event)

    def result(self, result: Any) -> None:
        """Triggered mode: one part's result to every sink that reports results (MQTT, OPC UA)."""
        self._each("on_result", result)

    def set_fault(self, reason: str) -> None:
        """The station cannot inspect (`reason`), or can again (""): every sink that shows faults shows it."""
        self._each("set_fault", reason)

    def health(self) -> dict[str, Any]:
        """What the sinks report for the station status (broker state, queue depth)."""
        out: dict[str, Any] = {}
        for sink in self.sinks:
            report = getattr(sink, "health", None)
            if report is not None:
                try:
                    out.update(report())
                except Exception:  # noqa: BLE001 - a status read must not stop the loop
                    log.exception("alarm sink %s: health failed", getattr(sink, "name", sink))
        return out

    def reset(self) -> None:
        """Clear debounce history, releasing any held output."""
        was_active = self.debouncer.active
        self.debouncer.reset()
        if was_active:
            self._each("set_active", False)

    def close(self) -> None:
        if self.debouncer.active:
            self.debouncer.reset()
        self._each("close")

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.sinks:
            call = getattr(sink, method, None)
            if call is None:  # an optional method this sink does not have
                continue
            try:
                call(*args)
            except Exception as exc:  # noqa: BLE001 - an alarm output must not take the station down
                name = getattr(sink, "name", sink)
                log_limited(log, logging.ERROR, f"sink:{name}:{method}", "alarm sink %s: %s failed: %s: %s", name,
                            method, type(exc).__name__, exc)
                log.debug("alarm sink %s: %s failed", name, method, exc_info=True)

    def __enter__(self) -> Alarms:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
