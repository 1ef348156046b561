"""The Detector interface shared by every backend (onnxruntime, tensorrt, torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Result:
    """One frame's verdict; anomaly_map is float32 HxW at the model's input size."""

    score: float
    anomaly_map: np.ndarray
    is_anomaly: bool
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage


class Detector(Protocol):
    """Anything that turns a BGR uint8 frame into a Result."""

    threshold: float

    def detect(self, frame_bgr: np.ndarray) -> Result: ...

    def detect_batch(self, frames_bgr: list[np.ndarray], prepared: bool = False) -> list[Result]: ...
