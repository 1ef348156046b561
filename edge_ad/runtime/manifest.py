"""model.json: the runtime manifest beside every deployed graph (preprocessing, scoring, threshold, provenance).

It is the only thing the runtime needs besides the graph, so the station never reads a training config.
The TensorRT build record is a separate file (see edge_ad.deploy.engine); this one never holds engine facts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from edge_ad.config import DataConfig, from_dict, to_dict, validate_tree
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json
from edge_ad.scoring import ScoringSpec

MANIFEST_SUFFIX = ".json"  # model.onnx -> model.json


def manifest_path(model_path: str | Path) -> Path:
    """model.onnx / model.engine -> model.json beside it."""
    return Path(model_path).with_suffix(MANIFEST_SUFFIX)


@dataclass
class ModelInfo:
    """Everything the runtime needs to use a graph: preprocessing, scoring and the alarm threshold."""

    data: DataConfig
    scoring: ScoringSpec
    threshold: float
    meta: dict

    def to_dict(self) -> dict:
        return {"data": to_dict(self.data), "scoring": self.scoring.to_dict(), "threshold": self.threshold,
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        """Checked: a wrong key, type or inconsistent scoring field is an EdgeAdError, never a later IndexError."""
        if not isinstance(d, dict):
            raise EdgeAdError(f"expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("data", "scoring", "threshold") if k not in d]
        if missing:
            raise EdgeAdError(f"missing {', '.join(missing)}")
        data = validate_tree(from_dict(DataConfig, d["data"], "data."), "data.")
        threshold = d["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise EdgeAdError(f"threshold: expected a finite number, got {threshold!r}")
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise EdgeAdError(f"meta: expected an object, got {type(meta).__name__}")
        spec = ScoringSpec.from_dict(d["scoring"])
        if tuple(spec.out_size) != tuple(data.input_size):
            raise EdgeAdError(f"scoring.out_size {list(spec.out_size)} differs from the input size {list(data.input_size)}")
        return cls(data, spec, float(threshold), meta)

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
