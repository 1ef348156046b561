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

from edge_ad.region import _drop_small, _fill_holes, _ring

ANALYSIS = 4  # the ground is estimated at 1/ANALYSIS of the input size (a median is slow at full size)
GROUND_WINDOW = 0.17  # the median window, as a fraction of the longer side (larger than a part's width)
FAR = 6.0  # robust sigmas of the ground's own spread (on the border ring): the part
NOISE_FLOOR = 1.0  # grey levels: the ground spread is taken as at least this
MIN_PIECE = 0.01  # mask pieces smaller than this share of the frame are specks on the ground, not the part
SMOOTH = 1.0  # pixels: the frame is smoothed this much first (sensor noise)


def frame_mask(rgb: np.ndarray) -> np.ndarray:
    """Bool HxW: pixels of this prepared frame unlike the ground next to them, cleaned and hole-filled."""
    h, w = rgb.shape[:2]
    f = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), SMOOTH)
    small = cv2.resize(f, (max(8, w // ANALYSIS), max(8, h // ANALYSIS)), interpolation=cv2.INTER_AREA)
    k = max(3, int(round(GROUND_WINDOW * max(small.shape[:2]))) | 1)
    ground_small = cv2.medianBlur(np.clip(small, 0, 255).astype(np.uint8), min(k, 255))
    ground = cv2.resize(ground_small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    diff = f - ground.reshape(f.shape)
    ring = _ring((h, w))
    med = np.median(diff[ring], axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(diff[ring] - med), axis=0), NOISE_FLOOR)
    far = (np.abs(diff - med) / spread).max(axis=2) > FAR
    m = cv2.morphologyEx(far.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    return _fill_holes(_drop_small(m, MIN_PIECE)) > 0


def mask_weights(rgb: np.ndarray, grow: float, min_share: float) -> np.ndarray | None:
    """The map weight (float32 HxW in [0, 1]) of one prepared frame: its part mask grown by `grow` of the longer side
    with a soft edge; None when the mask covers less than `min_share` of the frame (no part found: score unmasked)."""
    m = frame_mask(rgb)
    if m.mean() < min_share or not m.any():
        return None
    r = max(1, int(round(grow * max(m.shape))))
    grown = cv2.dilate(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return np.clip(cv2.GaussianBlur(grown.astype(np.float32), (0, 0), r / 2), 0, 1)


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
    shares = np.array([frame_mask(im).mean() for im in images_rgb[::step][:PLAN_SAMPLE]])
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
