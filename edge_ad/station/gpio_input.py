"""GPIO inputs for triggered mode: a light barrier or PLC output (the trigger) and an encoder (reject by distance).

The same backends as the outputs (edge_ad.station.alarms.gpio, from gpio.backend): `jetson` (Jetson.GPIO event
detection), `gpiod` (libgpiod edge events, v1 or v2, read in a thread), `none`, and `fake`, which records every edge
it is given with its time.monotonic() so tests and the benchmark drive a light barrier without hardware. Hardware
modules are imported only when chosen. Every backend calls `on_edge(level, time.monotonic())` from its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

from edge_ad.errors import EdgeAdError
from edge_ad.station.config import GpioConfig

log = logging.getLogger(__name__)

EdgeCallback = Callable[[bool, float], None]  # (level after the edge, time.monotonic() of the edge)
GPIOD_WAIT_S = 0.2  # the gpiod reader thread looks for a stop this often


class InputBackend(Protocol):
    """One input line that reports its edges."""

    def start(self, on_edge: EdgeCallback) -> None: ...

    def close(self) -> None: ...


class NoneInput:
    """No hardware: the line never changes (the other trigger sources still work)."""

    def start(self, on_edge: EdgeCallback) -> None:
        pass

    def close(self) -> None:
        pass


class FakeInput:
    """A recording stand-in for a light barrier or an encoder: `edge()` / `pulse()` drive it, `edges` keeps
    (time.monotonic(), level) of every edge it was given, bounced ones included."""

    def __init__(self) -> None:
        self.edges: list[tuple[float, int]] = []
        self.level = False
        self.closed = False
        self._on_edge: EdgeCallback | None = None
        self._lock = threading.Lock()

    def start(self, on_edge: EdgeCallback) -> None:
        self._on_edge = on_edge

    def edge(self, level: bool, when: float | None = None) -> float:
        """The line goes to `level` now (or at monotonic time `when`); returns the edge time."""
        when = time.monotonic() if when is None else when
        with self._lock:
            self.level = bool(level)
            self.edges.append((when, int(level)))
            callback = self._on_edge
        if callback is not None and not self.closed:
            callback(bool(level), when)
        return when

    def pulse(self, width_s: float = 0.0) -> float:
        """A part passing the barrier (or one encoder step): up, then down; returns the rising edge's time."""
        t = self.edge(True)
        self.edge(False, t + width_s)
        return t

    def close(self) -> None:
        self.closed = True


class JetsonInput:
    """Jetson.GPIO event detection on both edges (its own thread calls back)."""

    def __init__(self, pin: int, numbering: str) -> None:
        try:
            import Jetson.GPIO as GPIO  # noqa: N814 - the library's documented name
        except ImportError:
            raise EdgeAdError("gpio.backend 'jetson' needs Jetson.GPIO: pip install Jetson.GPIO (on a Jetson)") from None
        except RuntimeError as exc:
            raise EdgeAdError(f"Jetson.GPIO cannot run here: {exc}") from None
        self._gpio, self.pin, self.numbering = GPIO, pin, numbering

    def start(self, on_edge: EdgeCallback) -> None:
        GPIO = self._gpio
        GPIO.setwarnings(False)
        GPIO.setmode(getattr(GPIO, self.numbering))
        GPIO.setup(self.pin, GPIO.IN)
        GPIO.add_event_detect(self.pin, GPIO.BOTH,
                              callback=lambda ch: on_edge(bool(GPIO.input(ch)), time.monotonic()))

    def close(self) -> None:
        try:
            self._gpio.remove_event_detect(self.pin)
        finally:
            self._gpio.cleanup(self.pin)


class GpiodInput:
    """libgpiod edge events on one line, read in a thread (v2 request_lines, or v1 Line.request)."""

    def __init__(self, chip: str, offset: int) -> None:
        try:
            import gpiod
        except ImportError:
            raise EdgeAdError("gpio.backend 'gpiod' needs the libgpiod bindings: pip install gpiod") from None
        self._gpiod, self.chip, self.offset = gpiod, chip, offset
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._request = None
        self._line = None

    def start(self, on_edge: EdgeCallback) -> None:
        gpiod = self._gpiod
        try:
            if hasattr(gpiod, "request_lines"):  # libgpiod >= 2
                from gpiod.line import Direction, Edge

                settings = gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.BOTH)
                self._request = gpiod.request_lines(self.chip, consumer="edge_ad", config={self.offset: settings})
            else:
                self._line = gpiod.Chip(self.chip).get_line(self.offset)
                self._line.request(consumer="edge_ad", type=gpiod.LINE_REQ_EV_BOTH_EDGES)
        except OSError as exc:
            raise EdgeAdError(f"cannot open GPIO input line {self.offset} on {self.chip}: {exc}") from None
        self._thread = threading.Thread(target=self._read, args=(on_edge,), name="edge_ad-gpio-in", daemon=True)
        self._thread.start()

    def _read(self, on_edge: EdgeCallback) -> None:
        from datetime import timedelta

        while not self._stop.is_set():
            if self._request is not None:
                if self._request.wait_edge_events(timedelta(seconds=GPIOD_WAIT_S)):
                    for ev in self._request.read_edge_events():
                        on_edge(ev.event_type == ev.Type.RISING_EDGE, time.monotonic())
            elif self._line.event_wait(sec=0, nsec=int(GPIOD_WAIT_S * 1e9)):
                ev = self._line.event_read()
                on_edge(ev.type == self._gpiod.LineEvent.RISING_EDGE, time.monotonic())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * GPIOD_WAIT_S + 1.0)
        for handle in (self._request, self._line):
            if handle is not None:
                handle.release()


def make_input(cfg: GpioConfig, pin: int) -> InputBackend:
    """The input backend of gpio.backend for line `pin`."""
    if cfg.backend == "jetson":
        return JetsonInput(pin, cfg.numbering)
    if cfg.backend == "gpiod":
        return GpiodInput(cfg.chip, pin)
    if cfg.backend == "fake":
        return FakeInput()
    return NoneInput()


class EdgeFilter:
    """Software debounce: an edge of the wanted polarity counts when the last accepted one is `debounce_s` old."""

    def __init__(self, rising: bool, debounce_s: float) -> None:
        self.rising = rising
        self.debounce_s = debounce_s
        self.bounced = 0  # wanted edges ignored as contact bounce
        self._last = float("-inf")
        self._lock = threading.Lock()

    def accept(self, level: bool, when: float) -> bool:
        if level != self.rising:
            return False
        with self._lock:
            if when - self._last < self.debounce_s:
                self.bounced += 1
                return False
            self._last = when
            return True
