"""Model/training configuration: dataclasses are the single source of defaults, YAML overrides them.

Every key is checked against the schema so a typo or a wrong type fails with one line naming
the key and the file, instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from edge_ad.errors import EdgeAdError

METHODS = ("rd", "rd_aug", "dual", "gauss")
TEACHERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
IMPORTANCES = ("magnitude", "taylor")


class ConfigError(EdgeAdError):
    """A configuration file or value is invalid."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass
class DataConfig:
    root: str = ""  # MVTec-layout category folder (train/good, test/<type>, ground_truth/<type>)
    image_size: list[int] = field(default_factory=lambda: [256, 256])  # [height, width]
    resize: str = "stretch"  # stretch | letterbox (keep aspect ratio, pad)
    center_crop: list[int] | None = None  # [height, width] taken after resizing, or none
    normalize: str = "imagenet"  # imagenet | per_image (zero-mean/unit-std per image, then imagenet)

    def validate(self) -> None:
        _check(len(self.image_size) == 2 and all(s > 0 and s % 32 == 0 for s in self.image_size),
               "data.image_size", f"must be [height, width], each a positive multiple of 32, got {self.image_size}")
        _check(self.resize in ("stretch", "letterbox"), "data.resize", f"must be stretch or letterbox, got {self.resize!r}")
        _check(self.normalize in ("imagenet", "per_image"), "data.normalize",
               f"must be imagenet or per_image, got {self.normalize!r}")
        if self.center_crop is not None:
            _check(len(self.center_crop) == 2 and all(c % 32 == 0 and c > 0 for c in self.center_crop),
                   "data.center_crop", "must be [height, width], each a positive multiple of 32")
            _check(all(c <= s for c, s in zip(self.center_crop, self.image_size)), "data.center_crop",
                   "must not be larger than data.image_size")

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the tensor the network sees."""
        return tuple(self.center_crop or self.image_size)  # type: ignore[return-value]


@dataclass
class AugmentConfig:
    """Corruptions for rd_aug: the bottleneck sees T(aug(x)), the student must restore T(x)."""

    probability: float = 0.5  # chance that each image in a batch is augmented at all
    color_jitter: float = 0.2  # max relative brightness/contrast/saturation change; 0 disables
    blur: bool = True
    noise_std: float = 0.03  # gaussian pixel noise std on [0,1] images; 0 disables
    cutpaste: bool = True  # paste a patch of the same image elsewhere
    noise_blobs: bool = True  # paste blobs of random texture
    scratches: bool = True  # draw thin random lines
    max_defects: int = 3

    def validate(self) -> None:
        _check(0.0 <= self.probability <= 1.0, "augment.probability", "must be in [0, 1]")
        _check(0.0 <= self.color_jitter <= 1.0, "augment.color_jitter", "must be in [0, 1]")
        _check(0.0 <= self.noise_std <= 0.5, "augment.noise_std", "must be in [0, 0.5]")
        _check(self.max_defects >= 1, "augment.max_defects", "must be >= 1")


@dataclass
class ModelConfig:
    method: str = "rd"  # rd | rd_aug | dual | gauss (the Gaussian map alone: no student, no training)
    teacher: str = "efficientnet_lite0"
    strides: list[int] = field(default_factory=lambda: [4, 8, 16])  # teacher taps for rd / rd_aug
    shallow_strides: list[int] = field(default_factory=lambda: [2, 4])  # dual: texture pair
    deep_strides: list[int] = field(default_factory=lambda: [8, 16])  # dual: semantic pair
    fusion: str = "sum"  # dual: sum | product of the normalised pair maps
    width: int = 64  # student base width (shallowest decoder stage; deeper stages double, capped at 4x)
    bottleneck_blocks: int = 1  # residual blocks in the one-class bottleneck
    gaussian_stride: int = 0  # 0: off; 4/8/16: add a per-location Gaussian map of the teacher's features at that stride
    gaussian_stages: list[int] = field(default_factory=list)  # teacher strides concatenated per location (PaDiM-style),
    # finer ones average-pooled onto the gaussian_stride grid; [] = just the gaussian_stride stage
    gaussian_pool: int = 3  # neighbourhood (odd, in feature cells) averaged before the Gaussian: slow changes show

    def validate(self) -> None:
        _check(self.method in METHODS, "model.method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        _check(self.teacher in TEACHERS, "model.teacher", f"must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        for key in ("strides", "shallow_strides", "deep_strides"):
            vals = getattr(self, key)
            _check(len(vals) >= 1 and all(s in (2, 4, 8, 16) for s in vals) and vals == sorted(set(vals)),
                   f"model.{key}", f"must be increasing values from 2, 4, 8, 16, got {vals}")
        _check(self.fusion in ("sum", "product"), "model.fusion", f"must be sum or product, got {self.fusion!r}")
        _check(8 <= self.width <= 1024, "model.width", "must be in [8, 1024]")
        _check(0 <= self.bottleneck_blocks <= 8, "model.bottleneck_blocks", "must be in [0, 8]")
        _check(self.gaussian_stride in (0, 4, 8, 16), "model.gaussian_stride", "must be 0 (off), 4, 8 or 16")
        stages = self.gaussian_stages
        _check(stages == sorted(set(stages)) and all(s in (2, 4, 8, 16) and s <= self.gaussian_stride for s in stages),
               "model.gaussian_stages",
               f"must be increasing strides from 2, 4, 8, 16, none above gaussian_stride ({self.gaussian_stride}), "
               f"got {self.gaussian_stages}")
        _check(self.gaussian_pool >= 1 and self.gaussian_pool % 2 == 1, "model.gaussian_pool", "must be an odd number >= 1")
        _check(self.method != "gauss" or self.gaussian_stride > 0, "model.gaussian_stride",
               "method gauss needs a stride: 4, 8 or 16 (16 is the usual choice; CLI: --gaussian 16)")


@dataclass
class TrainConfig:
    epochs: int = 20  # bottle rd: 99.0 pixel AUROC at 20 epochs (2 min on 2 cores), 98.9 at 10
    batch_size: int = 16
    lr: float = 0.005
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = library default
    out_dir: str = "runs/model"

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(0 < self.lr < 1, "train.lr", "must be in (0, 1)")
        _check(self.device in ("auto", "cpu", "cuda"), "train.device", "must be auto, cpu or cuda")
        _check(self.threads >= 0, "train.threads", "must be >= 0")


@dataclass
class ScoringConfig:
    blur_sigma: float = 4.0  # Gaussian blur of the anomaly map, in input pixels; 0 disables
    image_score: str = "max"  # max | topk_mean
    topk_fraction: float = 0.01  # fraction of map pixels averaged for topk_mean
    threshold_quantile: float = 0.99  # quantile of good validation scores used as threshold
    threshold_margin: float = 0.1  # threshold = quantile * (1 + margin)

    def validate(self) -> None:
        _check(0 <= self.blur_sigma <= 32, "scoring.blur_sigma", "must be in [0, 32]")
        _check(self.image_score in ("max", "topk_mean"), "scoring.image_score", "must be max or topk_mean")
        _check(0 < self.topk_fraction <= 1, "scoring.topk_fraction", "must be in (0, 1]")
        _check(0 < self.threshold_quantile <= 1, "scoring.threshold_quantile", "must be in (0, 1]")
        _check(self.threshold_margin >= 0, "scoring.threshold_margin", "must be >= 0")


@dataclass
class PruneConfig:
    """Structural pruning of the students (`edge_ad prune`); the teacher is never pruned."""

    ratio: float = 0.5  # fraction of channels removed from every prunable student layer
    steps: int = 3  # reach the ratio in this many equal steps, recovering after each
    importance: str = "magnitude"  # magnitude (L2 norm of weights) | taylor (|weight x gradient| of the loss)
    finetune_epochs: int = 2  # recovery distillation epochs after each step
    lr: float = 0.001  # recovery learning rate (Adam with the training betas and weight decay)
    taylor_batches: int = 4  # batches whose gradients are summed before each taylor step
    round_to: int = 8  # keep channel counts multiples of this (GPU-friendly); 1 = exact ratio

    def validate(self) -> None:
        _check(0.0 <= self.ratio < 1.0, "prune.ratio", f"must be in [0, 1), got {self.ratio}")
        _check(self.steps >= 1, "prune.steps", "must be >= 1")
        _check(self.importance in IMPORTANCES, "prune.importance",
               f"must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        _check(self.finetune_epochs >= 0, "prune.finetune_epochs", "must be >= 0")
        _check(0 < self.lr < 1, "prune.lr", "must be in (0, 1)")
        _check(self.taylor_batches >= 1, "prune.taylor_batches", "must be >= 1")
        _check(self.round_to >= 1, "prune.round_to", "must be >= 1 (1 disables rounding)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()

    @property
    def distill_epochs(self) -> int:
        """Epochs of distillation actually run: none for gauss, which has no student."""
        return 0 if self.model.method == "gauss" else self.train.epochs


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (allowed: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, f"{prefix}{key}.")
            continue
        if not _type_ok(value, tp):
            shown = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
            raise ConfigError(f"{prefix}{key}: expected {shown}, got {value!r}")
        kwargs[key] = float(value) if tp is float else value
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain dict (for YAML/JSON manifests and checkpoints)."""
    return dataclasses.asdict(cfg)


def read_yaml(path: str | Path | None, overrides: dict | None = None, what: str = "config") -> tuple[dict, str]:
    """A YAML mapping (empty when path is None) with dotted overrides applied, and its name for messages."""
    raw: dict = {}
    where = "defaults"
    if path is not None:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise ConfigError(f"{what} file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw, where


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Load a YAML config (or defaults when path is None), apply dotted overrides, validate."""
    raw, where = read_yaml(path, overrides)
    try:
        cfg = from_dict(Config, raw)
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def config_from_dict(raw: dict) -> Config:
    """Rebuild a validated Config stored in a checkpoint or bundle manifest."""
    cfg = from_dict(Config, raw)
    cfg.validate()
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
