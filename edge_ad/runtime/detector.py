"""The backend-independent Detector: preprocess -> session.run -> scoring -> verdict.

A session is anything with `run(batch NCHW float32) -> list of per-scale maps`; onnxruntime,
TensorRT and torch sessions all plug in here, so every backend scores frames identically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_ad import data as D
from edge_ad.config import DataConfig, from_dict
from edge_ad.errors import EdgeAdError
from edge_ad.runtime.base import Result
from edge_ad.scoring import ScoringSpec, score_outputs

MANIFEST_SUFFIX = ".json"  # model.onnx -> model.json: what the runtime needs besides the graph


class Session(Protocol):
    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


@dataclass
class ModelInfo:
    """Everything the runtime needs to use a graph: preprocessing, scoring and the alarm threshold."""

    data: DataConfig
    scoring: ScoringSpec
    threshold: float
    meta: dict

    def to_dict(self) -> dict:
        from edge_ad.config import to_dict

        return {"data": to_dict(self.data), "scoring": self.scoring.to_dict(), "threshold": self.threshold, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        return cls(from_dict(DataConfig, d["data"]), ScoringSpec.from_dict(d["scoring"]), float(d["threshold"]), d.get("meta", {}))

    @classmethod
    def load(cls, path: str | Path) -> "ModelInfo":
        p = Path(path)
        if not p.is_file():
            raise EdgeAdError(f"model manifest not found: {p} (it is written next to the model by `edge_ad export`)")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise EdgeAdError(f"{p}: invalid model manifest ({e})") from None


class AnomalyDetector:
    """Implements the Detector protocol on top of any Session."""

    def __init__(self, session: Session, info: ModelInfo, threshold: float | None = None):
        self.session = session
        self.info = info
        self.threshold = info.threshold if threshold is None else float(threshold)

    def detect(self, frame_bgr: np.ndarray) -> Result:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames_bgr: list[np.ndarray]) -> list[Result]:
        t0 = time.perf_counter()
        batch = np.stack([D.preprocess(f, self.info.data) for f in frames_bgr])
        t1 = time.perf_counter()
        outputs = self.session.run(batch)
        t2 = time.perf_counter()
        maps, scores = score_outputs(outputs, self.info.scoring)
        t3 = time.perf_counter()
        n = len(frames_bgr)
        timings = {"preprocess_ms": (t1 - t0) * 1e3 / n, "infer_ms": (t2 - t1) * 1e3 / n, "postprocess_ms": (t3 - t2) * 1e3 / n}
        return [Result(s, m, s >= self.threshold, self.threshold, dict(timings)) for s, m in zip(scores, maps)]


def open_detector(path: str | Path, backend: str = "auto", threads: int = 0,
                  threshold: float | None = None) -> AnomalyDetector:
    """Open a model for inference: an .onnx/.engine (+ manifest), a .pt (torch), or a folder holding one."""
    p = Path(path)
    if p.is_dir():
        for name in ("model.engine", "model.onnx", "model.pt"):
            if (p / name).is_file() and (backend == "auto" or name.endswith(_BACKEND_SUFFIX[backend])):
                p = p / name
                break
        else:
            raise EdgeAdError(f"no model.onnx, model.engine or model.pt in {p}")
    if not p.is_file():
        raise EdgeAdError(f"model not found: {p}")
    kind = {".onnx": "onnxruntime", ".engine": "tensorrt", ".pt": "torch"}.get(p.suffix)
    if kind is None or (backend != "auto" and backend != kind):
        raise EdgeAdError(f"{p}: cannot run a {p.suffix} file with backend {backend}")
    if kind == "torch":
        from edge_ad.runtime.torch_backend import TorchSession

        session = TorchSession(p, threads)
        return AnomalyDetector(session, session.info, threshold)
    info = ModelInfo.load(p.with_suffix(MANIFEST_SUFFIX) if kind == "onnxruntime" else p.parent / ("model" + MANIFEST_SUFFIX))
    if kind == "onnxruntime":
        from edge_ad.runtime.onnx import OrtSession

        return AnomalyDetector(OrtSession(p, threads), info, threshold)
    from edge_ad.runtime.tensorrt import TensorRTSession

    return AnomalyDetector(TensorRTSession(p), info, threshold)


_BACKEND_SUFFIX = {"onnxruntime": ".onnx", "tensorrt": ".engine", "torch": ".pt"}
