"""From per-scale distance maps to one anomaly map and an image score (numpy + cv2 only).

Every backend (torch, onnxruntime, tensorrt) outputs per-scale 1-cos maps; this module is the
single post-processing step, so training-time evaluation and the station score identically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


import cv2
import numpy as np

from edge_ad.schema import build, check, check_choice

BLUR_TRUNCATE = 4.0  # Gaussian kernel half-width in sigmas (as scipy.ndimage.gaussian_filter)
FUSIONS = ("sum", "product")
IMAGE_SCORES = ("max", "topk_mean")
MAX_BLUR_SIGMA = 32.0
MAX_REGION_GRID = 128
MAX_MASK_GROW = 0.2


@dataclass
class ScoringSpec:
    """How a model's per-scale maps are combined; saved with every model and bundle."""

    out_size: tuple[int, int]  # (h, w) of the network input (required)
    groups: list[list[int]] = field(default_factory=lambda: [[0, 1, 2]])  # scale indices per pair
    group_scales: list[float] = field(default_factory=lambda: [1.0])  # good-image normalisers per pair
    fusion: str = "sum"  # sum | product of normalised pair maps
    blur_sigma: float = 4.0
    image_score: str = "max"  # max | topk_mean
    topk_fraction: float = 0.01
    region: list[list[float]] | None = None  # part-region weight grid (edge_ad.region), applied after the blur; None: all
    frame_mask: bool = False  # also weight the map by the part as found in each frame (edge_ad.partmask)
    frame_mask_min: float = 0.0  # a frame's mask covering less of it than this is not used (no part found: unmasked)
    frame_mask_grow: float = 0.015  # the frame's mask grown by this fraction of the longer side (defects on the edge)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_size"] = list(self.out_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ScoringSpec":
        """A checked spec (edge_ad.schema's style): a wrong key, type or inconsistent field is one ConfigError
        naming scoring.<field>, never a later IndexError."""
        return build(cls, d, prefix="scoring.")

    def validate(self) -> None:
        groups, scales = self.groups, self.group_scales
        check(all(s > 0 for s in self.out_size), "out_size", f"expected [height, width] > 0, got {list(self.out_size)}")
        check(bool(groups) and all(g and all(i >= 0 for i in g) for g in groups), "groups",
              f"expected non-empty lists of output indices, got {groups!r}")
        check(len(scales) == len(groups) and all(s > 0 for s in scales), "group_scales",
              f"expected {len(groups)} positive numbers (one per group), got {scales!r}")
        check_choice(self.fusion, "fusion", FUSIONS)
        check_choice(self.image_score, "image_score", IMAGE_SCORES)
        check(0 <= self.blur_sigma <= MAX_BLUR_SIGMA, "blur_sigma", f"must be in [0, {MAX_BLUR_SIGMA:g}], got {self.blur_sigma!r}")
        check(0 < self.topk_fraction <= 1, "topk_fraction", f"must be in (0, 1], got {self.topk_fraction!r}")
        r = self.region
        check(r is None or (2 <= len(r) <= MAX_REGION_GRID and all(len(row) == len(r[0]) for row in r)
                            and 2 <= len(r[0]) <= MAX_REGION_GRID and all(0 <= v <= 1 for row in r for v in row)
                            and max(max(row) for row in r) > 0), "region",
              f"expected a grid (rows of equal length, 2..{MAX_REGION_GRID}) of weights in [0, 1], not all zero, or null")

        check(0 <= self.frame_mask_min < 1, "frame_mask_min", f"must be in [0, 1), got {self.frame_mask_min!r}")
        check(0 <= self.frame_mask_grow <= MAX_MASK_GROW, "frame_mask_grow",
              f"must be in [0, {MAX_MASK_GROW:g}], got {self.frame_mask_grow!r}")

    @property
    def n_outputs(self) -> int:
        """How many per-scale maps the graph must produce for these groups."""
        return 1 + max(i for g in self.groups for i in g)


def cosine_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """1 - cos along the channel axis: (..., C, H, W) x2 -> (..., H, W)."""
    num = (a * b).sum(axis=-3)
    den = np.sqrt((a * a).sum(axis=-3) * (b * b).sum(axis=-3))
    return 1.0 - num / np.maximum(den, eps)


