"""Where the part is, learnt from good images alone: the map is weighted by it, so an empty, noisy or textured
ground never decides a score (numpy + cv2 only; the station imports it through scoring).

Each good image's ground is described by its border ring (colour and local texture, median and robust spread);
pixels far from that description are the part. A pixel belongs to the region when the part covered it in enough
good images (a part in a random pose sweeps a large region; a fixed part gives its silhouette), grown by a margin.
Full-frame textures (no plain ground at the border, or no compact part inside it) give no region: the whole
frame is inspected, and the reason says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_ad.metrics import robust_spread

WORK_SIDE = 64  # images are analysed at this longer side (the part's outline, not its detail)
RING = 0.06  # border ring width (fraction of the side) that describes the ground
FAR = 5.0  # robust sigmas from the ground's description: part
NOISE_FLOOR = 2.0  # grey levels: a ground spread is taken as at least this
MIN_COMPONENT = 0.004  # foreground pieces smaller than this share of the frame are noise
MIN_PART = 0.02  # median foreground share below this: no part found
MAX_PART = 0.85  # ... above this: the part fills the frame (inspect everything)
MIN_COMPACT = 0.6  # median share of the foreground in its largest piece: below this the "part" is scattered texture
MIN_COVER = 0.03  # a pixel is in the region when the part covered it in at least this share of the good images
MARGIN = 0.06  # the weight falls from 1 at the part's edge to 0 over this fraction of the side (parts shift,
#                defects stick out, and the ground in the features' reach of the edge counts less)
MAX_REGION = 0.92  # a region larger than this is the whole frame
POSE_SAMPLE = 40  # images compared (pairwise) to tell a fixed pose from a random one
MIN_POSE_OVERLAP = 0.5  # median part-mask IoU below this: the part is not in a fixed place (per-location models fail)
GRID = 32  # the stored weight grid's longer side (upsampled bilinearly to the input size)
OUTSIDE = 0.0  # map weight where no good image showed the part
REGION_EPS = 1e-3  # a weight above this is inside the region (outside it is OUTSIDE, i.e. 0)
EVEN_SMOOTH = 0.04  # the mean good map is smoothed over this fraction of the side before it evens the weights


@dataclass
class Region:
    """The learnt part region: a weight grid (None: the whole frame) and why."""

    weights: np.ndarray | None
    coverage: float  # share of the frame inside the region
    why: str
    stats: dict = field(default_factory=dict)


def _features(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel colour and local texture (HxWx4 float32) at the analysis size."""
    h, w = rgb.shape[:2]
    s = WORK_SIDE / max(h, w)
    small = cv2.resize(rgb, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA).astype(np.float32)
    colour = cv2.GaussianBlur(small, (0, 0), 1.0)
    grey = small.mean(axis=2)
    mu = cv2.GaussianBlur(grey, (0, 0), 1.5)
    texture = np.sqrt(np.maximum(cv2.GaussianBlur(grey * grey, (0, 0), 1.5) - mu * mu, 0))
    return np.dstack([colour, texture])


