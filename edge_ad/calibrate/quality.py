"""Image quality filters for calibration frames: blurred, over/under-exposed and near-duplicate frames.

A model trained on good parts learns whatever the calibration set shows; a blurred or blown-out frame
teaches it that blur or glare is normal. Thresholds come from the recipe's `quality:` section (numpy + cv2 only).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from edge_ad.config import check

REASONS = ("blurred", "under_exposed", "over_exposed", "near_duplicate")


@dataclass
class QualityConfig:
    enabled: bool = True  # false: keep every readable frame
    analysis_size: int = 256  # longer side (px) frames are shrunk to before measuring, so thresholds ignore resolution
    blur_min_variance: float = 10.0  # variance of the Laplacian below this = blurred (sharp parts: hundreds)
    dark_level: int = 5  # grey level (0-255) at or below which a pixel counts as clipped black
    bright_level: int = 250  # grey level at or above which a pixel counts as clipped white
    max_clipped_fraction: float = 0.5  # more clipped black (white) pixels than this = under (over) exposed
    mean_min: float = 20.0  # mean grey level below this = under-exposed
    mean_max: float = 235.0  # mean grey level above this = over-exposed
    thumb_size: int = 32  # near-duplicates are compared as thumb_size x thumb_size grey thumbnails
    duplicate_max_diff: float = 0.75  # mean |difference| (grey levels) to a kept frame below this = near-duplicate
    aspect_tolerance: float = 0.10  # warn when frames' aspect ratios differ by more than this fraction

    def validate(self) -> None:
        check(self.analysis_size >= 32, "analysis_size", "must be >= 32")
        check(self.blur_min_variance >= 0, "blur_min_variance", "must be >= 0")
        check(0 <= self.dark_level < self.bright_level <= 255, "dark_level",
              "dark_level and bright_level must satisfy 0 <= dark_level < bright_level <= 255")
        check(0 < self.max_clipped_fraction <= 1, "max_clipped_fraction", "must be in (0, 1]")
        check(0 <= self.mean_min < self.mean_max <= 255, "mean_min", "mean_min < mean_max, both in [0, 255]")
        check(4 <= self.thumb_size <= 256, "thumb_size", "must be in [4, 256]")
        check(self.duplicate_max_diff >= 0, "duplicate_max_diff", "must be >= 0")
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
    g = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def measure(image_bgr: np.ndarray, cfg: QualityConfig) -> dict[str, float]:
    """The numbers the filters compare with their thresholds (also useful to tune a recipe)."""
    g = _gray(image_bgr, cfg.analysis_size)
    return {"sharpness": sharpness(g), "mean": float(g.mean()), "dark_fraction": float((g <= cfg.dark_level).mean()),
            "bright_fraction": float((g >= cfg.bright_level).mean())}


def single_frame_reason(m: dict[str, float], cfg: QualityConfig) -> str | None:
    """Why a frame is unusable on its own (exposure first: a black frame is also 'blurred'), or None."""
    if m["mean"] < cfg.mean_min or m["dark_fraction"] > cfg.max_clipped_fraction:
        return "under_exposed"
    if m["mean"] > cfg.mean_max or m["bright_fraction"] > cfg.max_clipped_fraction:
        return "over_exposed"
    if m["sharpness"] < cfg.blur_min_variance:
        return "blurred"
    return None


class QualityFilter:
    """Keeps the thumbnails of accepted frames (to spot near-duplicates) and counts rejections per reason."""

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
    """Indices of the images kept, in order, and the number rejected per reason."""
    f = QualityFilter(cfg)
    kept = [i for i, im in enumerate(images) if f.check(im) is None]
    return kept, dict(f.counts)
