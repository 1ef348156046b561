"""Procedural demo part (a machined disc) in MVTec layout, so the pipeline runs end to end without real data."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_ad.errors import EdgeAdError
from edge_ad.progress import progress as progress_bar

DEFECT_TYPES = ("scratch", "hole", "stain")

# Geometry as fractions of the disc radius; sizes in pixels refer to a 256 px image and scale with it.
REFERENCE_SIZE = 256
DISC_RADIUS = 0.40  # of the image size
HUB_RADIUS = 0.30
BORE_RADIUS = 0.12
BOLT_CIRCLE = 0.64
BOLT_RADIUS = 0.075
BOLT_COUNT = 6
RIM_WIDTH = 0.05

# Good-part variation: the model must generalise over these, nothing else changes.
MAX_ROTATION_DEG = 5.0
MAX_SHIFT_PX = 3.0
BRIGHTNESS_JITTER = 0.05
NOISE_SIGMA = (1.5, 3.0)

# Defects: each test image gets one; its mask must cover this fraction of the image.
MASK_AREA_RANGE = (0.002, 0.03)
SCRATCH_LENGTH_PX = (45.0, 90.0)
HOLE_RADIUS_PX = (6.0, 12.0)
STAIN_RADIUS_PX = (12.0, 24.0)
STAIN_COLOURS_BGR = ((30.0, 70.0, 140.0), (70.0, 40.0, 50.0), (60.0, 120.0, 60.0))  # rust, oil, coolant


@dataclass(frozen=True)
class _Pose:
    """Where one rendered part sits: centre (x, y), disc radius and rotation, all in pixels/radians."""

    cx: float
    cy: float
    radius: float
    rotation: float

    def bolt_centres(self) -> np.ndarray:
        angles = self.rotation + np.arange(BOLT_COUNT) * 2 * np.pi / BOLT_COUNT
        r = BOLT_CIRCLE * self.radius
        return np.stack([self.cx + r * np.cos(angles), self.cy + r * np.sin(angles)], axis=1)


def _soft(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (positive inside), one pixel wide."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _design(seed: int) -> dict:
    """Machining texture of this part family; shared by every good part of one seed."""
    rng = np.random.default_rng([seed, 0xD15C])
    return {
        "ring_phase": rng.uniform(0, 2 * np.pi, 3),
        "streak_freq": rng.integers(60, 240, 6),
        "streak_phase": rng.uniform(0, 2 * np.pi, 6),
        "streak_amp": rng.uniform(0.5, 1.5, 6),
    }


def _render_good(rng: np.random.Generator, design: dict, size: int) -> tuple[np.ndarray, _Pose]:
    """One good part as float32 BGR in [0, 255] (before noise), plus its pose."""
    scale = size / REFERENCE_SIZE
    pose = _Pose(
        cx=size / 2 + rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX) * scale,
        cy=size / 2 + rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX) * scale,
        radius=DISC_RADIUS * size,
        rotation=np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
    )
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dx, dy = xx - pose.cx, yy - pose.cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    rn = r / pose.radius
    R = pose.radius

    # Turned surface: fine concentric tool marks, faint radial streaks, and the bow-tie highlight
    # of a lathe-finished face lit from the top left.
    rings = (
        5.0 * np.sin(2 * np.pi * r / (2.6 * scale) + design["ring_phase"][0])
        + 3.0 * np.sin(2 * np.pi * r / (7.1 * scale) + design["ring_phase"][1])
        + 4.0 * np.sin(2 * np.pi * rn * 3.0 + design["ring_phase"][2])
    )
    part_theta = theta - pose.rotation
    streaks = sum(
        a * np.sin(f * part_theta + p)
        for f, p, a in zip(design["streak_freq"], design["streak_phase"], design["streak_amp"])
    )
    light = np.float32(np.deg2rad(-125.0))
    bowtie = 22.0 * np.cos(2 * (theta - light)) ** 2
    shading = 1.0 + 0.12 * (np.cos(light) * dx + np.sin(light) * dy) / R
    face = (128.0 + rings + streaks + bowtie) * shading

    # Raised hub with a chamfer, dark bore.
    hub = _soft(HUB_RADIUS * R - r)
    face = face + 18.0 * hub
    chamfer_hub = np.exp(-(((r - HUB_RADIUS * R) / (1.3 * scale)) ** 2))
    face = face - 45.0 * chamfer_hub
    bore = _soft(BORE_RADIUS * R - r)
    bore_lum = 22.0 + 30.0 * np.clip(rn / BORE_RADIUS, 0, 1) ** 3
    face = face * (1 - bore) + bore_lum * bore

    # Outer rim chamfer: a bright band, then the edge.
    rim = np.exp(-(((r - (1 - RIM_WIDTH / 2) * R) / (RIM_WIDTH * R / 3)) ** 2))
    face = face + 35.0 * rim * (0.6 + 0.4 * np.cos(theta - light))

    # Bolt holes: dark inside, lit far wall, bright chamfer ring.
    for bx, by in pose.bolt_centres():
        hd = np.hypot(xx - bx, yy - by)
        hr = BOLT_RADIUS * R
        inside = _soft(hr - hd)
        wall = np.clip(((xx - bx) * np.cos(light) + (yy - by) * np.sin(light)) / hr, -1, 1)
        hole_lum = 28.0 - 18.0 * wall
        ring = np.exp(-(((hd - hr - 1.2 * scale) / (1.2 * scale)) ** 2))
        face = face * (1 - inside) + hole_lum * inside + 40.0 * ring

    disc = _soft(R - r)
    background = 38.0 + 10.0 * (yy / size)
    shadow = np.exp(-np.clip(r - R, 0, None) / (6.0 * scale)) * 14.0 * (r > R)
    lum = face * disc + (background - shadow) * (1 - disc)
    lum = lum * (1.0 + rng.uniform(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER))

    steel = np.array([1.03, 1.0, 0.96], np.float32)  # BGR: cool grey
    image = lum[..., None] * (steel * disc[..., None] + (1 - disc[..., None]))
    return image.astype(np.float32), pose


def _surface(size: int, pose: _Pose) -> np.ndarray:
    """Plain machined face where a defect may sit: between hub and rim, away from bolt holes."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    r = np.hypot(xx - pose.cx, yy - pose.cy)
    ok = (r > (HUB_RADIUS + 0.04) * pose.radius) & (r < (1 - RIM_WIDTH - 0.03) * pose.radius)
    for bx, by in pose.bolt_centres():
        ok &= np.hypot(xx - bx, yy - by) > (BOLT_RADIUS + 0.04) * pose.radius
    return ok


