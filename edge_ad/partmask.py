"""The part as seen in one frame: where the frame differs from its local ground (numpy + cv2 only; the station imports
it through the detector).

The learnt region (edge_ad.region) says where the part can be over all good images. For a part that moves, or one
turned into a reference pose with some play left, that region is much larger than the part, and a speck of dust on
the ground beside it decides the score of a good frame (measured on screw: the top-scoring good test images peaked on
the ground). The frame's own mask counts the map only on the part in this frame, grown by a margin so that a
defect on its outline (a bent tip, a chip) still counts.

The ground is the frame's median over a window much larger than the part's width, so the part stands out by its
contrast against the ground right next to it (a halo of shading around the part, which a whole-frame ground model
takes for the part, stays ground). A frame in which no part is found is scored without the mask: hiding the map
can never make a frame pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_ad.metrics import robust_spread
from edge_ad.region import drop_small, fill_holes, ring_mask

WORK = 2  # the mask is found at 1/WORK of the input size (its edge is grown by a margin anyway; 4x less work)
ANALYSIS = 4  # ... and the ground estimated at a further 1/ANALYSIS of that (a median is slow at full size)
GROUND_WINDOW = 0.17  # the median window, as a fraction of the longer side (larger than a part's width)
FAR = 6.0  # robust sigmas of the ground's own spread (on the border ring): the part
NOISE_FLOOR = 1.0  # grey levels: the ground spread is taken as at least this
MIN_PIECE = 0.01  # mask pieces smaller than this share of the frame are specks on the ground, not the part


def _shrink(img: np.ndarray, k: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (max(8, w // k), max(8, h // k)), interpolation=cv2.INTER_AREA)


def _work_mask(rgb: np.ndarray) -> np.ndarray:
    """The part mask at the work size (bool): pixels unlike the ground next to them, cleaned and hole-filled. The
    shrinking (an area average) is also what smooths the sensor noise."""
    f = _shrink(rgb, WORK)
    small = _shrink(f, ANALYSIS)
    k = max(3, int(round(GROUND_WINDOW * max(small.shape[:2]))) | 1)
    ground = cv2.resize(cv2.medianBlur(small, min(k, 255)), (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR)
    ring = ring_mask(f.shape[:2])
    far = np.zeros(f.shape[:2], bool)
    for c in range(f.shape[2]):
        d = f[..., c].astype(np.int16) - ground[..., c].astype(np.int16)
        med, spread = robust_spread(d[ring], NOISE_FLOOR)
        far |= np.abs(d - med) > FAR * spread
    m = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    return fill_holes(drop_small(m, MIN_PIECE)) > 0


def frame_mask(rgb: np.ndarray) -> np.ndarray:
    """Bool HxW: the part in this prepared frame (RGB uint8), at the frame's size."""
    m = _work_mask(rgb)
    return cv2.resize(m.astype(np.uint8), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def mask_weights(rgb: np.ndarray, grow: float, min_share: float) -> np.ndarray | None:
    """The map weight (float32 HxW in [0, 1]) of one prepared frame: its part mask grown by `grow` of the longer side
    with a soft edge; None when the mask covers less than `min_share` of the frame (no part found: score unmasked)."""
    m = _work_mask(rgb)
    if not m.any() or m.mean() < min_share:
        return None
    r = max(1, int(round(grow * max(m.shape))))
    grown = cv2.dilate(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    soft = np.clip(cv2.GaussianBlur(grown.astype(np.float32), (0, 0), r / 2), 0, 1)
    return cv2.resize(soft, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)


PLAN_SAMPLE = 40  # good images the plan looks at
MIN_FOUND = 0.95  # the mask must be found in at least this share of the good images ...
MAX_SPREAD = 0.25  # ... with its area varying by at most this coefficient of variation ...
MIN_LOOSENESS = 2.0  # ... and the learnt region at least this many times the part's area (else it adds nothing)
MIN_SHARE_OF_MEDIAN = 0.3  # a frame's mask smaller than this share of the good images' median is "no part found"


@dataclass
class MaskPlan:
    """Whether the map is weighted by each frame's own part mask, the smallest mask a frame may have, and why."""

    use: bool
    min_share: float
    why: str


def plan_frame_mask(images_rgb: list[np.ndarray], region_coverage: float, mode: str) -> MaskPlan:
    """From prepared good images: `auto` uses the frame mask when it is found reliably (every image, a steady area)
    and the learnt region (`region_coverage`, share of the frame; 1 without one) is much larger than the part;
    `on` uses it whenever it is found at all; `off` never."""
    if mode == "off" or not images_rgb:
        return MaskPlan(False, 0.0, "off")
    step = max(1, len(images_rgb) // PLAN_SAMPLE)
    shares = np.array([_work_mask(im).mean() for im in images_rgb[::step][:PLAN_SAMPLE]])
    found = shares >= MIN_PIECE
    med = float(np.median(shares[found])) if found.any() else 0.0
    spread = float(shares[found].std() / med) if med > 0 else float("inf")
    facts = (f"the part found in {found.mean():.0%} of good images, {med:.0%} of the frame (spread {spread:.2f}); "
             f"learnt region {region_coverage:.0%}")
    min_share = round(MIN_SHARE_OF_MEDIAN * med, 4)
    if mode == "on":
        return MaskPlan(bool(found.any()), min_share, facts)
    if found.mean() < MIN_FOUND or spread > MAX_SPREAD:
        return MaskPlan(False, 0.0, facts + ": not reliable enough to mask the map by it")
    if region_coverage < MIN_LOOSENESS * med:
        return MaskPlan(False, 0.0, facts + ": the region already follows the part")
    return MaskPlan(True, min_share, facts + ": each frame's map counts on the part found in it (grown by a margin)")
