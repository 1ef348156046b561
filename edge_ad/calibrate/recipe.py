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
from typing import Any

from edge_ad.calibrate.quality import QualityConfig
from edge_ad.config import Config, ConfigError, build, check, check_choice, read_yaml, to_dict
from edge_ad.deploy.engine import DEFAULT_WORKSPACE_MB
from edge_ad.deploy.quantize import CALIB_METHODS, DEFAULT_CALIB_METHOD, DEFAULT_MODE, QUANT_MODES

ENGINE_BUILD = ("auto", "always", "never")
RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = "default"


@dataclass
class CaptureConfig:
    """How many good images to keep, from a folder or a camera."""

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
    """Which kept images train the model and which judge it and set the threshold."""

    val_fraction: float = 0.2  # share of the kept images held out to choose the model and set the threshold
    min_val: int = 30  # wanted validation images (with 0 false alarms in 30, the 95 % interval of the false-alarm
    #                    rate still reaches 12 %); a small set holds out up to max_val_fraction to get them
    max_val_fraction: float = 0.4  # a small set holds out at most this share (the model still needs most of them)
    min_val_few: int = 20  # fewer validation images than this: stop unless --force (0 in 20 allows up to 17 %);
    #                        between this and min_val it goes on and the report states the wider interval
    seed: int = 0  # the split is a seeded shuffle of the sorted file names: same images, same split

    def validate(self) -> None:
        check(0 < self.val_fraction < 1, "val_fraction", "must be in (0, 1)")
        check(self.min_val >= 1, "min_val", "must be >= 1")
        check(self.val_fraction <= self.max_val_fraction < 1, "max_val_fraction", "must be in [val_fraction, 1)")
        check(self.min_val_few >= 1, "min_val_few", "must be >= 1 (a value above min_val acts as min_val)")


def _default_candidates() -> dict[str, dict[str, Any]]:
    return {"rd": {}, "gauss": dict(GAUSS_CANDIDATE)}


GAUSS_CANDIDATE = {"model.method": "gauss", "model.gaussian_stride": 16, "model.gaussian_stages": [4, 8, 16],
                   "model.teacher": "efficientnet_lite2"}


@dataclass
class SelectConfig:
    """How calibrate picks the model when the recipe does not fix it: candidates judged on held-out goods."""

    enabled: bool = True  # false: train the model sections of the recipe as written
    candidates: dict[str, dict[str, Any]] = field(default_factory=_default_candidates)  # name -> dotted overrides
    min_gain: float = 0.005  # a later candidate must beat an earlier one by this much (ties keep the earlier)
    seed: int = 1  # synthetic defects: same images, same defects
    max_images: int = 80  # held-out images judged (spread evenly), each with a defect of every size
    pool_minutes: bool = True  # a skipped candidate leaves its train.max_minutes to the ones that are trained

    def validate(self) -> None:
        check(not self.enabled or len(self.candidates) >= 1, "candidates", "needs at least one candidate")
        check(0 <= self.min_gain < 0.5, "min_gain", "must be in [0, 0.5)")
        check(self.max_images >= 4, "max_images", "must be >= 4")


@dataclass
class AutoConfig:
    """Input settings chosen from the good images (edge_ad.calibrate.auto); false keeps the recipe's data section."""

    input_size: bool = True  # data.image_size from the part's aspect ratio
    lighting: bool = True  # data.normalize and data.gain from the brightness of the good images
    align: bool = True  # data.align + align_box when the part moves and turning it level holds it in one pose
    frame_mask: bool = True  # scoring.frame_mask auto when the part moves: the map counts on the part as found in
    #                          each frame, not on the loose region it sweeps (a speck on the ground beside it)

    def validate(self) -> None:
        pass


@dataclass
class ReadinessConfig:
    """When a bundle is ready to inspect: held-out goods pass, synthetic defects are caught."""

    max_false_alarm_rate: float = 0.05  # leave-one-out estimate on the validation goods
    min_image_auroc: float = 0.8  # held-out goods vs synthetic defects of all sizes (on the part, down to low
    # contrast: benchmarks/results/calibrate_agreement.md has where the real test splits put this floor)
    min_detection_large: float = 0.4  # share of large synthetic defects at or above the threshold: fails when the
    # top of its 95 % interval is under it (synthetic detection under-predicts real; separation is min_image_auroc)
    min_pixel_auroc: float = 0.9  # synthetic defects on the part: pixel AUROC of the maps (localisation)
    min_aupro: float = 0.73  # ... and their AUPRO (each defect found as a region; calibrate_agreement.md: the real
    # splits with pixel AUROC >= 95 scored 0.76 and up, the one at 83 scored 0.70)
    max_peak_off_part: float = 0.5  # share of held-out good images whose map peaks off the part (on the ground)

    def validate(self) -> None:
        check(0 <= self.max_false_alarm_rate <= 1, "max_false_alarm_rate", "must be in [0, 1]")
        check(0 <= self.min_image_auroc <= 1, "min_image_auroc", "must be in [0, 1]")
        check(0 <= self.min_detection_large <= 1, "min_detection_large", "must be in [0, 1]")
        check(0 <= self.min_pixel_auroc <= 1, "min_pixel_auroc", "must be in [0, 1]")
        check(0 <= self.min_aupro <= 1, "min_aupro", "must be in [0, 1]")
        check(0 <= self.max_peak_off_part <= 1, "max_peak_off_part", "must be in [0, 1]")


