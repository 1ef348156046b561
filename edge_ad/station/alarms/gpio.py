"""GPIO alarm output: a pulse per event or a level held while the alarm is on; active-high or -low. An optional
fault line (gpio.fault_pin) is active while the station cannot inspect, and after it stops.

Backends: `jetson` (Jetson.GPIO), `gpiod` (libgpiod bindings, v1 or v2), `none`, and `fake`, which
records (time, level) transitions for tests. Hardware modules are imported only when chosen.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from edge_ad.station.alarms.base import AlarmEvent
from edge_ad.errors import EdgeAdError
from edge_ad.station.config import GpioConfig

log = logging.getLogger(__name__)


class GpioBackend(Protocol):
    """Drives one output line to a physical level (True = high)."""

    def setup(self, level: bool) -> None: ...

    def write(self, level: bool) -> None: ...

    def cleanup(self) -> None: ...


class NoneBackend:
    """No hardware: the alarm still goes to the log and MQTT."""

    def setup(self, level: bool) -> None:
        pass

    def write(self, level: bool) -> None:
        pass

    def cleanup(self) -> None:
        pass


class FakeBackend:
    """Records every physical level written, as (time.monotonic(), 0 or 1), for tests and dry runs."""

    def __init__(self) -> None:
        self.transitions: list[tuple[float, int]] = []
        self.closed = False
        self._lock = threading.Lock()

    def setup(self, level: bool) -> None:
        self.write(level)

    def write(self, level: bool) -> None:
        with self._lock:
            self.transitions.append((time.monotonic(), int(level)))

    def cleanup(self) -> None:
        self.closed = True

    @property
    def levels(self) -> list[int]:
        with self._lock:
            return [level for _, level in self.transitions]


class JetsonBackend:
    """Jetson.GPIO (pip install Jetson.GPIO; the user needs the `gpio` group)."""

    def __init__(self, pin: int, numbering: str = GpioConfig.numbering) -> None:
        try:
            import Jetson.GPIO as GPIO  # noqa: N814 - the library's documented name
        except ImportError:
            raise EdgeAdError(
                "gpio.backend 'jetson' needs Jetson.GPIO: pip install Jetson.GPIO (on a Jetson), "
                "or set gpio.backend: none"
            ) from None
        except RuntimeError as exc:  # raised on non-Jetson boards
            raise EdgeAdError(f"Jetson.GPIO cannot run here: {exc}") from None
        self._gpio = GPIO
        self.pin = pin
        self.numbering = numbering

    def setup(self, level: bool) -> None:
        GPIO = self._gpio
        GPIO.setwarnings(False)
        GPIO.setmode(getattr(GPIO, self.numbering))
        GPIO.setup(self.pin, GPIO.OUT, initial=GPIO.HIGH if level else GPIO.LOW)

    def write(self, level: bool) -> None:
        self._gpio.output(self.pin, self._gpio.HIGH if level else self._gpio.LOW)

    def cleanup(self) -> None:
        self._gpio.cleanup(self.pin)


class GpiodBackend:
    """libgpiod Python bindings (apt install python3-libgpiod, or pip install gpiod); v1 and v2 APIs."""

    def __init__(self, chip: str, offset: int) -> None:
        try:
            import gpiod
        except ImportError:
            raise EdgeAdError(
                "gpio.backend 'gpiod' needs the libgpiod bindings: pip install gpiod "
                "(or apt install python3-libgpiod), or set gpio.backend: none"
            ) from None
        self._gpiod = gpiod
        self.chip = chip
        self.offset = offset
        self._request = None  # v2 LineRequest
        self._line = None  # v1 Line

    def setup(self, level: bool) -> None:
        gpiod = self._gpiod
        try:
            if hasattr(gpiod, "request_lines"):  # libgpiod >= 2
                from gpiod.line import Direction, Value

                settings = gpiod.LineSettings(
                    direction=Direction.OUTPUT, output_value=Value.ACTIVE if level else Value.INACTIVE
                )
                self._request = gpiod.request_lines(self.chip, consumer="edge_ad", config={self.offset: settings})
            else:  # libgpiod 1.x
                chip = gpiod.Chip(self.chip)
                self._line = chip.get_line(self.offset)
                self._line.request(consumer="edge_ad", type=gpiod.LINE_REQ_DIR_OUT, default_vals=[int(level)])
        except OSError as exc:
            raise EdgeAdError(f"cannot open GPIO line {self.offset} on {self.chip}: {exc}") from None

    def write(self, level: bool) -> None:
        if self._request is not None:
            from gpiod.line import Value

            self._request.set_value(self.offset, Value.ACTIVE if level else Value.INACTIVE)
        elif self._line is not None:
            self._line.set_value(int(level))

    def cleanup(self) -> None:
        if self._request is not None:
            self._request.release()
            self._request = None
        if self._line is not None:
            self._line.release()
            self._line = None


def make_backend(cfg: GpioConfig, pin: int | None = None) -> GpioBackend:
    """The backend driving `pin` (default gpio.pin)."""
    pin = cfg.pin if pin is None else pin
    if cfg.backend == "jetson":
        return JetsonBackend(pin, cfg.numbering)
    if cfg.backend == "gpiod":
        return GpiodBackend(cfg.chip, pin)
    if cfg.backend == "fake":
        return FakeBackend()
    if cfg.backend == "none":
        return NoneBackend()
    raise EdgeAdError(f"unknown gpio.backend {cfg.backend!r} (jetson, gpiod, none, fake)")


class GpioSink:
    """Raises the alarm line; the line is driven inactive at start and on close, whatever happened."""

    name = "gpio"

    def __init__(self, cfg: GpioConfig, backend: GpioBackend | None = None) -> None:
        self.cfg = cfg
        self.backend = backend if backend is not None else make_backend(cfg)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._pulse_until = 0.0
        self._active = False  # the logical level last written
        self._hold = False  # hold mode: the debounced alarm
        self._pulsing = False
        self._fault = False  # gpio.alarm_on_fault: the station cannot inspect
        self.backend.setup(self._level(False))

    def _level(self, active: bool) -> bool:
        return active if self.cfg.active_high else not active

    def _drive(self, active: bool) -> None:
        """Write only on change, so the line sees clean transitions (caller holds the lock)."""
        if active != self._active:
            self._active = active
            self.backend.write(self._level(active))

    def _update(self) -> None:
        """The line is active while an alarm holds it, a pulse runs or (alarm_on_fault) a fault lasts."""
        self._drive(self._hold or self._pulsing or self._fault)

    def on_event(self, event: AlarmEvent) -> None:
        if self.cfg.mode != "pulse":
            return
        with self._lock:
            self._pulsing = True
            self._update()
            self._pulse_until = time.monotonic() + self.cfg.pulse_s
            if self._timer is None:
                self._start_timer(self.cfg.pulse_s)

    def _start_timer(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._pulse_end)
        self._timer.daemon = True
        self._timer.start()

    def _pulse_end(self) -> None:
        with self._lock:
            self._timer = None
            remaining = self._pulse_until - time.monotonic()
            if remaining > 1e-3:  # an event during the pulse extended it
                self._start_timer(remaining)
            else:
                self._pulsing = False
                self._update()

    def set_active(self, active: bool) -> None:
        if self.cfg.mode == "hold":
            with self._lock:
                self._hold = active
                self._update()

    def set_fault(self, reason: str) -> None:
        """With gpio.alarm_on_fault the alarm line is held while the station cannot inspect."""
        if self.cfg.alarm_on_fault:
            with self._lock:
                self._fault = bool(reason)
                self._update()

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._pulse_until = 0.0
            self._hold = self._pulsing = self._fault = False
            self._active = True  # force the write: the line must end inactive even if state drifted
            self._drive(False)
        self.backend.cleanup()


class GpioFaultSink:
    """The fault line (gpio.fault_pin): active while the station cannot inspect, and left active when it stops,
    so a PLC never takes a stopped station for a healthy one (wire a pull resistor to the fault level too, for
    when the process is gone)."""

    name = "gpio-fault"

    def __init__(self, cfg: GpioConfig, backend: GpioBackend | None = None) -> None:
        self.cfg = cfg
        self.backend = backend if backend is not None else make_backend(cfg, cfg.fault_pin)
        self._lock = threading.Lock()
        self.fault = False
        self.backend.setup(self._level(False))

    def _level(self, fault: bool) -> bool:
        return fault if self.cfg.fault_active_high else not fault

    def set_fault(self, reason: str) -> None:
        with self._lock:
            if bool(reason) != self.fault:
                self.fault = bool(reason)
                self.backend.write(self._level(self.fault))

    def on_event(self, event: AlarmEvent) -> None:
        pass

    def set_active(self, active: bool) -> None:
        pass

    def close(self) -> None:
        self.set_fault("stopped")
        self.backend.cleanup()
