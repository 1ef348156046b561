"""Image I/O, MVTec-layout listing and the one preprocessing path shared by training, export and runtime.

numpy + cv2 only: the Jetson runtime imports this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_ad.config import DataConfig
from edge_ad.errors import EdgeAdError
from edge_ad.imagesize import header_size
from edge_ad.pose import Pose, map_back, part_pose, posed_affine, posed_input

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)  # (x/255 - mean)/std == x*_SCALE + _BIAS
_BIAS = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
LETTERBOX_FILL = 0  # pad value (uint8) around a letterboxed image
MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpx: larger files are refused before decoding (a 4K frame is 8.3 Mpx)
MAX_IMAGE_BYTES = 512 << 20  # files larger than this are not read at all


class ImageError(EdgeAdError):
    """An image file is missing, unreadable or of an unsupported kind."""


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8/16-bit or float) -> contiguous BGR uint8."""
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0)  # NaN/inf pixels of a float TIFF read as 0
        hi = 1.0 if float(img.max(initial=0)) <= 1.0 else 255.0
        img = np.clip(img * (255.0 / hi), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ImageError(f"unsupported image shape {img.shape}")
    return np.ascontiguousarray(img)


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as BGR uint8, whatever its channels and bit depth; a file whose header claims more than
    max_pixels is refused before it is decoded."""
    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p} is a folder, not an image")
    if not p.is_file():
        raise ImageError(f"image not found: {p}")
    try:
        size = p.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"{p}: {size / 2**20:.0f} MiB is larger than any image edge_ad reads "
                             f"({MAX_IMAGE_BYTES >> 20} MiB)")
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"cannot read image {p}: {e.strerror or e}") from None
    wh = header_size(data[:1 << 20].tobytes())  # JPEG EXIF may come before the size
    if wh is not None and wh[0] * wh[1] > max_pixels:
        raise ImageError(f"{p}: {wh[0]}x{wh[1]} pixels is more than the {max_pixels / 1e6:.0f} Mpx edge_ad decodes")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:
        first = (str(e).strip().splitlines() or ["cv2.error"])[-1][:160]
        raise ImageError(f"cannot decode image {p} ({first})") from None
    if img is None or img.size == 0:
        raise ImageError(f"cannot decode image (corrupt or not an image): {p}")
    try:
        return to_bgr8(img)
    except ImageError as e:
        raise ImageError(f"{p}: {e}") from None


def load_mask(path: str | Path | None, shape: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask as bool HxW; a missing mask file means an empty mask."""
    if path is None or not Path(path).is_file():
        return np.zeros(shape, dtype=bool)
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ImageError(f"cannot decode mask: {path}")
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m > 127


@dataclass(frozen=True)
class Geometry:
    """How a source image of size (h, w) maps into the network input."""

    scaled: tuple[int, int]  # (h, w) after resizing
    pad: tuple[int, int]  # (top, left) padding added by letterbox
    canvas: tuple[int, int]  # (h, w) after resize (+ pad)
    crop: tuple[int, int]  # (top, left) offset of the centre crop within the canvas
    out: tuple[int, int]  # (h, w) network input (view_size: an aligned part's view)

    def affine(self, src_hw: tuple[int, int]) -> np.ndarray:
        """3x3: pixel of the (h, w) frame this was made for -> pixel of the placed image (pixel centres kept)."""
        sx, sy = self.scaled[1] / src_hw[1], self.scaled[0] / src_hw[0]
        return np.array([[sx, 0, 0.5 * sx - 0.5 + self.pad[1] - self.crop[1]],
                         [0, sy, 0.5 * sy - 0.5 + self.pad[0] - self.crop[0]], [0, 0, 1]], np.float64)


def view_size(cfg: DataConfig) -> tuple[int, int]:
    """(h, w) of the maps a detector returns: the network input; for an aligned part (its input is the part's box,
    often elongated) a square of the input's longer side, so the map turned back onto the frame keeps the posed
    view's resolution in both directions."""
    if cfg.align:
        side = max(cfg.image_size)
        return side, side
    return cfg.input_size


def geometry(src_hw: tuple[int, int], cfg: DataConfig) -> Geometry:
    """How a frame lies in prepare_view (and so in a detector's maps)."""
    h, w = src_hw
    th, tw = view_size(cfg) if cfg.align else cfg.image_size
    if cfg.resize == "letterbox":
        s = min(th / h, tw / w)
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        pad = ((th - sh) // 2, (tw - sw) // 2)
    else:
        sh, sw, pad = th, tw, (0, 0)
    oh, ow = view_size(cfg)
    crop = ((th - oh) // 2, (tw - ow) // 2)
    return Geometry((sh, sw), pad, (th, tw), crop, (oh, ow))


def valid_box(src_hw: tuple[int, int], cfg: DataConfig) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of real image content in the network input (letterbox padding excluded)."""
    g = geometry(src_hw, cfg)
    y0 = max(g.pad[0] - g.crop[0], 0)
    x0 = max(g.pad[1] - g.crop[1], 0)
    y1 = min(g.pad[0] + g.scaled[0] - g.crop[0], g.out[0])
    x1 = min(g.pad[1] + g.scaled[1] - g.crop[1], g.out[1])
    return y0, y1, x0, x1


def _place(img: np.ndarray, cfg: DataConfig, interp: int, fill: int) -> np.ndarray:
    g = geometry(img.shape[:2], cfg)
    resized = cv2.resize(img, (g.scaled[1], g.scaled[0]), interpolation=interp)
    if g.scaled != g.canvas:
        canvas = np.full((*g.canvas, *img.shape[2:]), fill, dtype=img.dtype)
        canvas[g.pad[0]:g.pad[0] + g.scaled[0], g.pad[1]:g.pad[1] + g.scaled[1]] = resized
        resized = canvas
    return np.ascontiguousarray(resized[g.crop[0]:g.crop[0] + g.out[0], g.crop[1]:g.crop[1] + g.out[1]])


def crop_roi(frame: np.ndarray, roi: list[int] | None) -> np.ndarray:
    """The station's region of interest [x, y, width, height] of a frame (None: the whole frame)."""
    if not roi:
        return frame
    x, y, w, h = roi
    out = frame[y:y + h, x:x + w]
    if out.size == 0:
        raise ImageError(f"roi {roi} lies outside the {frame.shape[1]}x{frame.shape[0]} frame")
    return out


def _check_frame(image_bgr: np.ndarray) -> None:
    if not (isinstance(image_bgr, np.ndarray) and image_bgr.dtype == np.uint8 and image_bgr.ndim == 3
            and image_bgr.shape[2] == 3 and min(image_bgr.shape[:2]) > 0):
        got = f"{image_bgr.dtype} {image_bgr.shape}" if isinstance(image_bgr, np.ndarray) else type(image_bgr).__name__
        raise ImageError(f"expected a BGR uint8 HxWx3 frame, got {got}")


def _resized(image_bgr: np.ndarray, cfg: DataConfig) -> np.ndarray:
    interp = cv2.INTER_AREA if image_bgr.shape[0] > cfg.image_size[0] else cv2.INTER_LINEAR
    return cv2.cvtColor(_place(image_bgr, cfg, interp, LETTERBOX_FILL), cv2.COLOR_BGR2RGB)


def prepare_posed(image_bgr: np.ndarray, cfg: DataConfig) -> tuple[np.ndarray, Pose | None]:
    """Geometric step: BGR uint8 frame -> RGB uint8 at the network input size, turned into the part's reference
    pose when data.align is on (the pose is returned so the map can be turned back)."""
    _check_frame(image_bgr)
    if not cfg.align:
        return _resized(image_bgr, cfg), None
    pose = part_pose(image_bgr)
    posed = posed_input(image_bgr, pose, tuple(cfg.image_size), cfg.align_box if pose else None)
    return cv2.cvtColor(posed, cv2.COLOR_BGR2RGB), pose


def prepare(image_bgr: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """What the network sees of a frame (RGB uint8 at the input size); training, the judge and every backend."""
    return prepare_posed(image_bgr, cfg)[0]


def prepare_view(image_bgr: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """The frame at the input size as it was taken (never turned): where a detector's maps lie."""
    _check_frame(image_bgr)
    return _resized(image_bgr, cfg)


def input_affine(src_hw: tuple[int, int], cfg: DataConfig) -> np.ndarray:
    """3x3 affine of the resize (letterbox, crop): frame pixel -> network input pixel, as prepare_view places it."""
    return geometry(src_hw, cfg).affine(src_hw)


def map_to_view(amap: np.ndarray, pose: Pose | None, src_hw: tuple[int, int], cfg: DataConfig) -> np.ndarray:
    """A map of the network's posed view laid on prepare_view's geometry (the frame as it was taken)."""
    posed = posed_affine(pose, src_hw, tuple(cfg.image_size), cfg.align_box if pose else None)
    return map_back(amap, posed, input_affine(src_hw, cfg), view_size(cfg))


def prepare_mask(mask: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """prepare_view's geometry for a bool mask (nearest neighbour, padding = normal): where a detector's maps lie."""
    return _place(mask.astype(np.uint8), cfg, cv2.INTER_NEAREST, 0) > 0


def normalize(rgb: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 3xHxW as the teacher expects (denoised first when the part's plan says so)."""
    if cfg.denoise > 0:  # in float: rounding the smoothed dark image to 8 bits would step it by `gain` grey levels
        rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), cfg.denoise)
    if cfg.normalize == "per_image":  # gain cancels out: each image is brought to zero mean, unit std
        x = rgb.astype(np.float32) * (1.0 / 255.0)
        x = (x - x.mean()) / (x.std() + 1e-6) * IMAGENET_STD.mean() + IMAGENET_MEAN.mean()
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
        return np.ascontiguousarray(x.transpose(2, 0, 1))
    out = np.empty((3, *rgb.shape[:2]), np.float32)
    scale = _SCALE * np.float32(cfg.gain)
    for c in range(3):  # one fused scale per plane straight into CHW: no float HWC copy, no transpose
        np.multiply(rgb[:, :, c], scale[c], out=out[c], casting="unsafe")
        out[c] += _BIAS[c]
    return out


def preprocess(image_bgr: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """The single preprocessing function: BGR uint8 frame -> normalised float32 3xHxW tensor."""
    return normalize(prepare(image_bgr, cfg), cfg)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 good, 1 defective
    defect: str  # "good" or the defect type folder name
    mask_path: Path | None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside a folder, sorted by name."""
    f = Path(folder)
    if not f.is_dir():
        raise ImageError(f"image folder not found: {f}")
    return sorted(p for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_split(root: str | Path, split: str) -> list[Sample]:
    """Samples of an MVTec-layout category; split is 'train' (good only) or 'test'."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise ImageError(f"{root} has no {split}/ folder (expected MVTec layout: train/good, test/<type>)")
    samples = []
    for sub in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        label = 0 if sub.name == "good" else 1
        for p in list_images(sub):
            mask = root / "ground_truth" / sub.name / f"{p.stem}_mask.png" if label else None
            samples.append(Sample(p, label, sub.name, mask))
    if not samples:
        raise ImageError(f"no images found under {split_dir}")
    return samples


def load_prepared(paths: list[Path], cfg: DataConfig) -> tuple[list[np.ndarray], list[Path]]:
    """Prepared RGB uint8 images for many files; unreadable files are reported by name and skipped."""
    images, kept = [], []
    for p in paths:
        try:
            images.append(prepare(load_image(p), cfg))
            kept.append(p)
        except ImageError as e:
            log.warning("skipping %s", e)
    return images, kept