VARIANTS = ("fp32", "int8_trt", "int8_cpu")


@dataclass
class QuantizeConfig:
    """INT8 graphs: how they are calibrated, and which one is deployed."""

    mode: str = DEFAULT_MODE  # INT8 mode when `variants` is empty: trt (symmetric, TensorRT and onnxruntime) | cpu (uint8 activations)
    method: str = DEFAULT_CALIB_METHOD  # calibration: minmax | percentile | entropy
    calib_images: int = 64  # calibration images, chosen evenly from the training split
    exclude: list[str] = field(default_factory=list)  # ONNX node names kept in float
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))  # graphs timed on this machine; the fastest
    #                                       within the accuracy bounds is deployed ([]: INT8 in `mode`, untimed)
    max_auroc_drop: float = 0.005  # an INT8 graph is within bounds when its held-out AUROCs drop at most this much
    timing_runs: int = 30  # timed inferences per variant (after warm-up)

    def validate(self) -> None:
        check_choice(self.mode, "mode", QUANT_MODES)
        check_choice(self.method, "method", CALIB_METHODS)
        check(self.calib_images >= 8, "calib_images", "must be >= 8")
        for v in self.variants:
            check_choice(v, "variants", VARIANTS)
        check(0 <= self.max_auroc_drop < 1, "max_auroc_drop", "must be in [0, 1)")
        check(self.timing_runs >= 3, "timing_runs", "must be >= 3")


@dataclass
class EngineConfig:
    """The TensorRT engine, built on the device that runs it."""

    build: str = "auto"  # auto: build when TensorRT is importable, else skip | always | never
    workspace_mb: int = DEFAULT_WORKSPACE_MB  # TensorRT builder workspace (MiB)

    def validate(self) -> None:
        check_choice(self.build, "build", ENGINE_BUILD)
        check(self.workspace_mb > 0, "workspace_mb", "must be > 0")


@dataclass
class ReportConfig:
    """What the calibration report shows."""

    heatmaps: int = 4  # sample heatmaps in the report: highest-scoring validation goods (and defects)
    histogram_bins: int = 30  # bins of the score histogram

    def validate(self) -> None:
        check(0 <= self.heatmaps <= 32, "heatmaps", "must be in [0, 32]")
        check(5 <= self.histogram_bins <= 200, "histogram_bins", "must be in [5, 200]")


@dataclass
class CalibrationSections:
    """The recipe sections that are not part of an edge_ad model config."""

    capture: CaptureConfig = field(default_factory=CaptureConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self) -> None:
        check(not self.capture.n or self.capture.min_images <= self.capture.n, "capture.min_images",
              f"({self.capture.min_images}) must be <= capture.n ({self.capture.n})")


@dataclass
class Recipe:
    """A whole recipe: the model config (train/export settings) and the calibration stages' settings."""

    config: Config = field(default_factory=lambda: calibrate_defaults())
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
    base = to_dict(calibrate_defaults())
    for section, values in core.items():  # the recipe's keys on top of calibrate's own defaults
        base[section] = {**base[section], **values} if isinstance(values, dict) else values
    return Recipe(build(Config, base, name), build(CalibrationSections, rest, name), prune, name)


CALIBRATE_TRAIN = {"min_steps": 500, "max_minutes": 3.5}  # calibrate's schedule: enough steps on few images, bounded time


def calibrate_defaults() -> Config:
    """The model config calibrate starts from: edge_ad's defaults with calibrate's training schedule."""
    cfg = Config()
    for key, value in CALIBRATE_TRAIN.items():
        setattr(cfg.train, key, value)
    return cfg


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


def load_recipe(name_or_path: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """Read a recipe by path or packaged name (None: the default recipe); dotted overrides win."""
    raw, name = read_yaml(recipe_path(name_or_path), overrides, "recipe")
    return recipe_from_dict(raw, name)