def _face(size: int, pose: _Pose) -> np.ndarray:
    """Solid metal a stain can spread over: the disc without its bore and bolt holes (soft edges)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    r = np.hypot(xx - pose.cx, yy - pose.cy)
    face = _soft(pose.radius - r) * _soft(r - BORE_RADIUS * pose.radius)
    for bx, by in pose.bolt_centres():
        face *= _soft(np.hypot(xx - bx, yy - by) - BOLT_RADIUS * pose.radius)
    return face


def _draw_scratch(rng: np.random.Generator, image: np.ndarray, surface: np.ndarray, scale: float) -> np.ndarray:
    """A thin, slightly curved line, dark or bright; returns its mask."""
    size = image.shape[0]
    ys, xs = np.nonzero(surface)
    while True:
        i = rng.integers(len(xs))
        p0 = np.array([xs[i], ys[i]], np.float64)
        length = rng.uniform(*SCRATCH_LENGTH_PX) * scale
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        bend = rng.uniform(-0.15, 0.15) * length
        t = np.linspace(0, 1, 24)[:, None]
        points = p0 + t * length * direction + (4 * t * (1 - t)) * bend * normal
        px = np.round(points).astype(int)
        if (px >= 0).all() and (px < size).all() and surface[px[:, 1], px[:, 0]].all():
            break
    thickness = max(1, round(1.6 * scale))
    layer = np.zeros((size, size), np.float32)
    curve = [np.round(points * 16).astype(np.int32)]
    cv2.polylines(layer, curve, False, 1.0, thickness, cv2.LINE_AA, shift=4)
    sign = rng.choice([-1.0, 1.0])
    image += (sign * rng.uniform(65, 95) * layer)[..., None]
    mask = np.zeros((size, size), np.uint8)
    cv2.polylines(mask, curve, False, 255, thickness + max(2, round(2 * scale)), cv2.LINE_8, shift=4)
    return mask


def _draw_hole(rng: np.random.Generator, image: np.ndarray, surface: np.ndarray, scale: float) -> np.ndarray:
    """A dark pit with a lit far wall; returns its mask."""
    size = image.shape[0]
    radius = rng.uniform(*HOLE_RADIUS_PX) * scale
    # Keep the whole pit on the plain face.
    clearance = cv2.erode(surface.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(radius) + 3, 2 * int(radius) + 3)))
    ys, xs = np.nonzero(clearance if clearance.any() else surface)
    i = rng.integers(len(xs))
    cx, cy = xs[i] + rng.uniform(-0.5, 0.5), ys[i] + rng.uniform(-0.5, 0.5)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    d = np.hypot(xx - cx, yy - cy)
    inside = _soft(radius - d)
    light = np.deg2rad(-125.0)
    wall = np.clip(((xx - cx) * np.cos(light) + (yy - cy) * np.sin(light)) / radius, -1, 1)
    depth = np.clip(d / radius, 0, 1) ** 2
    lum = 14.0 + 25.0 * depth * np.clip(-wall, 0, 1) + 6.0 * depth
    edge = np.exp(-(((d - radius) / (1.0 * scale)) ** 2)) * np.clip(wall, 0, 1) * 45.0
    image[:] = image * (1 - inside[..., None]) + lum[..., None] * inside[..., None] + edge[..., None]
    return np.where(d <= radius + 1.0, 255, 0).astype(np.uint8)


def _draw_stain(rng: np.random.Generator, image: np.ndarray, face: np.ndarray, surface: np.ndarray,
                scale: float) -> np.ndarray:
    """A blotchy translucent colour blob (rust, oil or coolant residue); returns its mask."""
    size = image.shape[0]
    rho = rng.uniform(*STAIN_RADIUS_PX) * scale
    # Centre far enough inside the plain face that most of the blob stays on it.
    clearance = cv2.erode(surface.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (int(rho) | 1, int(rho) | 1)))
    ys, xs = np.nonzero(clearance if clearance.any() else surface)
    i = rng.integers(len(xs))
    cx, cy = float(xs[i]), float(ys[i])
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    field = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(4, 8)):
        ox, oy = rng.normal(0, 0.45 * rho, 2)
        sx, sy = rng.uniform(0.25, 0.55, 2) * rho
        field += np.exp(-(((xx - cx - ox) / sx) ** 2 + ((yy - cy - oy) / sy) ** 2) / 2)
    # Low-frequency noise makes the outline ragged rather than a sum of ellipses.
    cells = max(4, size // max(4, int(rho / 3)))
    noise = cv2.resize(rng.normal(0, 1, (cells, cells)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    envelope = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (1.2 * rho) ** 2))
    field = field / field.max() + 0.12 * noise * envelope
    level = 0.35
    coverage = np.clip((field - level) / 0.15, 0, 1) * face
    # Drop specks: each tiny satellite would count as a whole region in AUPRO.
    count, labels, stats, _ = cv2.connectedComponentsWithStats((coverage > 0.1).astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if count > 1:
        kept = np.isin(labels, 1 + np.flatnonzero(areas >= 0.15 * areas.max())).astype(np.uint8)
        coverage *= cv2.dilate(kept, np.ones((3, 3), np.uint8))
    colour = np.array(STAIN_COLOURS_BGR[rng.integers(len(STAIN_COLOURS_BGR))], np.float32)
    opacity = rng.uniform(0.55, 0.75)
    alpha = (opacity * coverage)[..., None]
    # Tint multiplies the surface so the machining marks still show through the stain.
    tinted = image * (colour / 128.0)
    image[:] = image * (1 - alpha) + tinted * alpha
    return np.where(coverage > 0.1, 255, 0).astype(np.uint8)


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise and quantise to uint8."""
    sigma = rng.uniform(*NOISE_SIGMA)
    noisy = image + rng.normal(0, sigma, image.shape[:2]).astype(np.float32)[..., None]
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def render_sample(seed: int, split: str, index: int, defect: str | None, size: int = REFERENCE_SIZE
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Render one image (BGR uint8) and, for a defect, its mask (uint8 0/255); deterministic per arguments."""
    if defect is not None and defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect type {defect!r}; choose from {DEFECT_TYPES}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    split_code = 1 if split == "train" else 2
    defect_code = 0 if defect is None else 1 + DEFECT_TYPES.index(defect)
    rng = np.random.default_rng([seed, split_code, defect_code, index])
    image, pose = _render_good(rng, _design(seed), size)
    mask = None
    if defect is not None:
        scale = size / REFERENCE_SIZE
        surface = _surface(size, pose)
        face = _face(size, pose)
        for _ in range(20):  # resample until the mask area is in range
            candidate = image.copy()
            if defect == "scratch":
                mask = _draw_scratch(rng, candidate, surface, scale)
            elif defect == "hole":
                mask = _draw_hole(rng, candidate, surface, scale)
            else:
                mask = _draw_stain(rng, candidate, face, surface, scale)
            area = np.count_nonzero(mask) / mask.size
            if MASK_AREA_RANGE[0] <= area <= MASK_AREA_RANGE[1]:
                break
        image = candidate
    return _finish(image, rng), mask


def _plan(n_train: int, n_test_good: int, n_test_bad: int) -> list[tuple[str, str, int]]:
    """(split, class, index) for every image; defects are dealt round-robin over the types."""
    jobs = [("train", "good", i) for i in range(n_train)]
    jobs += [("test", "good", i) for i in range(n_test_good)]
    counts = dict.fromkeys(DEFECT_TYPES, 0)
    for k in range(n_test_bad):
        kind = DEFECT_TYPES[k % len(DEFECT_TYPES)]
        jobs.append(("test", kind, counts[kind]))
        counts[kind] += 1
    return jobs


def _check_args(n_train: int, n_test_good: int, n_test_bad: int, size: int) -> None:
    if n_train < 1 or n_test_good < 0 or n_test_bad < 0:
        raise EdgeAdError(f"need n_train >= 1 and non-negative test counts, got {n_train}, {n_test_good}, "
                          f"{n_test_bad}")
    if size < 64:
        raise EdgeAdError(f"demo image size must be at least 64 px, got {size}")


def make_demo_data(out_dir: str | Path, n_train: int = 60, n_test_good: int = 20, n_test_bad: int = 30,
                   size: int = 256, seed: int = 0, overwrite: bool = False, progress: bool = True) -> Path:
    """Write a synthetic MVTec-layout category (train/good, test/<type>, ground_truth/<type>) atomically."""
    _check_args(n_train, n_test_good, n_test_bad, size)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise EdgeAdError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EdgeAdError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the dataset should read like any other folder
    try:
        for split, kind, index in progress_bar(_plan(n_train, n_test_good, n_test_bad), desc="demo data",
                                               unit="img", enabled=progress):
            image, mask = render_sample(seed, split, index, None if kind == "good" else kind, size)
            folder = tmp / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            _write_png(folder / f"{index:03d}.png", image)
            if mask is not None:
                gt = tmp / "ground_truth" / kind
                gt.mkdir(parents=True, exist_ok=True)
                _write_png(gt / f"{index:03d}_mask.png", mask)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise EdgeAdError(f"could not write {path}")


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished temp dir onto `out`; an old `out` is moved aside first and then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
