"""Synthetic defects with masks, to judge a model without defect images (numpy + cv2 only).

Each defect is drawn on a held-out good image at the network input size, with a contrast relative to
that image (a scratch on black rubber is dark grey on black, not white), in three size classes. They
stand for the usual classes of real defects: scratches and cracks (thin lines), holes and contamination
(spots), stains and uneven areas (smooth brightness changes) and misplaced material (pasted patches).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZES = {"small": (0.002, 0.006), "medium": (0.01, 0.025), "large": (0.04, 0.08)}  # area as a fraction of the image
KINDS = ("scratch", "spot", "stain", "patch")
MARGIN = 0.08  # defects stay this fraction of the side away from the border
CONTRAST = (1.5, 3.0)  # spot / scratch intensity change, in standard deviations of the image


@dataclass
class Defect:
    image: np.ndarray  # RGB uint8, same size as the input
    mask: np.ndarray  # bool HxW, where the defect is
    kind: str
    size: str


def _centre(h: int, w: int, rh: float, rw: float, rng: np.random.Generator) -> tuple[float, float]:
    lo_y, lo_x = h * MARGIN + rh, w * MARGIN + rw
    return (rng.uniform(lo_y, max(lo_y + 1, h - lo_y)), rng.uniform(lo_x, max(lo_x + 1, w - lo_x)))


def _blob(h: int, w: int, area: float, rng: np.random.Generator) -> np.ndarray:
    """A soft irregular blob (float32 0..1) of about `area` pixels somewhere on an h x w image."""
    aspect = rng.uniform(0.5, 2.0)
    ry = max(2.0, np.sqrt(area / np.pi * aspect))
    rx = max(2.0, area / (np.pi * ry))
    cy, cx = _centre(h, w, ry, rx, rng)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u, v = dx * np.cos(ang) + dy * np.sin(ang), -dx * np.sin(ang) + dy * np.cos(ang)
    r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    wobble = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), max(rx, ry) / 2)
    r = r + 0.25 * wobble / (np.abs(wobble).max() + 1e-6)
    return np.clip((1.15 - r) / 0.3, 0, 1).astype(np.float32)


def _signed_contrast(img: np.ndarray, rng: np.random.Generator) -> float:
    sigma = max(float(img.std()), 4.0)
    return float(rng.choice([-1, 1]) * rng.uniform(*CONTRAST) * sigma)


def scratch(img: np.ndarray, area: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    width = int(rng.integers(1, 3)) + int(area > 0.01 * h * w)
    length = min(area / width, 0.8 * max(h, w))
    cy, cx = _centre(h, w, 0, 0, rng)
    ang = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.3, 0.3)
    pts = []
    for t in np.linspace(-0.5, 0.5, 8):
        a = ang + bend * t
        pts.append((cx + t * length * np.cos(a), cy + t * length * np.sin(a)))
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.round(np.array(pts)).astype(np.int32)], False, 1, width, cv2.LINE_AA)
    m = mask.astype(np.float32)
    out = img.astype(np.float32) + _signed_contrast(img, rng) * m[..., None]
    return out, m > 0


def spot(img: np.ndarray, area: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    m = _blob(h, w, area, rng)
    texture = cv2.GaussianBlur(rng.normal(0, 1, img.shape).astype(np.float32), (0, 0), 1.0) * 0.3 * img.std()
    out = img.astype(np.float32) + (_signed_contrast(img, rng) + texture) * m[..., None]
    return out, m > 0.5


def stain(img: np.ndarray, area: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    m = cv2.GaussianBlur(_blob(h, w, area, rng), (0, 0), 2.0)
    gain = rng.uniform(0.55, 0.75) if rng.random() < 0.5 else rng.uniform(1.3, 1.6)
    tint = 1 + rng.uniform(-0.1, 0.1, 3)
    out = img.astype(np.float32) * (1 + (gain * tint - 1) * m[..., None])
    return out, m > 0.5


def patch(img: np.ndarray, area: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Material from elsewhere in the image, flipped, pasted under a blob mask (misplaced or foreign part)."""
    h, w = img.shape[:2]
    m = _blob(h, w, area, rng)
    dy, dx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
    src = np.roll(img[::-1, ::-1], (dy, dx), axis=(0, 1)).astype(np.float32)
    out = img.astype(np.float32) * (1 - m[..., None]) + src * m[..., None]
    changed = np.abs(out - img).mean(axis=2) > 0.5 * max(float(img.std()), 4.0)
    return out, (m > 0.5) & changed


DRAW = {"scratch": scratch, "spot": spot, "stain": stain, "patch": patch}


def make_defect(img: np.ndarray, size: str, rng: np.random.Generator, kind: str | None = None) -> Defect:
    """One synthetic defect of a size class on a prepared RGB uint8 image (a retry when its mask came out empty)."""
    h, w = img.shape[:2]
    lo, hi = SIZES[size]
    for _ in range(5):
        k = kind or KINDS[int(rng.integers(len(KINDS)))]
        out, mask = DRAW[k](img, rng.uniform(lo, hi) * h * w, rng)
        if mask.any():
            return Defect(np.clip(out, 0, 255).round().astype(np.uint8), mask, k, size)
    return Defect(np.clip(out, 0, 255).round().astype(np.uint8), mask, k, size)


def defect_set(images: list[np.ndarray], seed: int, per_image: int = 1) -> list[tuple[int, Defect]]:
    """(source index, defect) pairs: every image gets `per_image` defects of each size class, kinds in turn."""
    rng = np.random.default_rng(seed)
    out = []
    k = 0
    for i, img in enumerate(images):
        for size in SIZES:
            for _ in range(per_image):
                out.append((i, make_defect(img, size, rng, KINDS[k % len(KINDS)])))
                k += 1
    return out
