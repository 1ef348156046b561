"""model.json: the runtime manifest beside every deployed graph (preprocessing, scoring, threshold, provenance).

It is the only thing the runtime needs besides the graph, so the station never reads a training config.
The TensorRT build record is a separate file (see edge_ad.deploy.engine); this one never holds engine facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_ad.config import DataConfig, to_dict
from edge_ad.schema import build, check
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json
from edge_ad.scoring import ScoringSpec

MANIFEST_SUFFIX = ".json"  # model.onnx -> model.json
LEGACY_ENGINE_KEYS = ("trt_version", "gpu_name", "engine")  # what calibrate merged into model.json before the split


def manifest_path(model_path: str | Path) -> Path:
    """model.onnx / model.engine -> model.json beside it."""
    return Path(model_path).with_suffix(MANIFEST_SUFFIX)


@dataclass
class ModelInfo:
    """Everything the runtime needs to use a graph: preprocessing, scoring and the alarm threshold."""

    data: DataConfig
    scoring: ScoringSpec
    threshold: float
    meta: dict = field(default_factory=dict)  # provenance: data root, method, training time, versions

    def to_dict(self) -> dict:
        return {"data": to_dict(self.data), "scoring": self.scoring.to_dict(), "threshold": self.threshold,
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        """Checked in edge_ad.schema's style (one ConfigError naming the key), never a later IndexError."""
        if isinstance(d, dict):  # a bundle from before the build-record split carries engine facts here: not ours
            d = {k: v for k, v in d.items() if k not in LEGACY_ENGINE_KEYS}
        return build(cls, d)

    def validate(self) -> None:
        check(tuple(self.scoring.out_size) == tuple(self.data.input_size), "scoring.out_size",
              f"{list(self.scoring.out_size)} differs from the input size {list(self.data.input_size)}")

    @classmethod
    def load(cls, path: str | Path) -> "ModelInfo":
        p = Path(path)
        if not p.is_file():
            raise EdgeAdError(f"model manifest not found: {p} (it is written next to the model by `edge_ad export`)")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, ValueError, EdgeAdError) as e:
            raise EdgeAdError(f"{p}: invalid model manifest ({e})") from None

    def save(self, model_path: str | Path) -> Path:
        """Write model.json beside `model_path` (atomically)."""
        return atomic_write_json(manifest_path(model_path), self.to_dict())
