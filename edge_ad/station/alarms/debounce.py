"""Debounce per-frame verdicts into an alarm: N anomalous of the last M frames, then a hold time."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from edge_ad.station.config import DebounceConfig


@dataclass(frozen=True)
class Decision:
    """Alarm state after one frame; `rising` is the frame that fires events, `falling` the one that clears."""

    active: bool
    rising: bool = False
    falling: bool = False
    count: int = 0  # anomalous frames in the current window


class Debouncer:
    """One noisy frame does not fire; a real defect fires once and stays on for hold_s after it goes."""

    def __init__(
        self,
        window: int = DebounceConfig.window,
        min_anomalous: int = DebounceConfig.min_anomalous,
        hold_s: float = DebounceConfig.hold_s,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_anomalous <= window:
            raise ValueError(f"need 1 <= min_anomalous ({min_anomalous}) <= window ({window})")
        self.window = window
        self.min_anomalous = min_anomalous
        self.hold_s = hold_s
        self._clock = clock
        self._recent: deque[bool] = deque(maxlen=window)
        self._last_met: float | None = None
        self.active = False

    def update(self, is_anomaly: bool, now: float | None = None) -> Decision:
        now = self._clock() if now is None else now
        self._recent.append(bool(is_anomaly))
        count = sum(self._recent)
        if count >= self.min_anomalous:
            self._last_met = now
            if not self.active:
                self.active = True
                return Decision(True, rising=True, count=count)
            return Decision(True, count=count)
        if self.active and self._last_met is not None and now - self._last_met >= self.hold_s:
            self.active = False
            return Decision(False, falling=True, count=count)
        return Decision(self.active, count=count)

    def reset(self) -> None:
        """Forget history (e.g. after the camera reconnects or the part changes)."""
        self._recent.clear()
        self._last_met = None
        self.active = False
