"""systemd integration without dependencies: sd_notify over NOTIFY_SOCKET, and signal flags.

The loop calls `Notifier.tick()` once per frame; it pings the watchdog at half the WatchdogSec period
and refreshes STATUS= at a fixed interval, so a hung loop is restarted by systemd and
`systemctl status edge_ad` shows the frame rate and the last score.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Callable, Mapping

from edge_ad.station.config import ServiceConfig

log = logging.getLogger(__name__)


def _address(path: str) -> str:
    """NOTIFY_SOCKET may name an abstract socket with a leading '@'."""
    return "\0" + path[1:] if path.startswith("@") else path


class Notifier:
    """Sends sd_notify datagrams; every call is a no-op when not started by systemd."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        status_interval_s: float = ServiceConfig.status_interval_s,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if env is None else env
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self._clock = clock
        self.status_interval_s = status_interval_s
        self.watchdog_interval_s = self._watchdog_interval(env)
        self._last_ping = float("-inf")
        self._last_status = float("-inf")
        self._sock: socket.socket | None = None
        if self.socket_path:
            # Non-blocking: a datagram socket blocks when the receiver's queue is full, and the inspection
            # loop must never wait for systemd.
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        """Half of WATCHDOG_USEC, or None when systemd runs no watchdog for this process."""
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
            return None
        try:
            return int(usec) / 2e6
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
            return None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> bool:
        """Send one raw sd_notify message (lines of KEY=VALUE); False when not under systemd."""
        if self._sock is None or self.socket_path is None:
            return False
        try:
            self._sock.sendto(message.encode(), _address(self.socket_path))
            return True
        except BlockingIOError:
            log.debug("sd_notify: %s busy, dropped %r", self.socket_path, message.split("\n", 1)[0])
            return False
        except OSError as exc:  # systemd gone or socket full: never fatal for the inspection loop
            log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify(f"STOPPING=1\nSTATUS={status}")

    def reloading(self) -> bool:
        """Tell systemd a reload started (send ready() when done); MONOTONIC_USEC is needed since v253."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def status(self, text: str) -> bool:
        self._last_status = self._clock()
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Ping the watchdog, at most once per WATCHDOG_USEC/2; True when a ping was sent."""
        if self.watchdog_interval_s is None:
            return False
        now = self._clock()
        if now - self._last_ping < self.watchdog_interval_s:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def tick(self, fps: float | None = None, last_score: float | None = None, extra: str = "") -> None:
        """Call once per loop iteration: watchdog ping plus a STATUS line every status_interval_s."""
        self.watchdog()
        if self._clock() - self._last_status >= self.status_interval_s:
            self.status(format_status(fps, last_score, extra))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def format_status(fps: float | None, last_score: float | None, extra: str = "") -> str:
    """One short line for `systemctl status`."""
    parts = []
    if fps is not None:
        parts.append(f"fps={fps:.1f}")
    if last_score is not None:
        parts.append(f"last_score={last_score:.4f}")
    if extra:
        parts.append(extra)
    return " ".join(parts) or "running"


class StopFlag:
    """Set by SIGTERM/SIGINT (stop) and SIGHUP (reload); the loop polls it between frames."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopFlag:
        """Install the handlers (main thread only); `restore()` puts the previous ones back."""
        for sig, handler in (
            (signal.SIGTERM, self._on_stop),
            (signal.SIGINT, self._on_stop),
            (signal.SIGHUP, self._on_reload),
        ):
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _on_stop(self, signum: int, _frame: object) -> None:
        self.signal_name = signal.Signals(signum).name
        self._stop.set()

    def _on_reload(self, _signum: int, _frame: object) -> None:
        self.request_reload()

    def request_reload(self) -> None:
        """Request a bundle reload from code (the web view's threshold change, rollback): the same path as SIGHUP."""
        self._reload.set()

    def set(self) -> None:
        """Request a stop from code (e.g. the camera source ended)."""
        self._stop.set()

    def is_set(self) -> bool:
        return self._stop.is_set()

    def __bool__(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until a stop is requested or timeout passes; True when stopping."""
        return self._stop.wait(timeout)

    def reload_requested(self) -> bool:
        """True once per SIGHUP: reading it clears it."""
        if self._reload.is_set():
            self._reload.clear()
            return True
        return False

    def __enter__(self) -> StopFlag:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