def blur(m: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return m
    k = 2 * int(BLUR_TRUNCATE * sigma + 0.5) + 1
    return cv2.GaussianBlur(m, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (half-pixel centres, like torch align_corners=False) to (h, w)."""
    if m.shape == tuple(size):
        return m
    return cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def group_maps(scale_maps: list[np.ndarray], spec: ScoringSpec) -> list[np.ndarray]:
    """Per-pair maps at input size, each the sum of its scales, before normalisation (one image)."""
    return [sum(upsample(np.asarray(scale_maps[i], np.float32), spec.out_size) for i in g) for g in spec.groups]


def fuse(pair_maps: list[np.ndarray], spec: ScoringSpec) -> np.ndarray:
    normed = [m / s for m, s in zip(pair_maps, spec.group_scales)]
    out = normed[0]
    for m in normed[1:]:
        out = out * m if spec.fusion == "product" else out + m
    return out


def anomaly_map(scale_maps: list[np.ndarray], spec: ScoringSpec, frame_weight: np.ndarray | None = None) -> np.ndarray:
    """Per-scale maps of one image (each hxw, any size) -> blurred float32 map at input size, weighted by the
    part region when the model has one and by the frame's own part mask when given (the ground never decides a
    score)."""
    return weighted(blur(fuse(group_maps(scale_maps, spec), spec).astype(np.float32), spec.blur_sigma), spec,
                    frame_weight)


def weighted(m: np.ndarray, spec: ScoringSpec, frame_weight: np.ndarray | None = None) -> np.ndarray:
    """A blurred map weighted by the spec's part region and a frame's part mask (unchanged without them)."""
    out = m if spec.region is None else m * region_weights(spec)
    return out if frame_weight is None else out * frame_weight


def frame_weights(prepared_rgb: list[np.ndarray], spec: ScoringSpec) -> list[np.ndarray | None]:
    """Each prepared frame's part-mask weight when the spec asks for it (None: that frame is scored unmasked)."""
    if not spec.frame_mask:
        return [None] * len(prepared_rgb)
    from edge_ad.partmask import mask_weights

    return [mask_weights(rgb, spec.frame_mask_grow, spec.frame_mask_min) for rgb in prepared_rgb]


def region_weights(spec: ScoringSpec) -> np.ndarray:
    """The spec's region grid at the map size (cached per spec: the loop scores every frame with one spec)."""
    from edge_ad.region import weight_map

    key = (id(spec.region), tuple(spec.out_size))
    cached = getattr(spec, "_region_cache", None)
    if cached is None or cached[0] != key:
        cached = (key, weight_map(spec.region, spec.out_size))
        object.__setattr__(spec, "_region_cache", cached)
    return cached[1]


def image_score(amap: np.ndarray, spec: ScoringSpec) -> float:
    if spec.image_score == "max":
        return float(amap.max())
    k = max(1, int(round(amap.size * spec.topk_fraction)))
    return float(np.partition(amap.ravel(), amap.size - k)[-k:].mean())


def split_batch(outputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Backend outputs [(N,1,h,w) per scale] -> per image [hxw per scale]."""
    n = outputs[0].shape[0]
    return [[o[i].reshape(o.shape[-2:]) for o in outputs] for i in range(n)]


def score_outputs(outputs: list[np.ndarray], spec: ScoringSpec,
                  weights: list[np.ndarray | None] | None = None) -> tuple[list[np.ndarray], list[float]]:
    """Backend outputs for a batch (and each frame's part-mask weight, frame_weights) -> (anomaly maps, scores)."""
    per = split_batch(outputs)
    maps = [anomaly_map(p, spec, w) for p, w in zip(per, weights or [None] * len(per))]
    return maps, [image_score(m, spec) for m in maps]


def fit_group_scales(per_image_pair_maps: list[list[np.ndarray]]) -> list[float]:
    """Normaliser of each pair: mean of its map over good images, so pairs contribute equally."""
    n_groups = len(per_image_pair_maps[0])
    return [float(np.mean([maps[g].mean() for maps in per_image_pair_maps])) or 1.0 for g in range(n_groups)]


def threshold_from_good(scores: np.ndarray, quantile: float, margin: float) -> float:
    """Alarm threshold from good-image scores: a stated quantile plus a relative margin."""
    return float(np.quantile(np.asarray(scores, np.float64), quantile) * (1.0 + margin))
