"""Image quality of calibration frames, judged against the part's own captured set (numpy + cv2 only).

A model trained on good parts learns whatever the calibration set shows, so a blurred or wrongly lit
frame must not teach it that blur or glare is normal. What "wrongly lit" means depends on the part: a
black rubber part is normal at mean grey 19. So only truly broken frames (all black, all white, empty)
are rejected on absolute limits while capturing; exposure and sharpness are judged after capture,
against the median and MAD of the whole set (robust z-scores). Near-duplicates are compared on
contrast-normalised thumbnails, so a dark part's frames are as distinct as a bright part's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from edge_ad.config import check
from edge_ad.metrics import robust_spread

REASONS = ("under_exposed", "over_exposed", "empty", "blurred", "near_duplicate")
OLD_DUPLICATE_UNIT = 0.1  # duplicate_max_diff above this is the grey-level unit of edge_ad < 0.2


@dataclass
class QualityConfig:
    """Frames that would teach the model that blur or glare is normal are rejected."""

    enabled: bool = True  # false: keep every readable frame
    analysis_size: int = 256  # longer side (px) frames are shrunk to before measuring, so thresholds ignore resolution
    dark_level: int = 5  # grey level (0-255) at or below which a pixel counts as clipped black
    bright_level: int = 250  # grey level at or above which a pixel counts as clipped white
    max_clipped_fraction: float = 0.98  # absolute: more clipped black (white) pixels than this = a black (white) frame
    empty_std: float = 1.0  # absolute: grey standard deviation below this = an empty, uniform frame
    blur_min_variance: float = 0.0  # absolute floor of the Laplacian variance (0: off; blur is judged relative)
    mean_min: float = 0.0  # absolute mean-grey limits (off by default: exposure is judged relative to the set)
    mean_max: float = 255.0  # upper absolute mean-grey limit (255: off)
    relative_z: float = 6.0  # a frame whose exposure or sharpness lies beyond this many robust sigmas is an outlier
    exposure_mad_floor: float = 0.05  # log-brightness spread assumed at least (5 %): a very uniform set stays tolerant
    sharpness_mad_floor: float = 0.1  # log-sharpness spread assumed at least
    max_rejected_fraction: float = 0.3  # more rejected (not duplicate) frames than this share: stop before training
    thumb_size: int = 32  # near-duplicates are compared as thumb_size x thumb_size grey thumbnails ...
    duplicate_max_diff: float = 0.008  # ... normalised to zero mean, unit std: mean |difference| below this = duplicate
    aspect_tolerance: float = 0.10  # warn when frames' aspect ratios differ by more than this fraction

    def validate(self) -> None:
        check(self.analysis_size >= 32, "analysis_size", "must be >= 32")
        check(0 <= self.dark_level < self.bright_level <= 255, "dark_level",
              "dark_level and bright_level must satisfy 0 <= dark_level < bright_level <= 255")
        check(0 < self.max_clipped_fraction <= 1, "max_clipped_fraction", "must be in (0, 1]")
        check(self.empty_std >= 0, "empty_std", "must be >= 0")
        check(self.blur_min_variance >= 0, "blur_min_variance", "must be >= 0")
        check(0 <= self.mean_min < self.mean_max <= 255, "mean_min", "mean_min < mean_max, both in [0, 255]")
        check(self.relative_z > 0, "relative_z", "must be > 0")
        check(self.exposure_mad_floor >= 0 and self.sharpness_mad_floor >= 0, "exposure_mad_floor",
              "MAD floors must be >= 0")
        check(0 < self.max_rejected_fraction <= 1, "max_rejected_fraction", "must be in (0, 1]")
        check(4 <= self.thumb_size <= 256, "thumb_size", "must be in [4, 256]")
        check(0 <= self.duplicate_max_diff <= OLD_DUPLICATE_UNIT, "duplicate_max_diff",
              f"must be in [0, {OLD_DUPLICATE_UNIT}] (standard deviations of a normalised thumbnail; "
              f"got {self.duplicate_max_diff}: grey levels are the old unit, use 0.008)")
        check(self.aspect_tolerance >= 0, "aspect_tolerance", "must be >= 0")


def _gray(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """Grey image with its longer side at most `size` (area interpolation: no aliasing of fine texture)."""
    g = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    h, w = g.shape
    s = size / max(h, w)
    if s < 1:
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return g


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: high for crisp edges and texture, near zero for a defocused frame."""
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def thumbnail(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """Contrast-normalised grey thumbnail: the same for a dark and a bright shot of one scene."""
    g = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    t = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (t - t.mean()) / (t.std() + 1e-3)


def measure(image_bgr: np.ndarray, cfg: QualityConfig) -> dict[str, float]:
    """The numbers the filters compare with their limits (also useful to tune a recipe)."""
    g = _gray(image_bgr, cfg.analysis_size)
    return {"sharpness": sharpness(g), "mean": float(g.mean()), "std": float(g.std()),
            "dark_fraction": float((g <= cfg.dark_level).mean()), "bright_fraction": float((g >= cfg.bright_level).mean())}


def single_frame_reason(m: dict[str, float], cfg: QualityConfig) -> str | None:
    """Why a frame is unusable on its own, whatever the part: black, white, empty (or a configured absolute limit)."""
    if m["dark_fraction"] > cfg.max_clipped_fraction or m["mean"] < cfg.mean_min:
        return "under_exposed"
    if m["bright_fraction"] > cfg.max_clipped_fraction or m["mean"] > cfg.mean_max:
        return "over_exposed"
    if m["std"] < cfg.empty_std:
        return "empty"
    if m["sharpness"] < cfg.blur_min_variance:
        return "blurred"
    return None


def robust_z(values: np.ndarray, mad_floor: float) -> tuple[np.ndarray, float, float]:
    """(z-scores, median, sigma) with sigma = 1.4826 x MAD, never below mad_floor."""
    med, sigma = robust_spread(values, mad_floor)
    return (values - med) / sigma, med, sigma


def relative_outliers(measures: list[dict[str, float]], cfg: QualityConfig) -> tuple[dict[int, str], dict]:
    """Frames whose exposure (log mean grey) or sharpness (log Laplacian variance) is far from the set's own.

    Returns {index: reason} and the set's statistics (for the report). Sharper than usual is never a fault.
    """
    if not cfg.enabled or len(measures) < 3:
        return {}, {}
    expo = np.log1p(np.array([m["mean"] for m in measures]))
    sharp = np.log1p(np.array([m["sharpness"] for m in measures]))
    z_e, med_e, sig_e = robust_z(expo, cfg.exposure_mad_floor)
    z_s, med_s, sig_s = robust_z(sharp, cfg.sharpness_mad_floor)
    out: dict[int, str] = {}
    for i in range(len(measures)):
        if z_e[i] < -cfg.relative_z:
            out[i] = "under_exposed"
        elif z_e[i] > cfg.relative_z:
            out[i] = "over_exposed"
        elif z_s[i] < -cfg.relative_z:
            out[i] = "blurred"
    stats = {"mean_grey_median": round(float(np.expm1(med_e)), 2), "exposure_sigma_log": round(sig_e, 4),
             "sharpness_median": round(float(np.expm1(med_s)), 2), "sharpness_sigma_log": round(sig_s, 4),
             "relative_z": cfg.relative_z}
    return out, stats


class QualityFilter:
    """Online part of the filter (while capturing): absolute checks and near-duplicates; counts per reason."""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.counts: Counter[str] = Counter({r: 0 for r in REASONS})
        self.accepted = 0
        self._thumbs: list[np.ndarray] = []
        self._sizes: list[tuple[int, int]] = []

    def remember(self, image_bgr: np.ndarray) -> None:
        """Register a frame kept earlier (a resumed capture) without counting or checking it."""
        self._thumbs.append(thumbnail(image_bgr, self.cfg.thumb_size))
        self._sizes.append(image_bgr.shape[:2])

    def check(self, image_bgr: np.ndarray) -> str | None:
        """None when the frame is kept (and remembered), else the rejection reason (and counted)."""
        reason = None
        if self.cfg.enabled:
            reason = single_frame_reason(measure(image_bgr, self.cfg), self.cfg)
            if reason is None and self._thumbs:
                t = thumbnail(image_bgr, self.cfg.thumb_size)
                diffs = np.abs(np.stack(self._thumbs) - t).mean(axis=(1, 2))
                if float(diffs.min()) < self.cfg.duplicate_max_diff:
                    reason = "near_duplicate"
        if reason is not None:
            self.counts[reason] += 1
            return reason
        self.remember(image_bgr)
        self.accepted += 1
        return None

    @property
    def rejected(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for people, e.g. 'kept 180, rejected 20 (blurred 12, near_duplicate 8)'."""
        parts = ", ".join(f"{r} {c}" for r, c in self.counts.items() if c)
        return f"kept {self.accepted}, rejected {self.rejected}" + (f" ({parts})" if parts else "")

    def aspect_spread(self) -> float:
        """Relative spread of the kept frames' aspect ratios: max/min - 1 (0 when all match)."""
        if not self._sizes:
            return 0.0
        ratios = [w / h for h, w in self._sizes]
        return max(ratios) / min(ratios) - 1.0


def filter_images(images: list[np.ndarray], cfg: QualityConfig) -> tuple[list[int], dict[str, int]]:
    """Indices of the images kept, in order, and the number rejected per reason (online and relative checks)."""
    f = QualityFilter(cfg)
    kept = [i for i, im in enumerate(images) if f.check(im) is None]
    counts = dict(f.counts)
    outliers, _ = relative_outliers([measure(images[i], cfg) for i in kept], cfg)
    for j, reason in outliers.items():
        counts[reason] += 1
    return [i for j, i in enumerate(kept) if j not in outliers], counts
