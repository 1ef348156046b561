"""Triggers for triggered mode: a GPIO edge, an MQTT command, an HTTP POST, an OPC UA method call or a timer, all
into one queue in arrival order, each numbered and stamped with its time.

A trigger is taken from its source's thread at once (its time is when it came, not when the loop gets to it); the
loop inspects them in order (edge_ad.station.line). Every trigger gets exactly one result: one that cannot wait (the
queue is full, the station is stopping) is answered `error` with the reason, never dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from edge_ad.station.config import TriggerConfig
from edge_ad.station.gpio_input import EdgeFilter, InputBackend
from edge_ad.station.lograte import log_limited

log = logging.getLogger(__name__)

SOURCES = ("gpio", "mqtt", "http", "opcua", "timer")
PART_ID_CHARS = 64  # a part id from a trigger longer than this is refused (it names files and OPC UA values)


@dataclass
class Trigger:
    """One part to inspect."""

    seq: int  # 1, 2, ... in arrival order since start
    part_id: str
    source: str  # one of SOURCES
    time: float  # time.time() of the trigger (frames carry the same clock)
    mono: float  # time.monotonic() of the trigger (reject timing)
    encoder: int = 0  # encoder count at the trigger (reject by distance)
    error: str = ""  # set when it cannot be inspected (queue full): answered `error` at once


def clean_part_id(raw: object) -> str:
    """A part id from outside ("" when none was given); ValueError when it is not a short printable text."""
    text = "" if raw is None else str(raw).strip()
    if len(text) > PART_ID_CHARS or not text.isprintable():
        raise ValueError(f"part_id: at most {PART_ID_CHARS} printable characters, got {text[:80]!r}")
    return text


def part_id_from_payload(payload: bytes) -> str:
    """An MQTT trigger's part id: a JSON object {"part_id": ...}, a JSON string, plain text, or empty (a counter)."""
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        doc = json.loads(text)
    except ValueError:
        return clean_part_id(text)
    if isinstance(doc, dict):
        return clean_part_id(doc.get("part_id"))
    return clean_part_id(doc)


class TriggerQueue:
    """Thread-safe, in order. `fire()` never blocks a source: past queue_max the trigger is queued already failed."""

    def __init__(self, cfg: TriggerConfig, encoder: Callable[[], int] | None = None) -> None:
        self.cfg = cfg
        self.fired = 0
        self.refused = 0  # triggers answered `error` because the queue was full
        self._encoder = encoder or (lambda: 0)
        self._items: deque[Trigger] = deque()
        self._cond = threading.Condition()
        self._listeners: list[Callable[[Trigger], None]] = []

    def listen(self, callback: Callable[[Trigger], None]) -> None:
        """Called in the source's thread for every trigger, in order (the rejector tracks parts from here)."""
        self._listeners.append(callback)

    def fire(self, source: str, part_id: str = "", when: float | None = None) -> Trigger:
        """A part to inspect; `when` is its time.monotonic() (default: now). Returns the queued trigger."""
        mono_now, wall_now = time.monotonic(), time.time()
        mono = mono_now if when is None else when
        with self._cond:
            self.fired += 1
            seq = self.fired
            trig = Trigger(seq, part_id or f"{self.cfg.part_id_prefix}{seq}", source, wall_now - (mono_now - mono),
                           mono, self._encoder())
            waiting = sum(1 for t in self._items if not t.error)
            if waiting >= self.cfg.queue_max:
                self.refused += 1
                trig.error = f"trigger queue full ({waiting} parts waiting, trigger.queue_max {self.cfg.queue_max})"
                log_limited(log, logging.ERROR, "trigger-full", "trigger %d (%s): %s", seq, trig.part_id, trig.error)
            for listener in self._listeners:
                try:
                    listener(trig)
                except Exception:  # noqa: BLE001 - a listener must not lose the trigger
                    log.exception("trigger listener failed")
            self._items.append(trig)
            self._cond.notify_all()
        return trig

    def next(self, timeout: float) -> Trigger | None:
        """The oldest trigger, waiting up to timeout for one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._items.popleft()

    def drain(self) -> list[Trigger]:
        """Every trigger still waiting (at a stop: each is answered `error`)."""
        with self._cond:
            items, self._items = list(self._items), deque()
            return items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class TimerTrigger:
    """A trigger every `interval_s` on a fixed schedule (no drift): bench tests and soak runs without a line."""

    def __init__(self, queue: TriggerQueue, interval_s: float) -> None:
        self.queue, self.interval_s = queue, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge_ad-trigger-timer", daemon=True)

    def start(self) -> TimerTrigger:
        self._thread.start()
        return self

    def _run(self) -> None:
        start, n = time.monotonic(), 0
        while not self._stop.wait(max(0.0, start + (n + 1) * self.interval_s - time.monotonic())):
            n += 1
            self.queue.fire("timer", when=start + n * self.interval_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


class GpioTrigger:
    """A light barrier or PLC output on an input line: each debounced edge of trigger.gpio_edge is a trigger."""

    def __init__(self, queue: TriggerQueue, backend: InputBackend, cfg: TriggerConfig) -> None:
        self.queue, self.backend = queue, backend
        self.filter = EdgeFilter(cfg.gpio_edge == "rising", cfg.gpio_debounce_s)

    def start(self) -> GpioTrigger:
        self.backend.start(self._on_edge)
        return self

    def _on_edge(self, level: bool, when: float) -> None:
        if self.filter.accept(level, when):
            self.queue.fire("gpio", when=when)

    def close(self) -> None:
        self.backend.close()


class Encoder:
    """Counts the rising edges of an encoder input (reject.encoder_pin); the rejector waits on it."""

    def __init__(self, backend: InputBackend) -> None:
        self.backend = backend
        self.count = 0
        self.listeners: list[Callable[[int], None]] = []  # called with the new count on every step
        self._lock = threading.Lock()

    def start(self) -> Encoder:
        self.backend.start(self._on_edge)
        return self

    def _on_edge(self, level: bool, _when: float) -> None:
        if level:
            with self._lock:
                self.count += 1
                count = self.count
            for listener in self.listeners:
                listener(count)

    def close(self) -> None:
        self.backend.close()
