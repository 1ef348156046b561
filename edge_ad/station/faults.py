"""Fail safe: why the station cannot inspect, told everywhere at once.

A fault has a source (bundle, camera, detector) and a reason. Every change goes to the health state that the
web view and /healthz read, to the alarm sinks (retained MQTT status `fault` with the reason, the GPIO fault
line), to systemd's STATUS= line and to the log; a fault that lasts is logged again at a bounded rate. The
loop keeps retrying; when the last reason clears, the station says it runs again. It never passes parts
silently.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from edge_ad.station.lograte import log_limited
from edge_ad.station.service import Notifier
from edge_ad.station.status import StationStatus

log = logging.getLogger(__name__)

REMIND_S = 30.0  # a fault that lasts is logged again this often


class FaultOutputs(Protocol):
    """edge_ad.station.alarms.Alarms: sinks that can show a fault (MQTT status, GPIO fault line)."""

    def set_fault(self, reason: str) -> None: ...


class Faults:
    """The current fault reasons by source; only changes are published, so calling set() every frame is cheap."""

    def __init__(self, status: StationStatus, outputs: FaultOutputs, notifier: Notifier) -> None:
        self.status = status
        self.outputs = outputs
        self.notifier = notifier
        self._reasons: dict[str, str] = {}
        self._since: dict[str, float] = {}
        self._reminded: dict[str, float] = {}

    @property
    def reason(self) -> str:
        """Every current reason in one line ("" when the station can inspect)."""
        return "; ".join(self._reasons.values())

    def active(self, source: str | None = None) -> bool:
        return bool(self._reasons) if source is None else source in self._reasons

    def set(self, source: str, reason: str) -> None:
        """Report (or keep reporting) that `source` stops the station from inspecting."""
        if self._reasons.get(source) == reason:
            return
        self._since.setdefault(source, time.monotonic())
        self._reasons[source] = reason
        log_limited(log, logging.ERROR, f"fault-change:{source}", "FAULT: %s", reason)
        self.publish()

    def clear(self, source: str) -> None:
        """`source` is fine again; the station runs when no other reason is left."""
        if self._reasons.pop(source, None) is None:
            return
        since = self._since.pop(source)
        self._reminded.pop(source, None)
        log.info("fault cleared (%s) after %.1f s%s", source, time.monotonic() - since,
                 f"; still: {self.reason}" if self._reasons else ": no fault left")
        self.publish()

    def publish(self) -> None:
        """Tell every output the current state (also once at start, to leave `starting`)."""
        reason = self.reason
        self.status.update(state="fault" if reason else "running", fault=reason)
        self.outputs.set_fault(reason)
        self.notifier.status(f"FAULT: {reason}" if reason else "running")

    def remind(self) -> None:
        """Call every loop pass: a fault that lasts is logged again every REMIND_S."""
        now = time.monotonic()
        for source, reason in self._reasons.items():
            if now - self._reminded.get(source, self._since[source]) >= REMIND_S:
                self._reminded[source] = now
                log.error("FAULT (for %.0f s): %s", now - self._since[source], reason)

    def summary(self) -> str:
        """For the periodic systemd STATUS= line."""
        return f"FAULT: {self.reason}" if self._reasons else ""