def ring_mask(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    r = max(2, int(round(RING * max(h, w))))
    m = np.zeros((h, w), bool)
    m[:r], m[-r:], m[:, :r], m[:, -r:] = True, True, True, True
    return m


def _ground(f: np.ndarray, ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ground under the whole frame, fitted on the ring: a quadratic surface per feature (lighting falls off
    across a plate), and the robust spread of the ring around it."""
    h, w = f.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], axis=-1)
    a = basis[ring]
    ground = np.empty_like(f)
    spread = np.empty(f.shape[2], np.float32)
    for c in range(f.shape[2]):
        coef = np.linalg.lstsq(a, f[..., c][ring], rcond=None)[0]
        ground[..., c] = basis @ coef
        res = f[..., c][ring] - ground[..., c][ring]
        spread[c] = robust_spread(res, NOISE_FLOOR)[1]
    return ground, spread


def foreground(rgb: np.ndarray) -> np.ndarray:
    """Pixels of one image unlike its border ring (bool, at the analysis size), cleaned and hole-filled."""
    f = _features(rgb)
    ground, spread = _ground(f, ring_mask(f.shape[:2]))
    far = (np.abs(f - ground) / spread).max(axis=2) > FAR
    fg = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return fill_holes(drop_small(fg, MIN_COMPONENT)) > 0


def drop_small(mask: np.ndarray, share: float) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    keep = np.zeros(mask.shape, np.uint8)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= share * mask.size:
            keep[lab == i] = 1
    return keep


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes (background not connected to the border) become part: a hole in a washer is part of the washer."""
    h, w = mask.shape
    flood = np.pad(mask.astype(np.uint8), 1)
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
    return ((flood[1:-1, 1:-1] != 2)).astype(np.uint8)


def _largest_share(mask: np.ndarray) -> float:
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    if n <= 1:
        return 0.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    return float(areas.max() / areas.sum())


def estimate_region(images_rgb: list[np.ndarray], masks: list[np.ndarray] | None = None) -> Region:
    """The part region of a set of good images (prepared RGB at the network input size); `masks`: their
    foreground() when the caller has them already."""
    if not images_rgb:
        return Region(None, 1.0, "no images")
    masks = [foreground(im) for im in images_rgb] if masks is None else masks
    shares = [float(m.mean()) for m in masks]
    compact = [_largest_share(m) for m in masks]
    stats = {"median_part_share": round(float(np.median(shares)), 4), "median_compact": round(float(np.median(compact)), 4),
             "images": len(masks)}
    med = float(np.median(shares))
    if med < MIN_PART:
        return Region(None, 1.0, f"no part stands out from the border in most good images (median {med:.1%} of the frame): "
                      "the whole frame is inspected", stats)
    if med > MAX_PART:
        return Region(None, 1.0, f"the part fills the frame (median {med:.0%}): the whole frame is inspected", stats)
    if float(np.median(compact)) < MIN_COMPACT:
        return Region(None, 1.0, "what differs from the border is scattered texture, not one part: the whole frame is inspected",
                      stats)
    cover = np.mean(masks, axis=0)
    core = fill_holes((cover >= max(MIN_COVER, 1.5 / len(masks))).astype(np.uint8))
    r = max(1.0, MARGIN * max(core.shape))
    outside = cv2.distanceTransform((1 - core).astype(np.uint8), cv2.DIST_L2, 3)
    soft = np.clip(1.0 - outside / r, 0, 1).astype(np.float32)  # 1 on the part, falling to 0 over the margin
    coverage = float((soft >= 0.5).mean())
    stats["coverage"] = round(coverage, 4)
    if coverage > MAX_REGION:
        return Region(None, 1.0, f"the part covers {coverage:.0%} of the frame across the good images: the whole frame "
                      "is inspected", stats)
    h, w = soft.shape
    s = GRID / max(h, w)
    grid = cv2.resize(soft, (max(2, round(w * s)), max(2, round(h * s))), interpolation=cv2.INTER_AREA)
    weights = OUTSIDE + (1 - OUTSIDE) * grid
    return Region(weights.astype(np.float32), coverage,
                  f"the part covers {coverage:.0%} of the frame (learnt from {len(masks)} good images): the map is "
                  "weighted by that region", stats)


def evened(region: np.ndarray | None, mean_good_map: np.ndarray) -> np.ndarray:
    """Region weights (grid) that also even out where good images' maps are always high: a place the model can
    never predict well (the part's edge against a changing ground, a noisy corner) counts for less, a place it
    predicts well for more, so one threshold means the same everywhere. weight = 2 m / (mean(x) + m), m = the mean
    over the region; scaled to a maximum of 1 (scores and threshold are set with the same weights)."""
    h, w = mean_good_map.shape
    s = GRID / max(h, w)
    size = (max(2, round(w * s)), max(2, round(h * s))) if region is None else np.asarray(region).shape[::-1]
    #      (the region's own grid when there is one: rounding the map's aspect can give it one cell less)
    mu = cv2.resize(cv2.GaussianBlur(mean_good_map.astype(np.float32), (0, 0), max(1.0, EVEN_SMOOTH * max(h, w))),
                    size, interpolation=cv2.INTER_AREA)
    base = np.ones_like(mu) if region is None else np.asarray(region, np.float32)
    inside = base >= 0.5
    m = float(mu[inside].mean()) if inside.any() else float(mu.mean())
    out = base * (2 * m / (np.maximum(mu, 0) + m + 1e-12))
    return (out / max(float(out.max()), 1e-12)).astype(np.float32)


def pose_overlap(images_rgb: list[np.ndarray], limit: int = POSE_SAMPLE) -> float | None:
    """How much the part stays in one place across good images: the median overlap (IoU) of two images' part
    masks. None when the set shows no part on a plain ground (a full-frame texture is always in place)."""
    sample = images_rgb[:: max(1, len(images_rgb) // limit)][:limit]
    if len(sample) < 2:
        return None
    masks = [foreground(im) for im in sample]
    if estimate_region(sample, masks).weights is None:
        return None
    return median_overlap(masks)


def median_overlap(masks: list[np.ndarray]) -> float | None:
    """The median IoU over every pair of bool masks (None for fewer than two)."""
    ious = [float((a & b).sum() / max(int((a | b).sum()), 1)) for i, a in enumerate(masks) for b in masks[i + 1:]]
    return float(np.median(ious)) if ious else None


def weight_map(grid: list[list[float]] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The stored weight grid at (h, w)."""
    g = np.asarray(grid, np.float32)
    return cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
