"""The reject output: a GPIO pulse when a NOK part reaches the rejector, reject.delay_s (or reject.distance_counts
encoder pulses) after its trigger, in part order, with any number of parts between camera and rejector.

Parts are tracked from their trigger (the queue's listener, in the trigger's thread), so a part is at the rejector on
time even when its inspection is still running: a part whose result is not there when it arrives is treated as
`error` (rejected when reject.on_error, the fail-safe default) and counted as late. One thread drives the line;
pulses that overlap merge into one longer pulse. Every pulse is recorded with its due and actual time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from edge_ad.station.alarms.gpio import GpioBackend
from edge_ad.station.config import RejectConfig
from edge_ad.station.lograte import log_limited
from edge_ad.station.trigger import Encoder, Trigger

log = logging.getLogger(__name__)

RECORDS = 4096  # pulses kept (due vs actual time) for the status and the benchmark
IDLE_WAIT_S = 0.5  # the thread looks for a stop this often with nothing due


@dataclass
class Part:
    """A part on its way to the rejector."""

    seq: int
    part_id: str
    due: float  # time.monotonic() it reaches the rejector (timed mode)
    count: int  # encoder count it reaches the rejector at (encoder mode)
    verdict: str = ""  # ok | nok | error once its result is known


@dataclass
class Pulse:
    seq: int
    part_id: str
    due: float  # when the part reached the rejector, time.monotonic()
    fired: float  # when the line went active
    verdict: str
    late: bool  # the result was not known when the part arrived


class Rejector:
    """Owns the reject line; `track()` at the trigger, `decide()` at the result, `close()` at the end."""

    def __init__(self, cfg: RejectConfig, backend: GpioBackend, encoder: Encoder | None = None) -> None:
        self.cfg, self.backend, self.encoder = cfg, backend, encoder
        self.pulses: deque[Pulse] = deque(maxlen=RECORDS)
        self.passed = 0  # parts that reached the rejector and were let through
        self.late = 0  # parts whose result came after they reached the rejector
        self.overflow = 0  # parts not tracked because reject.max_in_flight were on the way
        self._parts: deque[Part] = deque()
        self._by_seq: dict[int, Part] = {}
        self._cond = threading.Condition()
        self._active_until = 0.0
        self._active = False
        self._closing = False
        self.backend.setup(self._level(False))
        if encoder is not None:
            encoder.listeners.append(self._step)
        self._thread = threading.Thread(target=self._run, name="edge_ad-reject", daemon=True)
        self._thread.start()

    def _level(self, active: bool) -> bool:
        return active if self.cfg.active_high else not active

    def track(self, trig: Trigger) -> None:
        """A part was triggered: it reaches the rejector delay_s (or distance_counts) later."""
        with self._cond:
            if len(self._parts) >= self.cfg.max_in_flight:
                self.overflow += 1
                log_limited(log, logging.ERROR, "reject-full", "reject: part %s not tracked: %d parts already between "
                            "camera and rejector (reject.max_in_flight)", trig.part_id, len(self._parts))
                return
            part = Part(trig.seq, trig.part_id, trig.mono + self.cfg.delay_s, trig.encoder + self.cfg.distance_counts)
            if trig.error:
                part.verdict = "error"
            self._parts.append(part)
            self._by_seq[part.seq] = part
            self._cond.notify_all()

    def decide(self, seq: int, verdict: str) -> None:
        """The part's result; a part already past the rejector keeps what was done to it."""
        with self._cond:
            part = self._by_seq.get(seq)
            if part is not None and not part.verdict:
                part.verdict = verdict

    def _step(self, _count: int) -> None:
        with self._cond:
            self._cond.notify_all()

    def in_flight(self) -> int:
        with self._cond:
            return len(self._parts)

    def _arrived(self, part: Part, now: float) -> bool:
        if self.encoder is not None:
            return self.encoder.count >= part.count
        return now >= part.due

    def _run(self) -> None:
        with self._cond:
            while not self._closing:
                now = time.monotonic()
                if self._parts and self._arrived(self._parts[0], now):
                    self._at_rejector(self._parts.popleft(), now)
                    continue
                if self._active and now >= self._active_until:
                    self._active = False
                    self.backend.write(self._level(False))
                wake = [IDLE_WAIT_S]
                if self._active:
                    wake.append(self._active_until - now)
                if self._parts and self.encoder is None:
                    wake.append(self._parts[0].due - now)
                self._cond.wait(max(0.0, min(wake)))  # encoder steps wake it too (_step)

    def _at_rejector(self, part: Part, now: float) -> None:
        """Caller holds the lock: the part is at the rejector now."""
        self._by_seq.pop(part.seq, None)
        late = not part.verdict
        if late:
            self.late += 1
            log_limited(log, logging.WARNING, "reject-late", "reject: part %s reached the rejector before its result "
                        "(%s)", part.part_id, "rejected, reject.on_error" if self.cfg.on_error else "let through")
        verdict = part.verdict or "error"
        if verdict == "nok" or (verdict == "error" and self.cfg.on_error):
            if not self._active:
                self._active = True
                self.backend.write(self._level(True))
            fired = time.monotonic()
            self._active_until = max(self._active_until, fired + self.cfg.pulse_s)
            self.pulses.append(Pulse(part.seq, part.part_id, part.due if self.encoder is None else now, fired,
                                     verdict, late))
        else:
            self.passed += 1

    def close(self) -> None:
        """Stop; parts still on the way are logged (the line ends inactive)."""
        with self._cond:
            self._closing = True
            left = len(self._parts)
            self._cond.notify_all()
        self._thread.join(2.0)
        if left:
            log.warning("reject: %d part(s) were still on their way to the rejector at the stop", left)
        self.backend.write(self._level(False))
        self.backend.cleanup()
