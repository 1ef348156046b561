"""Corruptions for rd_aug (Improved RD): the student learns to restore T(x) from T(aug(x)).

Operates on prepared RGB uint8 images (numpy + cv2), so augmentation never touches geometry:
the restored target and the augmented input stay pixel-aligned.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_ad.config import AugmentConfig

MIN_PATCH, MAX_PATCH = 0.04, 0.2  # synthetic defect size as a fraction of the image side


def color_jitter(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    b, c, s = 1 + rng.uniform(-strength, strength, size=3)
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * s  # saturation
    x = (x - x.mean()) * c + x.mean()  # contrast
    return np.clip(x * b, 0, 255).astype(np.uint8)


def gaussian_noise(img: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img + rng.normal(0, std * 255, img.shape), 0, 255).astype(np.uint8)


def _patch_box(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    ph = int(h * rng.uniform(MIN_PATCH, MAX_PATCH)) + 2
    pw = int(w * rng.uniform(MIN_PATCH, MAX_PATCH)) + 2
    y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    return y, x, ph, pw


def _blob_mask(ph: int, pw: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular soft blob in a ph x pw box (smoothed thresholded noise inside an ellipse)."""
    noise = cv2.GaussianBlur(rng.random((ph, pw)).astype(np.float32), (0, 0), max(ph, pw) / 6)
    yy, xx = np.mgrid[:ph, :pw]
    ell = ((yy - ph / 2) / (ph / 2)) ** 2 + ((xx - pw / 2) / (pw / 2)) ** 2 < 1
    m = (noise > np.median(noise[ell])) & ell if ell.any() else ell
    return cv2.GaussianBlur(m.astype(np.float32), (3, 3), 0)[..., None]


def cutpaste(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    y, x, ph, pw = _patch_box(img.shape, rng)
    sy, sx, _, _ = _patch_box(img.shape, rng)
    sy, sx = min(sy, img.shape[0] - ph), min(sx, img.shape[1] - pw)
    patch = img[sy:sy + ph, sx:sx + pw].astype(np.float32)
    m = _blob_mask(ph, pw, rng)
    out[y:y + ph, x:x + pw] = (patch * m + out[y:y + ph, x:x + pw] * (1 - m)).astype(np.uint8)
    return out


def noise_blob(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    y, x, ph, pw = _patch_box(img.shape, rng)
    tex = cv2.GaussianBlur(rng.random((ph, pw, 3)).astype(np.float32) * 255, (0, 0), rng.uniform(0.5, 3))
    tex = tex * rng.uniform(0.3, 1.5) + rng.uniform(-60, 60)
    m = _blob_mask(ph, pw, rng)
    region = out[y:y + ph, x:x + pw].astype(np.float32)
    out[y:y + ph, x:x + pw] = np.clip(tex * m + region * (1 - m), 0, 255).astype(np.uint8)
    return out


def scratch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    length = rng.uniform(0.1, 0.4) * max(h, w)
    ang = rng.uniform(0, np.pi)
    p1 = (int(p0[0] + length * np.cos(ang)), int(p0[1] + length * np.sin(ang)))
    colour = tuple(int(v) for v in (rng.integers(0, 60, 3) if rng.random() < 0.5 else rng.integers(190, 256, 3)))
    cv2.line(out, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return out


def augment(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random corruption chain: photometric changes then 1..max_defects synthetic defects."""
    out = img
    if cfg.color_jitter > 0 and rng.random() < 0.5:
        out = color_jitter(out, cfg.color_jitter, rng)
    if cfg.blur and rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    if cfg.noise_std > 0 and rng.random() < 0.3:
        out = gaussian_noise(out, cfg.noise_std, rng)
    defects = [f for f, on in ((cutpaste, cfg.cutpaste), (noise_blob, cfg.noise_blobs), (scratch, cfg.scratches)) if on]
    if defects:
        for _ in range(int(rng.integers(1, cfg.max_defects + 1))):
            out = defects[int(rng.integers(len(defects)))](out, rng)
    return out
