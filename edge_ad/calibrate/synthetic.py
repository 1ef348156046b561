"""Synthetic defects with masks, to judge a model without defect images (numpy + cv2 only).

Each defect is drawn on the part of a held-out good image (edge_ad.region: where the image differs from its
ground; anywhere for a full-frame texture) at the network input size, with a contrast relative to the part's own
contrast (a scratch on black rubber is dark grey on black, not white), down to low contrast, in three size classes. They
stand for the usual classes of real defects: scratches and cracks (thin lines), holes and contamination
(spots), stains and uneven areas (smooth brightness changes), misplaced material (patches of the part pasted
elsewhere on it) and deformations (local warps of the part's own structure).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZES = {"small": (0.002, 0.006), "medium": (0.01, 0.025), "large": (0.04, 0.08)}  # area as a fraction of the image
KINDS = ("scratch", "spot", "stain", "patch", "warp")
MARGIN = 0.08  # defects stay this fraction of the side away from the border
CONTRAST = (0.75, 2.5)  # spot / scratch intensity change, in standard deviations of the part's pixels
MIN_STD = 4.0  # grey levels: the contrast unit on a nearly uniform part


@dataclass
class Defect:
    image: np.ndarray  # RGB uint8, same size as the input
    mask: np.ndarray  # bool HxW, where the defect is
    kind: str
    size: str


def _centre(h: int, w: int, rh: float, rw: float, rng: np.random.Generator,
            where: np.ndarray | None = None) -> tuple[float, float]:
    """A centre inside `where` (the part; bool HxW) when it has room, else anywhere away from the border."""
    lo_y, lo_x = h * MARGIN + rh, w * MARGIN + rw
    if where is not None:
        inner = where.copy()
        inner[:int(lo_y)], inner[h - int(lo_y):], inner[:, :int(lo_x)], inner[:, w - int(lo_x):] = False, False, False, False
        ys, xs = np.nonzero(inner if inner.any() else where)
        if len(ys):
            i = int(rng.integers(len(ys)))
            return float(ys[i]), float(xs[i])
    return (rng.uniform(lo_y, max(lo_y + 1, h - lo_y)), rng.uniform(lo_x, max(lo_x + 1, w - lo_x)))


def _blob(h: int, w: int, area: float, rng: np.random.Generator, where: np.ndarray | None = None) -> np.ndarray:
    """A soft irregular blob (float32 0..1) of about `area` pixels somewhere on an h x w image."""
    aspect = rng.uniform(0.5, 2.0)
    ry = max(2.0, np.sqrt(area / np.pi * aspect))
    rx = max(2.0, area / (np.pi * ry))
    cy, cx = _centre(h, w, ry, rx, rng, where)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u, v = dx * np.cos(ang) + dy * np.sin(ang), -dx * np.sin(ang) + dy * np.cos(ang)
    r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    wobble = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), max(rx, ry) / 2)
    r = r + 0.25 * wobble / (np.abs(wobble).max() + 1e-6)
    return np.clip((1.15 - r) / 0.3, 0, 1).astype(np.float32)


def _part_std(img: np.ndarray, where: np.ndarray | None) -> float:
    px = img[where] if where is not None and where.any() else img.reshape(-1, img.shape[-1])
    return max(float(px.std()), MIN_STD)


def _signed_contrast(img: np.ndarray, rng: np.random.Generator, where: np.ndarray | None = None) -> float:
    return float(rng.choice([-1, 1]) * rng.uniform(*CONTRAST) * _part_std(img, where))


def scratch(img: np.ndarray, area: float, rng: np.random.Generator,
               where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    width = int(rng.integers(1, 3)) + int(area > 0.01 * h * w)
    length = min(area / width, 0.8 * max(h, w))
    cy, cx = _centre(h, w, 0, 0, rng, where)
    ang = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.3, 0.3)
    pts = []
    for t in np.linspace(-0.5, 0.5, 8):
        a = ang + bend * t
        pts.append((cx + t * length * np.cos(a), cy + t * length * np.sin(a)))
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.round(np.array(pts)).astype(np.int32)], False, 1, width, cv2.LINE_AA)
    m = mask.astype(np.float32)
    out = img.astype(np.float32) + _signed_contrast(img, rng, where) * m[..., None]
    return out, m > 0


def spot(img: np.ndarray, area: float, rng: np.random.Generator,
            where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    m = _blob(h, w, area, rng, where)
    texture = cv2.GaussianBlur(rng.normal(0, 1, img.shape).astype(np.float32), (0, 0), 1.0) * 0.3 * _part_std(img, where)
    out = img.astype(np.float32) + (_signed_contrast(img, rng, where) + texture) * m[..., None]
    return out, m > 0.5


def stain(img: np.ndarray, area: float, rng: np.random.Generator,
             where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    m = cv2.GaussianBlur(_blob(h, w, area, rng, where), (0, 0), 2.0)
    gain = rng.uniform(0.6, 0.85) if rng.random() < 0.5 else rng.uniform(1.2, 1.5)
    tint = 1 + rng.uniform(-0.1, 0.1, 3)
    out = img.astype(np.float32) * (1 + (gain * tint - 1) * m[..., None])
    return out, m > 0.5


def patch(img: np.ndarray, area: float, rng: np.random.Generator,
             where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Material from elsewhere in the image, flipped, pasted under a blob mask (misplaced or foreign part)."""
    h, w = img.shape[:2]
    m = _blob(h, w, area, rng, where)
    src = _part_source(img, m, rng, where).astype(np.float32)
    out = img.astype(np.float32) * (1 - m[..., None]) + src * m[..., None]
    changed = np.abs(out - img).mean(axis=2) > 0.5 * _part_std(img, where)
    return out, (m > 0.5) & changed


