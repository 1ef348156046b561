"""A part in a random pose seen in one pose: each frame is turned so the part's long axis is level, its heavier
end on the right, and its centre in the middle of the frame, before it is resized for the network (numpy + cv2).

The pose comes from the part's silhouette (edge_ad.region.foreground: what differs from the frame's border):
its centroid, the direction of its second moments and the sign of its third moment along that axis. A model
then learns one pose instead of every pose, and per-location statistics work again on a moving part. The map
is turned back afterwards, so it lies on the frame as it was taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_ad.region import foreground

MIN_PIXELS = 8  # silhouette pixels (at the analysis size) below this: no part, the frame is left as it is


@dataclass(frozen=True)
class Pose:
    """Where the part is in a frame: centroid (x, y) in frame pixels and the turn (degrees) that levels it."""

    cx: float
    cy: float
    angle: float

    def matrix(self, hw: tuple[int, int]) -> np.ndarray:
        """2x3 affine: frame pixel -> aligned pixel (the part's centre to the frame's centre, its axis level)."""
        h, w = hw
        m = cv2.getRotationMatrix2D((self.cx, self.cy), self.angle, 1.0)
        m[0, 2] += (w - 1) / 2 - self.cx
        m[1, 2] += (h - 1) / 2 - self.cy
        return m


def _silhouette_points(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) frame coordinates of the part's silhouette cells, measured on the frame and on the frame turned half a
    circle: the silhouette's morphological cleaning shifts it by about half an analysis cell in one direction of
    its grid, and the two measurements shift in opposite directions, so their union is centred."""
    h, w = image.shape[:2]
    xs_all, ys_all = [], []
    for turned in (False, True):
        mask = foreground(cv2.rotate(image, cv2.ROTATE_180) if turned else image)
        ys, xs = np.nonzero(mask)
        x = (xs + 0.5) * (w / mask.shape[1]) - 0.5
        y = (ys + 0.5) * (h / mask.shape[0]) - 0.5
        xs_all.append((w - 1) - x if turned else x)
        ys_all.append((h - 1) - y if turned else y)
    return np.concatenate(xs_all), np.concatenate(ys_all)


def part_pose(image: np.ndarray) -> Pose | None:
    """The pose of the part in one frame (BGR or RGB, uint8), or None when no part stands out from the border."""
    x, y = _silhouette_points(image)
    if len(x) < 2 * MIN_PIXELS:
        return None
    cx, cy = float(x.mean()), float(y.mean())
    dx, dy = x - cx, y - cy
    theta = 0.5 * np.arctan2(2 * np.mean(dx * dy), np.mean(dx * dx) - np.mean(dy * dy))
    along = dx * np.cos(theta) + dy * np.sin(theta)
    if np.mean(along ** 3) > 0:  # the long tail points right: half a turn more puts it left, the heavy end right
        theta += np.pi
    return Pose(cx, cy, float(np.degrees(theta)))


