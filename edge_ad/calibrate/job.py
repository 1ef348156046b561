"""One calibration job: what was asked (Job), what each stage produced (typed results) and where it is
recorded (State, <work>/<part>/state.json, written atomically after every stage so a rerun resumes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge_ad.calibrate.recipe import Recipe
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json
from edge_ad.station.config import CameraConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_FORMAT = "edge_ad-calibration-2"
CAPTURED = "captured"  # never deleted by any stage, failure or --restart
REJECTED = "rejected"
LOCK_FILE = ".lock"

Hook = Callable[[str, dict], None]  # (event, info): "start"/"done" per stage, "kept" per captured frame


class CalibrationError(EdgeAdError):
    """Calibration cannot go on; finished stages and captured images are kept for a rerun."""


def say(msg: str) -> None:
    """Progress for the person at the line (stdout, flushed: calibrate runs for minutes)."""
    print(msg, flush=True)


@dataclass
class Job:
    """What one `edge_ad calibrate` run was asked to do."""

    part: str
    recipe: Recipe
    source: str | None = None
    defects: Path | None = None
    parts_root: Path = Path("parts")
    work: Path = Path("calib_work")
    camera: CameraConfig = field(default_factory=CameraConfig)
    roi: list[int] | None = None  # [x, y, w, h] crop of every frame, as the station does
    force: bool = False  # go on below the minimum validation images (the report says so)

    @property
    def dir(self) -> Path:
        return self.work / self.part

    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def fingerprint(self) -> str:
        """Everything that changes the outputs of the stages after capture."""
        return json.dumps({"recipe": self.recipe.fingerprint(), "defects": str(self.defects or ""), "roi": self.roi,
                           "force": self.force})


# ----------------------------------------------------------------------------- typed stage results


@dataclass
class CaptureResult:
    images: int
    new: int
    frames: int
    rejected: dict[str, int]
    unreadable: list[str]
    aspect_spread: float
    warnings: list[str]
    dir: str
    rejected_dir: str = ""
    relative: dict[str, Any] = field(default_factory=dict)  # the set's own exposure / sharpness statistics


@dataclass
class SplitResult:
    root: str  # MVTec-layout dataset/ folder (train/good links)
    train: int
    val: int
    val_list: str
    data: dict[str, Any] = field(default_factory=dict)  # dotted data.* overrides chosen from the images (auto)
    why: list[str] = field(default_factory=list)
    forced: str = ""  # why the run went on below split.min_val (--force)


@dataclass
class TrainResult:
    model: str
    method: str
    epochs: int
    warnings: list[str]
    selection: dict[str, Any] = field(default_factory=dict)  # candidates and why the model was picked
    steps: int = 0
    seconds: float = 0.0


@dataclass
class PruneResult:
    model: str
    skipped: str = ""


@dataclass
class ExportResult:
    onnx: str
    json: str


@dataclass
class QuantizeResult:
    onnx: str  # the graph the bundle deploys (INT8 or FP32, whichever is fastest within the accuracy bounds)
    json: str
    cache: str  # TensorRT calibration cache ("" when none was written)
    calib_images: int
    precision: str = "int8"
    variant: str = ""  # fp32 | int8_trt | int8_cpu
    timings: dict[str, Any] = field(default_factory=dict)  # per variant: ms, accuracy deltas, accepted
    why: str = ""


@dataclass
class ThresholdResult:
    threshold: float
    source: str
    metrics: dict[str, Any]
    model_json: str
    fp32_json: str
    scores: str
    readiness: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineResult:
    file: str = ""
    build_record: str = ""
    trt_version: str = ""
    gpu_name: str = ""
    skipped: str = ""
    max_score_diff_vs_ort: float = 0.0
    max_score_diff_rel_threshold: float = 0.0


@dataclass
class ReportResult:
    dir: str
    files: list[str]


@dataclass
class BundleResult:
    path: str
    version: int


RESULTS: dict[str, type] = {"capture": CaptureResult, "split": SplitResult, "train": TrainResult, "prune": PruneResult,
                            "export": ExportResult, "quantize": QuantizeResult, "threshold": ThresholdResult,
                            "engine": EngineResult, "report": ReportResult, "bundle": BundleResult}
STAGES = tuple(RESULTS)
R = TypeVar("R")


class State:
    """state.json: which stages finished, their typed results and times."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.doc = self._empty(fingerprint)
        self.loaded = False
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
                self.loaded = isinstance(doc, dict) and isinstance(doc.get("stages"), dict)
                if self.loaded:
                    self.doc = doc
            except (OSError, ValueError):
                log.warning("%s is unreadable; starting the stages over (captured images are kept)", path)

    @staticmethod
    def _empty(fingerprint: str) -> dict:
        return {"format": STATE_FORMAT, "fingerprint": fingerprint, "complete": False, "stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.doc["stages"]

    def get(self, stage: str) -> Any:
        """The typed result of a finished stage."""
        cls = RESULTS[stage]
        raw = self.doc["stages"][stage]["outputs"]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def seconds(self) -> dict[str, float]:
        return {s: self.doc["stages"][s]["seconds"] for s in STAGES if self.done(s)}

    def record(self, stage: str, result: Any, seconds: float) -> None:
        self.doc["stages"][stage] = {"outputs": dataclasses.asdict(result), "seconds": round(seconds, 2),
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.save()

    def reset(self, fingerprint: str) -> None:
        self.doc = self._empty(fingerprint)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.doc)
