"""Calibration recipes: how `edge_ad calibrate` turns good images of a part into a deployable bundle.

A recipe YAML holds the model sections of an edge_ad config (data, model, augment, train, scoring:
loaded by edge_ad.config into a `Config`) plus the calibration sections below. Every key is checked
against the dataclasses, so a typo is one clear line naming the key and the file. Recipes shipped with
edge_ad (edge_ad/calibrate/recipes/*.yaml) are chosen by name: `--recipe textured`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_ad.calibrate.quality import QualityConfig
from edge_ad.config import Config, ConfigError, build, check, check_choice, read_yaml, to_dict
from edge_ad.deploy.quantize import CALIB_METHODS, QUANT_MODES

ENGINE_BUILD = ("auto", "always", "never")
RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = "default"


@dataclass
class CaptureConfig:
    n: int = 0  # good images to keep; 0 = every image of a folder (up to max_images), camera_n from a camera
    max_images: int = 1000  # n = 0 with a folder: at most this many
    camera_n: int = 300  # n = 0 with a camera or video: frames to keep
    min_images: int = 20  # fewer usable images than this: stop with an error before training
    interval_s: float = 0.0  # live cameras: least time between two kept frames (time to move the part)
    frame_timeout_s: float = 10.0  # live cameras: no frame for this long = camera lost
    max_frames: int = 0  # live cameras: give up after this many frames (0: 20 x n)
    keep_rejected: int = 5  # rejected frames saved per reason to <work>/<part>/rejected/ for a look

    def validate(self) -> None:
        check(self.n == 0 or self.n >= 2, "n", "must be 0 (auto) or >= 2")
        check(self.max_images >= 2 and self.camera_n >= 2, "max_images", "max_images and camera_n must be >= 2")
        check(self.min_images >= 2, "min_images", "must be >= 2")
        check(self.interval_s >= 0, "interval_s", "must be >= 0")
        check(self.frame_timeout_s > 0, "frame_timeout_s", "must be > 0")
        check(self.max_frames >= 0, "max_frames", "must be >= 0")
        check(self.keep_rejected >= 0, "keep_rejected", "must be >= 0")


@dataclass
class SplitConfig:
    val_fraction: float = 0.2  # share of the kept images held out to set the threshold
    min_val: int = 4  # at least this many validation images
    seed: int = 0  # the split is a seeded shuffle of the sorted file names: same images, same split

    def validate(self) -> None:
        check(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        check(self.min_val >= 1, "min_val", "must be >= 1")


@dataclass
class QuantizeConfig:
    mode: str = "trt"  # trt: symmetric INT8 QDQ (TensorRT and onnxruntime) | cpu: uint8 activations, fastest ORT on x86
    method: str = "percentile"  # calibration: minmax | percentile | entropy
    calib_images: int = 64  # calibration images, chosen evenly from the training split
    exclude: list[str] = field(default_factory=list)  # ONNX node names kept in float

    def validate(self) -> None:
        check_choice(self.mode, "mode", QUANT_MODES)
        check_choice(self.method, "method", CALIB_METHODS)
        check(self.calib_images >= 8, "calib_images", "must be >= 8")


@dataclass
class EngineConfig:
    build: str = "auto"  # auto: build when TensorRT is importable, else skip | always | never
    workspace_mb: int = 1024  # TensorRT builder workspace

    def validate(self) -> None:
        check_choice(self.build, "build", ENGINE_BUILD)
        check(self.workspace_mb > 0, "workspace_mb", "must be > 0")


@dataclass
class ReportConfig:
    heatmaps: int = 4  # sample heatmaps in the report: highest-scoring validation goods (and defects)
    histogram_bins: int = 30

    def validate(self) -> None:
        check(0 <= self.heatmaps <= 32, "heatmaps", "must be in [0, 32]")
        check(5 <= self.histogram_bins <= 200, "histogram_bins", "must be in [5, 200]")


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
        check(not self.capture.n or self.capture.min_images <= self.capture.n, "capture.min_images",
              f"({self.capture.min_images}) must be <= capture.n ({self.capture.n})")


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
    return Recipe(build(Config, core, name), build(CalibrationSections, rest, name), prune, name)


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


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with edge_ad (usable as `--recipe NAME`)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path | None) -> Path:
    """A recipe file from a path, or from the name of a packaged recipe (None: the default recipe)."""
    if name_or_path is None:
        return RECIPES_DIR / f"{DEFAULT_RECIPE}.yaml"
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix == "" and p.parent == Path(".") and (RECIPES_DIR / f"{p.name}.yaml").is_file():
        return RECIPES_DIR / f"{p.name}.yaml"
    raise ConfigError(f"recipe not found: {name_or_path} (a YAML file, or one of: {', '.join(packaged_recipes())})")


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with edge_ad (usable as `--recipe NAME`)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path | None) -> Path:
    """A recipe file from a path, or from the name of a packaged recipe (None: the default recipe)."""
    if name_or_path is None:
        return RECIPES_DIR / f"{DEFAULT_RECIPE}.yaml"
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix == "" and p.parent == Path(".") and (RECIPES_DIR / f"{p.name}.yaml").is_file():
        return RECIPES_DIR / f"{p.name}.yaml"
    raise ConfigError(f"recipe not found: {name_or_path} (a YAML file, or one of: {', '.join(packaged_recipes())})")


def load_recipe(name_or_path: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """Read a recipe by path or packaged name (None: the default recipe); dotted overrides win."""
    raw, name = read_yaml(recipe_path(name_or_path), overrides, "recipe")
    return recipe_from_dict(raw, name)
