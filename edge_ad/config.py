"""Model/training configuration: dataclasses are the single source of defaults, YAML overrides them.

Validated in edge_ad.schema's one style (the same for recipes, station configs and model.json), re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_ad.errors import ConfigError, EdgeAdError
from edge_ad.methods import get_method, method_names
from edge_ad.schema import build, check, check_choice, from_dict, validate_tree
from edge_ad.scoring import FUSIONS, IMAGE_SCORES, ScoringSpec

TEACHERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
IMPORTANCES = ("magnitude", "taylor")
STRIDES = (2, 4, 8, 16)
GAUSSIAN_STRIDES = (0, 4, 8, 16)  # model.gaussian_stride: 0 is off

__all__ = ["ConfigError", "Config", "build", "check", "check_choice", "from_dict", "load_config", "validate_tree"]


RESIZE_MODES = ("stretch", "letterbox")
NORMALIZATIONS = ("imagenet", "per_image")
REGION_MODES = ("auto", "off")
FRAME_MASK_MODES = ("auto", "on", "off")


@dataclass
class DataConfig:
    """How images become the network input: size, resizing, normalisation, gain (the one preprocessing)."""

    root: str = ""  # MVTec-layout category folder (train/good, test/<type>, ground_truth/<type>)
    image_size: list[int] = field(default_factory=lambda: [256, 256])  # [height, width]
    resize: str = "stretch"  # stretch | letterbox (keep aspect ratio, pad)
    center_crop: list[int] | None = None  # [height, width] taken after resizing, or none
    normalize: str = "imagenet"  # imagenet | per_image (zero-mean/unit-std per image, then imagenet)
    gain: float = 1.0  # pixel values are multiplied by this before normalising (a dark part brought to normal range)
    denoise: float = 0.0  # Gaussian blur sigma (input pixels) before the gain: sensor noise is not amplified into texture
    align: bool = False  # turn each frame so the part is level and centred before resizing (a part in a random pose)
    align_box: list[float] | None = None  # with align: [y0, y1, x0, x1] (fractions) of the aligned frame the input shows

    def validate(self) -> None:
        check(len(self.image_size) == 2 and all(s > 0 and s % 32 == 0 for s in self.image_size),
              "image_size", f"must be [height, width], each a positive multiple of 32, got {self.image_size}")
        check_choice(self.resize, "resize", RESIZE_MODES)
        check_choice(self.normalize, "normalize", NORMALIZATIONS)
        check(0.1 <= self.gain <= 16, "gain", f"must be in [0.1, 16], got {self.gain}")
        check(0 <= self.denoise <= 4, "denoise", f"must be in [0, 4] (pixels), got {self.denoise}")
        if self.align:
            check(self.resize == "stretch" and self.center_crop is None, "align",
                  "turns and crops the frame itself: use it with resize: stretch and no center_crop")
        if self.align_box is not None:
            b = self.align_box
            check(self.align and len(b) == 4 and 0 <= b[0] < b[1] <= 1 and 0 <= b[2] < b[3] <= 1, "align_box",
                  f"must be [y0, y1, x0, x1] with 0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1, with align on; got {b}")
        if self.center_crop is not None:
            check(len(self.center_crop) == 2 and all(c % 32 == 0 and c > 0 for c in self.center_crop),
                  "center_crop", "must be [height, width], each a positive multiple of 32")
            check(all(c <= s for c, s in zip(self.center_crop, self.image_size)), "center_crop",
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
    blur: bool = True  # random Gaussian blur
    noise_std: float = 0.03  # gaussian pixel noise std on [0,1] images; 0 disables
    cutpaste: bool = True  # paste a patch of the same image elsewhere
    noise_blobs: bool = True  # paste blobs of random texture
    scratches: bool = True  # draw thin random lines
    max_defects: int = 3  # synthetic defects per augmented image, at most

    def validate(self) -> None:
        check(0.0 <= self.probability <= 1.0, "probability", "must be in [0, 1]")
        check(0.0 <= self.color_jitter <= 1.0, "color_jitter", "must be in [0, 1]")
        check(0.0 <= self.noise_std <= 0.5, "noise_std", "must be in [0, 0.5]")
        check(self.max_defects >= 1, "max_defects", "must be >= 1")


@dataclass
class ModelConfig:
    """The network: method, frozen teacher and its taps, student size, the optional Gaussian map."""

    method: str = "rd"  # a name in edge_ad.methods: rd | rd_aug | dual | gauss
    teacher: str = "efficientnet_lite0"  # frozen ImageNet teacher: efficientnet_lite0 | 1 | 2 (bigger: slower, finer)
    strides: list[int] = field(default_factory=lambda: [4, 8, 16])  # teacher taps for rd / rd_aug
    shallow_strides: list[int] = field(default_factory=lambda: [2, 4])  # dual: texture pair
    deep_strides: list[int] = field(default_factory=lambda: [8, 16])  # dual: semantic pair
    fusion: str = ScoringSpec.fusion  # dual: sum | product of the normalised pair maps
    width: int = 64  # student base width (shallowest decoder stage; deeper stages double, capped at 4x)
    bottleneck_blocks: int = 1  # residual blocks in the one-class bottleneck
    gaussian_stride: int = 0  # 0: off; 4/8/16: add a per-location Gaussian map of the teacher's features at that stride
    gaussian_stages: list[int] = field(default_factory=list)  # teacher strides concatenated per location (PaDiM-style),
    # finer ones average-pooled onto the gaussian_stride grid; [] = just the gaussian_stride stage
    gaussian_pool: int = 3  # neighbourhood (odd, in feature cells) averaged before the Gaussian: slow changes show

    def validate(self) -> None:
        method = get_method(self.method)
        check_choice(self.teacher, "teacher", TEACHERS)
        for key in ("strides", "shallow_strides", "deep_strides"):
            vals = getattr(self, key)
            check(len(vals) >= 1 and all(s in STRIDES for s in vals) and vals == sorted(set(vals)),
                  key, f"must be increasing values from {', '.join(map(str, STRIDES))}, got {vals}")
        check_choice(self.fusion, "fusion", FUSIONS)
        check(8 <= self.width <= 1024, "width", "must be in [8, 1024]")
        check(0 <= self.bottleneck_blocks <= 8, "bottleneck_blocks", "must be in [0, 8]")
        check(self.gaussian_stride in GAUSSIAN_STRIDES, "gaussian_stride", "must be 0 (off), 4, 8 or 16")
        stages = self.gaussian_stages
        check(stages == sorted(set(stages)) and all(s in STRIDES and s <= self.gaussian_stride for s in stages),
              "gaussian_stages", f"must be increasing strides from {', '.join(map(str, STRIDES))}, none above "
              f"gaussian_stride ({self.gaussian_stride}), got {self.gaussian_stages}")
        check(self.gaussian_pool >= 1 and self.gaussian_pool % 2 == 1, "gaussian_pool", "must be an odd number >= 1")
        check(not method.needs_gaussian or self.gaussian_stride > 0, "gaussian_stride",
              f"method {self.method} needs a stride: 4, 8 or 16 (16 is the usual choice; CLI: --gaussian 16)")


@dataclass
class TrainConfig:
    """The distillation schedule and where the model is written."""

    epochs: int = 20  # passes over the training images (benchmarks/results/accuracy.md for the measured choice)
    min_steps: int = 0  # at least this many optimizer steps: more epochs when there are few images (0: off)
    max_minutes: float = 0.0  # stop after the epoch that passes this much training time (0: no limit)
    batch_size: int = 16  # images per optimizer step
    lr: float = 0.005  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    seed: int = 0  # same images + same seed = same model (on the same machine)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = library default
    out_dir: str = "runs/model"  # folder for model.pt, checkpoint.pt, config.yaml and history.json

    def validate(self) -> None:
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.min_steps >= 0, "min_steps", "must be >= 0")
        check(self.max_minutes >= 0, "max_minutes", "must be >= 0 (0: no limit)")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(0 < self.lr < 1, "lr", "must be in (0, 1)")
        check_choice(self.device, "device", ("auto", "cpu", "cuda"))
        check(self.threads >= 0, "threads", "must be >= 0")


@dataclass
class ScoringConfig:
    """From maps to a score and an alarm threshold."""

    blur_sigma: float = ScoringSpec.blur_sigma  # Gaussian blur of the anomaly map, in input pixels; 0 disables
    image_score: str = ScoringSpec.image_score  # max | topk_mean
    topk_fraction: float = ScoringSpec.topk_fraction  # fraction of map pixels averaged for topk_mean
    threshold_quantile: float = 0.99  # quantile of good validation scores used as threshold
    threshold_margin: float = 0.1  # threshold = quantile * (1 + margin)
    region: str = "auto"  # auto: learn where the part is from the good images and weight the map by it | off
    frame_mask: str = "off"  # auto: also weight each frame's map by the part found in it, when the good images show
    #                          that mask reliably and the learnt region is much larger than the part | on | off

    def validate(self) -> None:
        check(0 <= self.blur_sigma <= 32, "blur_sigma", "must be in [0, 32]")
        check_choice(self.region, "region", REGION_MODES)
        check_choice(self.frame_mask, "frame_mask", FRAME_MASK_MODES)
        check_choice(self.image_score, "image_score", IMAGE_SCORES)
        check(0 < self.topk_fraction <= 1, "topk_fraction", "must be in (0, 1]")
        check(0 < self.threshold_quantile <= 1, "threshold_quantile", "must be in (0, 1]")
        check(self.threshold_margin >= 0, "threshold_margin", "must be >= 0")


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
        check(0.0 <= self.ratio < 1.0, "ratio", f"must be in [0, 1), got {self.ratio}")
        check(self.steps >= 1, "steps", "must be >= 1")
        check_choice(self.importance, "importance", IMPORTANCES)
        check(self.finetune_epochs >= 0, "finetune_epochs", "must be >= 0")
        check(0 < self.lr < 1, "lr", "must be in (0, 1)")
        check(self.taylor_batches >= 1, "taylor_batches", "must be >= 1")
        check(self.round_to >= 1, "round_to", "must be >= 1 (1 disables rounding)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    @property
    def distill_epochs(self) -> int:
        """Epochs of distillation asked for (before min_steps): none for a method without a student."""
        return self.train.epochs if get_method(self.model.method).has_student else 0

    def epochs_for(self, n_images: int) -> int:
        """Epochs that give at least train.min_steps optimizer steps on n_images (never fewer than train.epochs)."""
        if not self.distill_epochs:
            return 0
        per_epoch = max(1, math.ceil(n_images / self.train.batch_size))
        return max(self.train.epochs, math.ceil(self.train.min_steps / per_epoch))


def to_dict(cfg: Any) -> dict:
    """Plain dict (for YAML/JSON manifests and checkpoints)."""
    return dataclasses.asdict(cfg)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs as dotted overrides; values are YAML (numbers, lists, true/false)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key.strip()}: value {value!r} is not valid YAML") from None
    return out


def read_yaml(path: str | Path | None, overrides: dict | None = None, what: str = "config") -> tuple[dict, str]:
    """A YAML mapping (empty when path is None) with dotted overrides applied, and its name for messages."""
    raw: Any = {}
    where = "defaults"
    if path is not None:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise ConfigError(f"{what} not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        except OSError as e:
            raise ConfigError(f"{p}: cannot read it ({e.strerror or e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a {what} must be a mapping of sections (expected a mapping, got {type(raw).__name__})")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {'.'.join(parents[:i + 1])}: expected a mapping of keys, got "
                                  f"{type(node).__name__} (cannot apply --set {dotted})")
        node[leaf] = value
    return raw, where


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Load a YAML config (or defaults when path is None), apply dotted overrides, validate."""
    raw, where = read_yaml(path, overrides)
    return build(Config, raw, where)


def config_from_dict(raw: dict) -> Config:
    """Rebuild a validated Config stored in a checkpoint or bundle manifest."""
    return build(Config, raw)


def save_config(cfg: Config, path: str | Path) -> None:
    from edge_ad.fileio import atomic_write

    atomic_write(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def parse_host_port(text: str) -> tuple[str, int]:
    """A HOST:PORT flag value (--web, --broker, --listen): HOST:PORT, [IPv6]:PORT or just PORT (on 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise EdgeAdError(f"--web expects HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    return host, int(port)
