"""Camera-like variants of good images, to test a model on conditions a data set does not show (numpy + cv2 only).

A dark camera is not a digital darkening: the sensor counts photons (shot noise grows with the square root of the
signal), adds read noise, and the result is quantised to 8 bits after the gamma curve. `low_light` simulates that in
linear light. `textured_background` puts a part on a moving textured cloth instead of its plain ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_ad.metrics import robust_spread

GAMMA = 2.2  # sRGB-like transfer curve between 8-bit values and linear light


@dataclass(frozen=True)
class Sensor:
    """A small industrial sensor at short exposure (electrons; typical of 2-3 um pixels)."""

    full_well: float = 6000.0  # electrons at the brightest 8-bit value
    read_noise: float = 4.0  # electrons, Gaussian
    target_mean: float = 19.0  # mean grey of the simulated dark frame (a black rubber part)


def to_linear(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / 255.0) ** GAMMA


def to_8bit(lin: np.ndarray) -> np.ndarray:
    return np.clip(np.round(255.0 * np.clip(lin, 0, 1) ** (1 / GAMMA)), 0, 255).astype(np.uint8)


def exposure_for(images: list[np.ndarray], target_mean: float) -> float:
    """One exposure factor (linear light) that brings the set's median mean grey to target_mean."""
    lins = [to_linear(im) for im in images]
    e = float(((target_mean / 255.0) ** GAMMA) / max(float(np.median([x.mean() for x in lins])), 1e-6))
    for _ in range(3):  # the mean of gamma-encoded values is not the gamma of the mean: refine on the images
        mean = float(np.median([to_8bit(x * e).mean() for x in lins]))
        e *= (target_mean / max(mean, 1e-3)) ** GAMMA
    return e


def low_light(img: np.ndarray, exposure: float, rng: np.random.Generator, sensor: Sensor = Sensor()) -> np.ndarray:
    """The frame a dark camera would take of the same scene: exposure in linear light, Poisson shot noise,
    Gaussian read noise, gamma and 8-bit quantisation."""
    electrons = to_linear(img) * exposure * sensor.full_well
    counted = rng.poisson(np.maximum(electrons, 0)).astype(np.float32)
    counted += rng.normal(0.0, sensor.read_noise, counted.shape).astype(np.float32)
    return to_8bit(counted / sensor.full_well)


def cloth(shape: tuple[int, int], rng: np.random.Generator, mean: float, contrast: float) -> np.ndarray:
    """A woven, mottled, slightly creased grey texture (uint8 HxW) with a random offset: a cloth that moves."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ang = rng.uniform(-0.2, 0.2)
    u, v = xx * np.cos(ang) + yy * np.sin(ang), -xx * np.sin(ang) + yy * np.cos(ang)
    period = rng.uniform(5.0, 7.0)
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = np.sign(np.sin(2 * np.pi * u / period + phase[0])) * np.sin(2 * np.pi * v / period + phase[1])
    mottle = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 12)
    mottle /= mottle.std() + 1e-6
    crease = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 30)
    crease = np.abs(crease / (crease.std() + 1e-6))
    tex = 0.5 * weave + 0.6 * mottle - 0.4 * crease + 0.25 * rng.normal(0, 1, (h, w)).astype(np.float32)
    return np.clip(mean + contrast * tex / (tex.std() + 1e-6), 0, 255).astype(np.uint8)


def part_mask(grey: np.ndarray, spread: float, k: float = 4.0) -> np.ndarray:
    """Where a frame differs from its plain ground (a wide median of the frame, robust sigma `spread`): filled,
    smoothed 0..1. For a part that covers less than half of any 51-pixel window."""
    g8 = np.clip(grey, 0, 255).astype(np.uint8)
    ground = cv2.medianBlur(g8, 51).astype(np.float32)
    fg = (np.abs(cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0) - ground) > k * spread).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg)
    keep = np.zeros_like(fg)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= 0.002 * fg.size:
            keep[lab == i] = 1
    keep = cv2.dilate(keep, np.ones((3, 3), np.uint8))
    return cv2.GaussianBlur(keep.astype(np.float32), (0, 0), 1.5)


def textured_background(img: np.ndarray, rng: np.random.Generator, contrast: float = 25.0) -> np.ndarray:
    """The part of a frame on a plain ground (estimated from the frame's border) composited onto a textured cloth."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    border = np.concatenate([grey[:8].ravel(), grey[-8:].ravel(), grey[:, :8].ravel(), grey[:, -8:].ravel()])
    ground, spread = robust_spread(border, 3.0)
    alpha = part_mask(grey, spread)[..., None]
    bg = cloth(grey.shape, rng, ground * 0.8, contrast)
    bg3 = np.repeat(bg[..., None], 3, axis=2).astype(np.float32)
    return np.clip(alpha * img.astype(np.float32) + (1 - alpha) * bg3, 0, 255).round().astype(np.uint8)
