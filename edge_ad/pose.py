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

from edge_ad.region import WORK_SIDE, foreground

MIN_PIXELS = 8  # silhouette pixels (at the analysis size) below this: no part, the frame is left as it is


@dataclass(frozen=True)
class Pose:
    """Where the part is in a frame: centroid (x, y) in frame pixels and the turn (degrees) that levels it."""

    cx: float
    cy: float
    angle: float

    def matrix(self, hw: tuple[int, int]) -> np.ndarray:
        """2x3 affine: frame pixel -> aligned pixel (the part's centre to the aligned canvas' centre, its axis
        level)."""
        side = canvas(hw)[0]
        m = cv2.getRotationMatrix2D((self.cx, self.cy), self.angle, 1.0)
        m[0, 2] += (side - 1) / 2 - self.cx
        m[1, 2] += (side - 1) / 2 - self.cy
        return m


def canvas(hw: tuple[int, int]) -> tuple[int, int]:
    """The aligned frame: a square of the frame's diagonal, so a part anywhere in the frame stays whole when its
    centre is moved to the middle and it is turned (a long part off-centre would lose its end otherwise)."""
    side = int(np.ceil(np.hypot(*hw)))
    return side, side


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


def _pose_of(x: np.ndarray, y: np.ndarray) -> Pose | None:
    if len(x) < 2 * MIN_PIXELS:
        return None
    cx, cy = float(x.mean()), float(y.mean())
    dx, dy = x - cx, y - cy
    theta = 0.5 * np.arctan2(2 * np.mean(dx * dy), np.mean(dx * dx) - np.mean(dy * dy))
    along = dx * np.cos(theta) + dy * np.sin(theta)
    if np.mean(along ** 3) > 0:  # the long tail points right: half a turn more puts it left, the heavy end right
        theta += np.pi
    return Pose(cx, cy, float(np.degrees(theta)))


def part_pose(image: np.ndarray) -> Pose | None:
    """The pose of the part in one frame (BGR or RGB, uint8), or None when no part stands out from the border."""
    return _pose_of(*_silhouette_points(image))


def ground_colour(image: np.ndarray) -> tuple[float, ...]:
    """The median colour of the frame's outermost pixels: what the turned frame shows where the camera saw nothing
    (repeated border pixels draw streaks that change with the angle; a mirrored border can repeat the part)."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).reshape(-1, image.shape[2] if image.ndim == 3 else 1)
    return tuple(float(v) for v in np.median(ring, axis=0))


def align(image: np.ndarray, pose: Pose | None, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The frame turned into the part's reference pose on the aligned canvas (ground_colour where it had none)."""
    if pose is None:
        return image
    h, w = image.shape[:2]
    side = canvas((h, w))[0]
    return cv2.warpAffine(image, pose.matrix((h, w)), (side, side), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=ground_colour(image))