def align(image: np.ndarray, pose: Pose | None, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The frame turned into the part's reference pose (the ground mirrored where the frame had none: repeated
    border pixels would draw streaks that change with the angle)."""
    if pose is None:
        return image
    h, w = image.shape[:2]
    return cv2.warpAffine(image, pose.matrix((h, w)), (w, h), flags=interp, borderMode=cv2.BORDER_REFLECT_101)


def _box_affine(box: list[float] | None, hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """3x3: aligned frame pixel -> network input pixel, for the box [y0, y1, x0, x1] (fractions of the frame;
    None: the whole frame) stretched to out_hw."""
    h, w = hw
    y0, y1, x0, x1 = box or (0.0, 1.0, 0.0, 1.0)
    sx, sy = out_hw[1] / ((x1 - x0) * w), out_hw[0] / ((y1 - y0) * h)
    return np.array([[sx, 0, 0.5 * sx - 0.5 - x0 * w * sx], [0, sy, 0.5 * sy - 0.5 - y0 * h * sy], [0, 0, 1]])


def posed_affine(pose: Pose | None, hw: tuple[int, int], out_hw: tuple[int, int],
                 box: list[float] | None = None) -> np.ndarray:
    """3x3: frame pixel -> network input pixel of the posed view (turned, then the part's box stretched to out_hw)."""
    a = np.eye(3) if pose is None else np.vstack([pose.matrix(hw), [0, 0, 1]])
    return _box_affine(box, hw, out_hw) @ a


def posed_input(image: np.ndarray, pose: Pose | None, out_hw: tuple[int, int], box: list[float] | None = None) -> np.ndarray:
    """The posed view at the network input size in one resampling (an area shrink first where it is smaller)."""
    h, w = image.shape[:2]
    m = posed_affine(pose, (h, w), out_hw, box)
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if scale < 0.5:  # a bilinear warp would alias: shrink by area to about twice the final scale first
        f = min(1.0, 2 * scale)
        small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        pre = np.array([[sw / w, 0, 0.5 * sw / w - 0.5], [0, sh / h, 0.5 * sh / h - 0.5], [0, 0, 1]])
        image, m = small, m @ np.linalg.inv(pre)
    return cv2.warpAffine(image, m[:2], (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def map_back(amap: np.ndarray, posed: np.ndarray, view: np.ndarray, view_hw: tuple[int, int]) -> np.ndarray:
    """A map of the posed view laid on the view of the frame as taken (both 3x3 affines from frame pixels);
    what the posed view never saw reads 0."""
    m = (posed @ np.linalg.inv(view))[:2]  # view pixel -> posed pixel
    return cv2.warpAffine(amap.astype(np.float32), m, (view_hw[1], view_hw[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def part_box(images: list[np.ndarray], margin: float) -> list[float]:
    """[y0, y1, x0, x1] (fractions) holding the aligned part in every sampled good image, grown by `margin` of the
    side: the network then spends its pixels on the part, not on the ground around it."""
    masks = [foreground(align(im, part_pose(im))) for im in images]
    union = np.any(masks, axis=0)
    ys, xs = np.nonzero(union)
    if not len(xs):
        return [0.0, 1.0, 0.0, 1.0]
    h, w = union.shape
    y0, y1 = max(0.0, ys.min() / h - margin), min(1.0, (ys.max() + 1) / h + margin)
    x0, x1 = max(0.0, xs.min() / w - margin), min(1.0, (xs.max() + 1) / w + margin)
    return [round(float(v), 4) for v in (y0, y1, x0, x1)]


ALIGN_GAIN = 0.1  # aligning must raise the goods' median silhouette overlap by this much to be used
BOX_MARGIN = 0.05  # the aligned part's box grows by this fraction of the side (defects stick out, poses vary)


def plan_align(images: list[np.ndarray]) -> tuple[bool, str]:
    """Whether frames of this part should be turned into one pose (data.align), from good images alone, and why:
    only when the part moves (its silhouettes overlap little) and aligned silhouettes overlap well."""
    from edge_ad.region import MIN_POSE_OVERLAP, pose_overlap

    before = pose_overlap(images)
    if before is None:
        return False, "no single part on a plain ground: frames are not aligned"
    if before >= MIN_POSE_OVERLAP:
        return False, f"the part stays in place (silhouette overlap {before:.2f}): frames are not aligned"
    after = pose_overlap([align(im, part_pose(im)) for im in images])
    if after is not None and after >= MIN_POSE_OVERLAP and after >= before + ALIGN_GAIN:
        return True, (f"the part moves between shots (silhouette overlap {before:.2f}); turned level and centred it "
                      f"overlaps {after:.2f}: every frame is aligned to that pose before it is inspected")
    return False, (f"the part moves between shots (silhouette overlap {before:.2f}) and aligning it does not hold "
                   f"it in one pose ({after if after is not None else 0:.2f}): frames are not aligned")
