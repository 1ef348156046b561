"""Calibration recipes: how `edge_ad calibrate` turns good images of a part into a deployable bundle.

A recipe YAML holds the model sections of an edge_ad config (data, model, augment, train, scoring:
loaded by edge_ad.config into a `Config`) plus the calibration sections below. Every key is checked
against the dataclasses, so a typo is one clear line naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


from edge_ad.config import Config, ConfigError, from_dict, read_yaml, to_dict
from edge_ad.quality import QualityConfig

QUANT_MODES = ("trt", "cpu")
CALIB_METHODS = ("minmax", "percentile", "entropy")
ENGINE_BUILD = ("auto", "always", "never")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass
class CaptureConfig:
    n: int = 200  # good images to collect after rejection (a folder with fewer: all of it)
    min_images: int = 20  # fewer usable images than this: stop with an error before training
    interval_s: float = 0.0  # live cameras: least time between two kept frames (time to move the part)
    frame_timeout_s: float = 10.0  # live cameras: no frame for this long = camera lost
    max_frames: int = 0  # live cameras: give up after this many frames (0: 20 x n)
    keep_rejected: int = 5  # rejected frames saved per reason to <work>/<part>/rejected/ for a look

    def validate(self) -> None:
        _check(self.n >= 2, "capture.n", "must be >= 2")
        _check(self.min_images >= 2, "capture.min_images", "must be >= 2")
        _check(self.interval_s >= 0, "capture.interval_s", "must be >= 0")
        _check(self.frame_timeout_s > 0, "capture.frame_timeout_s", "must be > 0")
        _check(self.max_frames >= 0, "capture.max_frames", "must be >= 0")
        _check(self.keep_rejected >= 0, "capture.keep_rejected", "must be >= 0")


@dataclass
class SplitConfig:
    val_fraction: float = 0.2  # share of the kept images held out to set the threshold
    min_val: int = 4  # at least this many validation images
    seed: int = 0  # the split is a seeded shuffle of the sorted file names: same images, same split

    def validate(self) -> None:
        _check(0 < self.val_fraction < 1, "split.val_fraction", "must be in (0, 1)")
        _check(self.min_val >= 1, "split.min_val", "must be >= 1")


@dataclass
class QuantizeConfig:
    mode: str = "trt"  # trt: symmetric INT8 QDQ (TensorRT and onnxruntime) | cpu: uint8 activations, fastest ORT on x86
    method: str = "percentile"  # calibration: minmax | percentile | entropy
    calib_images: int = 64  # calibration images, chosen evenly from the training split
    exclude: list[str] = field(default_factory=list)  # ONNX node names kept in float

    def validate(self) -> None:
        _check(self.mode in QUANT_MODES, "quantize.mode", f"must be one of {', '.join(QUANT_MODES)}, got {self.mode!r}")
        _check(self.method in CALIB_METHODS, "quantize.method",
               f"must be one of {', '.join(CALIB_METHODS)}, got {self.method!r}")
        _check(self.calib_images >= 8, "quantize.calib_images", "must be >= 8")


@dataclass
class EngineConfig:
    build: str = "auto"  # auto: build when TensorRT is importable, else skip | always | never
    workspace_mb: int = 1024  # TensorRT builder workspace

    def validate(self) -> None:
        _check(self.build in ENGINE_BUILD, "engine.build", f"must be one of {', '.join(ENGINE_BUILD)}, got {self.build!r}")
        _check(self.workspace_mb > 0, "engine.workspace_mb", "must be > 0")


@dataclass
class ReportConfig:
    heatmaps: int = 4  # sample heatmaps in the report: highest-scoring validation goods (and defects)
    histogram_bins: int = 30

    def validate(self) -> None:
        _check(0 <= self.heatmaps <= 32, "report.heatmaps", "must be in [0, 32]")
        _check(5 <= self.histogram_bins <= 200, "report.histogram_bins", "must be in [5, 200]")


@dataclass
class CalibrationSections:
    """The recipe sections that are not part of an edge_ad model config."""

    capture: CaptureConfig = field(default_factory=CaptureConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()


@dataclass
class Recipe:
    """A whole recipe: the model config (train/export settings) and the calibration stages' settings."""

    config: Config = field(default_factory=Config)
    calib: CalibrationSections = field(default_factory=CalibrationSections)
    prune: bool = False  # `prune.enabled`: prune after training, with the model config's prune settings
    name: str = "defaults"  # file the recipe came from

    def to_dict(self) -> dict:
        """Flat YAML-shaped dict (model sections and calibration sections side by side)."""
        d = {**to_dict(self.config), **to_dict(self.calib)}
        d["prune"] = {"enabled": self.prune, **d.get("prune", {})}
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _config_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(Config)}


def recipe_from_dict(raw: dict, name: str = "<dict>") -> Recipe:
    """Split a recipe mapping into model-config sections and calibration sections; validate both."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    model_keys = _config_keys()
    calib_keys = {f.name for f in dataclasses.fields(CalibrationSections)} | {"prune"}
    raw, prune = _split_prune(raw, name, "prune" in model_keys)
    # A section both know (e.g. `prune` once the model config has one) belongs to the model config.
    core = {k: v for k, v in raw.items() if k in model_keys}
    rest = {k: v for k, v in raw.items() if k not in model_keys}
    unknown = sorted(set(rest) - calib_keys)
    if unknown:
        allowed = ", ".join(sorted(model_keys | calib_keys))
        raise ConfigError(f"{name}: {unknown[0]}: unknown section (allowed: {allowed})")
    try:
        cfg = from_dict(Config, core)
        cfg.validate()
        calib = from_dict(CalibrationSections, rest)
        calib.validate()
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    if calib.capture.min_images > calib.capture.n:
        raise ConfigError(f"{name}: capture.min_images ({calib.capture.min_images}) must be <= capture.n ({calib.capture.n})")
    return Recipe(cfg, calib, prune, name)


def _split_prune(raw: dict, name: str, config_has_prune: bool) -> tuple[dict, bool]:
    """Take `enabled` out of the prune section (a calibrate switch); the rest are the model config's prune settings."""
    section = raw.get("prune")
    if section is None:
        return raw, False
    if not isinstance(section, dict):
        raise ConfigError(f"{name}: prune: expected a mapping, got {section!r}")
    section = dict(section)
    enabled = section.pop("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{name}: prune.enabled: expected true or false, got {enabled!r}")
    raw = {k: v for k, v in raw.items() if k != "prune"}
    if section:
        if not config_has_prune:
            raise ConfigError(f"{name}: prune.{next(iter(section))}: this edge_ad has no prune settings (only prune.enabled)")
        raw["prune"] = section
    return raw, enabled


def load_recipe(path: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """Read a recipe YAML (None: built-in defaults, the same as calibration/default.yaml); dotted overrides win."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"recipe not found: {path} (see calibration/*.yaml for templates)")
    raw, name = read_yaml(path, overrides, "recipe")
    return recipe_from_dict(raw, name)