def _box_affine(box: list[float] | None, hw: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """3x3: aligned frame pixel -> network input pixel, for the box [y0, y1, x0, x1] (fractions of the aligned
    frame, whose size is hw; None: all of it) stretched to out_hw."""
    h, w = hw
    y0, y1, x0, x1 = box or (0.0, 1.0, 0.0, 1.0)
    sx, sy = out_hw[1] / ((x1 - x0) * w), out_hw[0] / ((y1 - y0) * h)
    return np.array([[sx, 0, 0.5 * sx - 0.5 - x0 * w * sx], [0, sy, 0.5 * sy - 0.5 - y0 * h * sy], [0, 0, 1]])


def posed_affine(pose: Pose | None, hw: tuple[int, int], out_hw: tuple[int, int],
                 box: list[float] | None = None) -> np.ndarray:
    """3x3: frame pixel -> network input pixel of the posed view (turned, then the part's box stretched to out_hw)."""
    if pose is None:  # no part found: the whole frame, as it was taken
        return _box_affine(None, hw, out_hw)
    return _box_affine(box, canvas(hw), out_hw) @ np.vstack([pose.matrix(hw), [0, 0, 1]])


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
    return cv2.warpAffine(image, m[:2], (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=ground_colour(image))


def map_back(amap: np.ndarray, posed: np.ndarray, view: np.ndarray, view_hw: tuple[int, int]) -> np.ndarray:
    """A map of the posed view laid on the view of the frame as taken (both 3x3 affines from frame pixels);
    what the posed view never saw reads 0."""
    m = (posed @ np.linalg.inv(view))[:2]  # view pixel -> posed pixel
    return cv2.warpAffine(amap.astype(np.float32), m, (view_hw[1], view_hw[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def aligned_silhouette(image: np.ndarray, side: int = WORK_SIDE) -> np.ndarray | None:
    """The part's silhouette on the aligned canvas (bool, side x side), from the silhouette found on the frame as
    taken (the border there is the real ground; on the canvas it would be the fill) moved by the pose."""
    x, y = _silhouette_points(image)
    pose = _pose_of(x, y)
    if pose is None:
        return None
    h, w = image.shape[:2]
    m = pose.matrix((h, w))
    u, v = m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]
    cell = canvas((h, w))[0] / side
    out = np.zeros((side, side), np.uint8)
    iu, iv = np.clip((u / cell).astype(int), 0, side - 1), np.clip((v / cell).astype(int), 0, side - 1)
    out[iv, iu] = 1
    return cv2.morphologyEx(out, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0  # the cells the points skipped


def _box_of(masks: list[np.ndarray], margin: float) -> list[float]:
    """[y0, y1, x0, x1] (fractions of the aligned canvas) holding every aligned silhouette, grown by `margin` of the
    side: the network then spends its pixels on the part, not on the ground around it."""
    union = np.any(masks, axis=0) if masks else np.zeros((1, 1), bool)
    ys, xs = np.nonzero(union)
    if not len(xs):
        return [0.0, 1.0, 0.0, 1.0]
    h, w = union.shape
    y0, y1 = max(0.0, ys.min() / h - margin), min(1.0, (ys.max() + 1) / h + margin)
    x0, x1 = max(0.0, xs.min() / w - margin), min(1.0, (xs.max() + 1) / w + margin)
    return [round(float(v), 4) for v in (y0, y1, x0, x1)]


ALIGN_GAIN = 0.1  # aligning must raise the goods' median silhouette overlap by this much to be used
BOX_MARGIN = 0.05  # the aligned part's box grows by this fraction of the side (defects stick out, poses vary)


@dataclass
class AlignPlan:
    """Whether frames of this part are turned into one pose (data.align), why, the part's box on the aligned canvas
    (data.align_box), and whether the part moves between shots at all (the frame mask's cue, edge_ad.partmask)."""

    align: bool
    why: str
    box: list[float] | None = None
    moves: bool = False


def plan_align(images: list[np.ndarray], margin: float = BOX_MARGIN) -> AlignPlan:
    """The align plan from good images alone: align only when the part moves (its silhouettes overlap little) and
    aligned silhouettes overlap well."""
    from edge_ad.region import MIN_POSE_OVERLAP, median_overlap, pose_overlap

    before = pose_overlap(images)
    if before is None:
        return AlignPlan(False, "no single part on a plain ground: frames are not aligned")
    if before >= MIN_POSE_OVERLAP:
        return AlignPlan(False, f"the part stays in place (silhouette overlap {before:.2f}): frames are not aligned")
    aligned = [m for m in (aligned_silhouette(im) for im in images) if m is not None]
    after = median_overlap(aligned)
    if after is not None and after >= MIN_POSE_OVERLAP and after >= before + ALIGN_GAIN:
        return AlignPlan(True, f"the part moves between shots (silhouette overlap {before:.2f}); turned level and "
                         f"centred it overlaps {after:.2f}: every frame is aligned to that pose before it is inspected",
                         _box_of(aligned, margin), moves=True)
    return AlignPlan(False, f"the part moves between shots (silhouette overlap {before:.2f}) and aligning it does not "
                     f"hold it in one pose ({after if after is not None else 0:.2f}): frames are not aligned", moves=True)
