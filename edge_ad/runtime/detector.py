"""The backend-independent Detector: preprocess -> session.run -> scoring -> verdict.

A session is anything with `run(batch NCHW float32) -> list of per-scale maps`; onnxruntime,
TensorRT and torch sessions all plug in here, so every backend scores frames identically.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_ad import data as D
from edge_ad.errors import EdgeAdError, NonFiniteOutput
from edge_ad.runtime.base import Result
from edge_ad.runtime.manifest import ModelInfo, manifest_path
from edge_ad.scoring import frame_weights, score_outputs

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
MODEL_FILES = {"tensorrt": "model.engine", "onnxruntime": "model.onnx", "torch": "model.pt"}  # auto: in this order
_KIND_BY_SUFFIX = {".engine": "tensorrt", ".onnx": "onnxruntime", ".pt": "torch"}


def check_finite(maps: list[np.ndarray], scores: list[float]) -> None:
    """Every backend's output goes through here: a frame whose map or score is not finite is never judged."""
    for i, (m, s) in enumerate(zip(maps, scores)):
        if not math.isfinite(s) or not np.isfinite(m).all():
            bad = int(m.size - np.isfinite(m).sum())
            raise NonFiniteOutput(f"the model gave a non-finite {'score' if not math.isfinite(s) else 'map'} "
                                  f"(score {s}, {bad} of {m.size} map values NaN or infinite) for image {i} of the "
                                  "batch: not inspected")


def check_threshold(threshold: float) -> float:
    """A NaN threshold passes every frame (`score >= nan` is false): only a finite number is a threshold."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise EdgeAdError(f"threshold must be a finite number, got {threshold!r}")
    return float(threshold)


class Session(Protocol):
    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


class AnomalyDetector:
    """Implements the Detector protocol on top of any Session."""

    def __init__(self, session: Session, info: ModelInfo, threshold: float | None = None):
        outputs = getattr(session, "output_names", None)
        if outputs is not None and len(outputs) < info.scoring.n_outputs:
            raise EdgeAdError(f"the model has {len(outputs)} output map(s) but its model.json scores "
                              f"{info.scoring.n_outputs} (scoring.groups {info.scoring.groups}): they do not belong together")
        shape = getattr(session, "input_shape", None)
        if shape is not None and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]) \
                and (shape[1], *shape[2:]) != (3, *info.data.input_size):
            raise EdgeAdError(f"the model's input is {list(shape[1:])} but its model.json preprocesses to "
                              f"{[3, *info.data.input_size]} (data.image_size / center_crop): they do not belong together")
        self.session = session
        self.info = info
        self.threshold = check_threshold(info.threshold if threshold is None else threshold)

    def detect(self, frame_bgr: np.ndarray) -> Result:
        return self.detect_batch([frame_bgr])[0]

    def detect_batch(self, frames_bgr: list[np.ndarray], prepared: bool = False) -> list[Result]:
        """Score frames; `prepared`: they are already RGB at the input size (data.prepare), only normalised here
        (calibrate's judge draws synthetic defects on prepared images)."""
        t0 = time.perf_counter()
        cfg = self.info.data
        if prepared:
            rgbs, poses = list(frames_bgr), [None] * len(frames_bgr)
        else:
            posed = [D.prepare_posed(f, cfg) for f in frames_bgr]
            rgbs, poses = [rgb for rgb, _ in posed], [p for _, p in posed]
        batch = np.stack([D.normalize(rgb, cfg) for rgb in rgbs])
        t1 = time.perf_counter()
        outputs = self.session.run(batch)
        t2 = time.perf_counter()
        maps, scores = score_outputs(outputs, self.info.scoring, frame_weights(rgbs, self.info.scoring))
        check_finite(maps, scores)
        if cfg.align and not prepared:  # scored in the part's pose; shown on the frame as it was taken
            maps = [D.map_to_view(m, p, f.shape[:2], cfg) for m, p, f in zip(maps, poses, frames_bgr)]
        t3 = time.perf_counter()
        n = len(frames_bgr)
        timings = {"preprocess_ms": (t1 - t0) * 1e3 / n, "infer_ms": (t2 - t1) * 1e3 / n, "postprocess_ms": (t3 - t2) * 1e3 / n}
        return [Result(s, m, s >= self.threshold, self.threshold, dict(timings)) for s, m in zip(scores, maps)]


class FunctionSession:
    """A Session around any callable batch -> per-scale maps (a model in memory, e.g. right after training)."""

    def __init__(self, run):
        self.run = run


def function_detector(run, data, spec, threshold: float = 0.0) -> AnomalyDetector:
    """A detector for a callable (NCHW float32 batch -> per-scale maps) with its preprocessing and scoring; the
    threshold only sets is_anomaly (evaluation ranks scores and does not use it)."""
    return AnomalyDetector(FunctionSession(run), ModelInfo(data, spec, threshold, {}))


def resolve_model(path: str | Path, backend: str = "auto") -> tuple[Path, str]:
    """(model file, backend kind) for a file or a folder; `auto` prefers an engine when TensorRT can load here."""
    if backend not in BACKENDS:
        raise EdgeAdError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    p = Path(path)
    if p.is_dir():
        kinds = [backend] if backend != "auto" else [k for k in MODEL_FILES if k != "tensorrt" or _tensorrt_usable()]
        found = [(p / MODEL_FILES[k], k) for k in kinds if (p / MODEL_FILES[k]).is_file()]
        if not found:
            wanted = " or ".join(MODEL_FILES[k] for k in kinds)
            raise EdgeAdError(f"no {wanted} in {p}" + (f" (backend {backend})" if backend != "auto" else ""))
        return found[0]
    if not p.is_file():
        raise EdgeAdError(f"model not found: {p}")
    kind = _KIND_BY_SUFFIX.get(p.suffix)
    if kind is None or backend not in ("auto", kind):
        raise EdgeAdError(f"{p}: cannot run a {p.suffix or 'suffix-less'} file with backend {backend}")
    return p, kind


def _tensorrt_usable() -> bool:
    from edge_ad.runtime.tensorrt import tensorrt_version

    return tensorrt_version() is not None


def open_detector(path: str | Path, backend: str = "auto", threads: int = 0,
                  threshold: float | None = None) -> AnomalyDetector:
    """Open a model for inference: an .onnx/.engine (+ model.json), a .pt (torch), or a folder holding one."""
    p, kind = resolve_model(path, backend)
    if kind == "torch":
        from edge_ad.runtime.torch_session import TorchSession

        session = TorchSession(p, threads)
        return AnomalyDetector(session, session.info, threshold)
    manifest = manifest_path(p)
    if kind == "tensorrt" and not manifest.is_file():
        manifest = p.parent / "model.json"  # an `export --format engine` name like model.fp16.<key>.engine
    info = ModelInfo.load(manifest)
    if kind == "onnxruntime":
        from edge_ad.runtime.onnx import OrtSession

        session: Session = OrtSession(p, threads)
    else:
        from edge_ad.runtime.tensorrt import TensorRTSession

        session = TensorRTSession(p)
    try:
        return AnomalyDetector(session, info, threshold)
    except EdgeAdError as e:
        raise EdgeAdError(f"{p} and {manifest.name}: {e}") from None