def _part_source(img: np.ndarray, m: np.ndarray, rng: np.random.Generator, where: np.ndarray | None) -> np.ndarray:
    """The image flipped and shifted so that material from another place on the part lands under the blob."""
    h, w = img.shape[:2]
    flipped = img[::-1, ::-1]
    if where is None or not where.any():
        dy, dx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
        return np.roll(flipped, (dy, dx), axis=(0, 1))
    cy, cx = (float(v.mean()) for v in np.nonzero(m > 0.5)) if (m > 0.5).any() else (h / 2, w / 2)
    ys, xs = np.nonzero(where[::-1, ::-1])
    i = int(rng.integers(len(ys)))
    return np.roll(flipped, (int(round(cy - ys[i])), int(round(cx - xs[i]))), axis=(0, 1))


def warp(img: np.ndarray, area: float, rng: np.random.Generator,
         where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A local deformation of the part's own structure (a bent thread, a dent, a shifted edge): nothing new in
    colour or texture, only geometry that good parts do not have."""
    h, w = img.shape[:2]
    m = _blob(h, w, area, rng, where)
    radius = max(2.0, float(np.sqrt(area / np.pi)))
    field = [cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), max(1.0, radius / 2)) for _ in range(2)]
    amp = rng.uniform(0.25, 0.5) * radius
    dx, dy = (f / (np.abs(f).max() + 1e-6) * amp * m for f in field)
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(img, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    changed = np.abs(out - img).mean(axis=2) > 0.25 * _part_std(img, where)
    changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
    return out, (m > 0.3) & changed


DRAW = {"scratch": scratch, "spot": spot, "stain": stain, "patch": patch, "warp": warp}


def make_defect(img: np.ndarray, size: str, rng: np.random.Generator, kind: str | None = None,
                where: np.ndarray | None = None) -> Defect:
    """One synthetic defect of a size class on a prepared RGB uint8 image, on the part when `where` says where it
    is (a retry when its mask came out empty)."""
    h, w = img.shape[:2]
    lo, hi = SIZES[size]
    for _ in range(5):
        k = kind or KINDS[int(rng.integers(len(KINDS)))]
        out, mask = DRAW[k](img, rng.uniform(lo, hi) * h * w, rng, where)
        if where is not None:  # the defect stays on the part: a scratch ends at the part's edge
            soft = cv2.GaussianBlur(cv2.dilate(where.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32),
                                    (0, 0), 1.0)
            out = img.astype(np.float32) + (out - img.astype(np.float32)) * soft[..., None]
            mask = mask & (soft > 0.5)
        if mask.any():
            return Defect(np.clip(out, 0, 255).round().astype(np.uint8), mask, k, size)
    return Defect(np.clip(out, 0, 255).round().astype(np.uint8), mask, k, size)


def part_masks(images: list[np.ndarray]) -> list[np.ndarray | None]:
    """Where the part is in each image (bool HxW), or None for all when the set has no part on a plain ground."""
    from edge_ad.region import estimate_region, foreground

    masks = [foreground(img) for img in images]
    if estimate_region(images, masks).weights is None:
        return [None] * len(images)
    out = []
    for img, m in zip(images, masks):
        fg = cv2.resize(m.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        out.append(fg if fg.any() else None)
    return out


def defect_set(images: list[np.ndarray], seed: int, per_image: int = 1,
               where: list[np.ndarray | None] | None = None) -> list[tuple[int, Defect]]:
    """(source index, defect) pairs: every image gets `per_image` defects of each size class, kinds in turn, drawn
    on its part (`where`, default: part_masks of the images)."""
    rng = np.random.default_rng(seed)
    where = part_masks(images) if where is None else where
    out = []
    k = 0
    for i, img in enumerate(images):
        for size in SIZES:
            for _ in range(per_image):
                out.append((i, make_defect(img, size, rng, KINDS[k % len(KINDS)], where[i])))
                k += 1
    return out
