"""Log lines for repeated conditions at a bounded rate: a token bucket per condition, so the first few lines
always show, a condition that repeats every frame costs at most one line per interval, and the line after a
quiet spell says how many were left out (a looping source or a full disk must not flood the journal)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

BURST = 5  # lines a condition may log at once before the rate applies
INTERVAL_S = 30.0  # then one line per this many seconds


class LogLimiter:
    """Per-key token buckets; thread-safe (the camera, MQTT and loop threads share one)."""

    def __init__(self, burst: int = BURST, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float, int]] = {}  # key -> (tokens, last refill, suppressed)

    def allow(self, key: str) -> tuple[bool, int]:
        """(may log now, lines suppressed since the last one that was logged)."""
        now = self._clock()
        with self._lock:
            tokens, last, suppressed = self._buckets.get(key, (float(self.burst), now, 0))
            tokens = min(float(self.burst), tokens + (now - last) / self.interval_s)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now, 0)
                return True, suppressed
            self._buckets[key] = (tokens, now, suppressed + 1)
            return False, suppressed + 1

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: Any) -> bool:
        """Log `msg % args` under `key` unless over the rate; True when the line was written."""
        ok, suppressed = self.allow(key)
        if ok:
            if suppressed:
                msg += f" ({suppressed} similar line(s) suppressed)"
            logger.log(level, msg, *args)
        return ok


LIMITER = LogLimiter()  # the station's shared limiter; keys name the condition, e.g. "camera-lost:<uri>"


def log_limited(logger: logging.Logger, level: int, key: str, msg: str, *args: Any) -> bool:
    """LIMITER.log: one call site per repeated condition."""
    return LIMITER.log(logger, level, key, msg, *args)
