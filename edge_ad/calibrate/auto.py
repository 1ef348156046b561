"""Input settings chosen from the good images themselves: input size from the part's shape, normalisation
and gain from its lighting, so a user never picks them (numpy + cv2 only).

- Input size: a roughly square part (aspect within SQUARE_ASPECT) fills 256 x 256; an elongated one keeps
  its aspect ratio with the short side at ELONGATED_SHORT_SIDE (thin cracks along a strip stay visible).
- Lighting: when the brightness of the good images varies a lot between shots (robust spread of log mean
  grey above LIGHTING_SPREAD), each image is normalised on its own; otherwise ImageNet normalisation,
  with a gain that brings a dark part (median grey below DARK_MEAN) to the teacher's usual range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_ad.metrics import MAD_TO_SIGMA, robust_spread

SQUARE_SIZE = 256
SQUARE_ASPECT = 1.25  # height/width (or width/height) below this counts as square
ELONGATED_SHORT_SIDE = 192
MAX_SIDE = 512
STRIDE = 32  # the network input must be a multiple of this
LIGHTING_SPREAD = 0.15  # robust sigma of log mean grey above this: lighting varies between shots
DARK_MEAN = 60.0  # median mean grey below this: a dark part
TARGET_MEAN = 115.0  # about the ImageNet mean (0.45 x 255): where the teacher's features were learnt
MAX_GAIN = 8.0
NOISE_VISIBLE = 1.0  # grey levels of sensor noise after the gain above which it is smoothed away first
NOISE_SIDE = 256  # noise is measured on images at about the network's input size (its longer side)
MAX_DENOISE = 2.0  # Gaussian sigma (input pixels) at most: finer defects than this stay visible


@dataclass
class InputPlan:
    image_size: list[int]  # [height, width]
    normalize: str
    gain: float
    size_why: list[str]  # why the input size is what it is
    lighting_why: list[str]  # why the normalisation, gain and denoising are what they are
    denoise: float = 0.0

    @property
    def why(self) -> list[str]:
        return self.size_why + self.lighting_why

    def overrides(self) -> dict:
        return {"data.image_size": self.image_size, "data.normalize": self.normalize, "data.gain": self.gain,
                "data.denoise": self.denoise}


def noise_sigma(grey: np.ndarray) -> float:
    """Sensor noise of one grey image in grey levels (Immerkaer's kernel, whose response to smooth structure is
    zero and to white noise has 6 sigma; the median of its magnitude keeps edges from counting as noise)."""
    import cv2

    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = cv2.filter2D(grey.astype(np.float32), -1, k)[1:-1, 1:-1]
    return float(np.median(np.abs(r)) * MAD_TO_SIGMA / 6)


def denoise_for(noise: float, gain: float) -> float:
    """Blur sigma that keeps amplified noise near NOISE_VISIBLE (white noise shrinks by 1/(2 sqrt(pi) sigma))."""
    amplified = noise * gain
    if amplified <= NOISE_VISIBLE:
        return 0.0
    return round(min(MAX_DENOISE, max(0.5, amplified / (2 * math.sqrt(math.pi) * NOISE_VISIBLE))), 2)


def _multiple(x: float) -> int:
    return int(min(MAX_SIDE, max(STRIDE, round(x / STRIDE) * STRIDE)))


def plan_input(shapes: list[tuple[int, int]], mean_greys: list[float], noises: list[float] | None = None) -> InputPlan:
    """Input size, normalisation, gain and denoising for a part from its good images' (h, w), mean grey levels and
    sensor noise (grey levels at the input size)."""
    aspect = float(np.median([h / w for h, w in shapes]))
    if abs(math.log(aspect)) < math.log(SQUARE_ASPECT):
        size = [SQUARE_SIZE, SQUARE_SIZE]
        size_why = [f"median aspect (h/w) {aspect:.2f}: square input {SQUARE_SIZE} x {SQUARE_SIZE}"]
    else:
        long = _multiple(ELONGATED_SHORT_SIDE * max(aspect, 1 / aspect))
        size = [long, ELONGATED_SHORT_SIDE] if aspect > 1 else [ELONGATED_SHORT_SIDE, long]
        size_why = [f"median aspect (h/w) {aspect:.2f}: input {size[0]} x {size[1]} keeps the part's shape"]
    why: list[str] = []
    logm = np.log1p(np.asarray(mean_greys, np.float64))
    centre, spread = robust_spread(logm, 0.0)
    median = float(np.expm1(centre))
    if spread > LIGHTING_SPREAD:
        why.append(f"brightness varies between shots (log spread {spread:.2f} > {LIGHTING_SPREAD}): per-image normalisation")
        return InputPlan(size, "per_image", 1.0, size_why, why)
    gain = 1.0
    if median < DARK_MEAN:
        gain = round(min(MAX_GAIN, TARGET_MEAN / max(median, 1.0)), 2)
        why.append(f"a dark part (median grey {median:.0f} < {DARK_MEAN:.0f}): gain {gain:g} before ImageNet normalisation")
    else:
        why.append(f"steady lighting (log spread {spread:.2f}), median grey {median:.0f}: ImageNet normalisation")
    denoise = 0.0
    if noises and gain > 1:
        noise = float(np.median(noises))
        denoise = denoise_for(noise, gain)
        if denoise:
            why.append(f"sensor noise {noise:.2f} grey levels x gain {gain:g} would be texture: smoothed first "
                       f"(sigma {denoise:g} px)")
    return InputPlan(size, "imagenet", gain, size_why, why, denoise)
