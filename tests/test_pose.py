"""A part in a random pose is turned into one pose before it is inspected, and its map is turned back onto the frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_ad import data as D
from edge_ad.config import DataConfig
from edge_ad.pose import align, part_pose, plan_align, posed_input
from edge_ad.region import foreground


def screw_like(rng: np.random.Generator, angle: float, centre: tuple[float, float], size: int = 240) -> np.ndarray:
    """A dark rod with a wide head on a light, slightly noisy ground, turned by `angle` about `centre` (BGR)."""
    part = np.zeros((size, size), np.uint8)
    c = size // 2
    cv2.rectangle(part, (c - 70, c - 7), (c + 50, c + 7), 255, -1)  # the shank
    cv2.rectangle(part, (c + 50, c - 20), (c + 62, c + 20), 255, -1)  # the head: the heavy end
    m = cv2.getRotationMatrix2D((c, c), angle, 1.0)
    m[:, 2] += np.array(centre) - c
    part = cv2.warpAffine(part, m, (size, size), flags=cv2.INTER_NEAREST)
    ground = rng.normal(190, 2.0, (size, size)).clip(0, 255)
    grey = np.where(part > 0, 70.0, ground).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(int((a | b).sum()), 1))


def test_a_part_in_any_pose_is_turned_into_one_pose():
    rng = np.random.default_rng(0)
    ref = foreground(align(screw_like(rng, 0.0, (120, 120)), part_pose(screw_like(rng, 0.0, (120, 120)))))
    for angle in (17.0, 95.0, 180.0, 250.0, 333.0):
        img = screw_like(rng, angle, (105 + rng.uniform(0, 30), 105 + rng.uniform(0, 30)))
        before = _iou(foreground(img), ref)
        after = _iou(foreground(align(img, part_pose(img))), ref)
        assert after > 0.8, (angle, after)  # measured 0.86-0.95: same pose, head on the same side
        assert after > before or angle == 180.0 and after > 0.8


def test_align_is_planned_only_for_a_moving_part():
    rng = np.random.default_rng(1)
    moving = [screw_like(rng, rng.uniform(0, 360), (100 + rng.uniform(0, 40), 100 + rng.uniform(0, 40))) for _ in range(12)]
    fixed = [screw_like(rng, 30.0, (120, 120)) for _ in range(12)]
    on = plan_align(moving)
    assert on.align and on.moves and "aligned" in on.why and on.box is not None
    off = plan_align(fixed)
    assert not off.align and not off.moves and "stays in place" in off.why and off.box is None
    texture = [rng.integers(0, 255, (120, 120, 3), dtype=np.uint8) for _ in range(4)]
    assert not plan_align(texture).align and not plan_align(texture).moves


@pytest.mark.parametrize("box", [None, [0.3, 0.7, 0.1, 0.9]])
def test_the_map_of_an_aligned_frame_lies_on_the_frame_as_taken(box):
    """A spot on the part, seen in the posed view (turned, and cropped to the part's box), goes back to where it is
    in the unturned input (within 1.5 px)."""
    rng = np.random.default_rng(2)
    cfg = DataConfig(image_size=[96, 160], align=True, align_box=box)
    img = screw_like(rng, 63.0, (110, 130))
    pose = part_pose(img)
    spot = np.zeros(img.shape[:2], np.uint8)
    ys, xs = np.nonzero(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) < 100)  # a pixel of the part
    y, x = int(ys[len(ys) // 3]), int(xs[len(xs) // 3])
    cv2.circle(spot, (x, y), 2, 255, -1)
    amap = posed_input(cv2.cvtColor(spot, cv2.COLOR_GRAY2BGR), pose, (96, 160), box)[..., 0].astype(np.float32)
    assert amap.max() > 0  # the spot is inside the posed view
    view = D.map_to_view(amap, pose, img.shape[:2], cfg)
    assert view.shape == (160, 160)  # the view of an aligned part: square, at the input's longer side
    expect = D.input_affine(img.shape[:2], cfg) @ np.array([x, y, 1.0])
    got = np.unravel_index(int(view.argmax()), view.shape)
    assert abs(got[1] - expect[0]) <= 1.5 and abs(got[0] - expect[1]) <= 1.5, (got, expect)


def test_a_detector_with_align_scores_the_posed_view_and_returns_the_map_on_the_frame():
    """The session sees the part level (its rows hold the part's long axis); the map comes back where the part is
    in the frame as taken, and without align nothing is turned."""
    from edge_ad.runtime.detector import function_detector
    from edge_ad.scoring import ScoringSpec

    rng = np.random.default_rng(3)
    img = screw_like(rng, 50.0, (115, 125))
    seen = []

    def darkness(batch: np.ndarray) -> list[np.ndarray]:
        seen.append(batch[0, 0].copy())
        return [(-batch[:, :1]).astype(np.float32)]  # a dark pixel (the part) scores high

    spec = ScoringSpec(out_size=(128, 128), groups=[[0]], group_scales=[1.0], blur_sigma=0.0)
    for on in (True, False):
        det = function_detector(darkness, DataConfig(image_size=[128, 128], align=on), spec)
        amap = det.detect(img).anomaly_map
        part = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), (128, 128)) < 100
        hot = amap > np.quantile(amap, 1 - part.mean())
        assert _iou(hot, part) > 0.7, (on, _iou(hot, part))  # the map lies on the part in the frame as taken
        posed_part = seen[-1] < seen[-1].mean() - seen[-1].std()
        rows = posed_part.any(axis=1).sum()
        assert (rows < 40) == on, rows  # posed: the level part spans few rows; unturned at 50 degrees: many


def test_the_part_box_holds_every_aligned_part_and_little_ground():
    rng = np.random.default_rng(4)
    goods = [screw_like(rng, rng.uniform(0, 360), (100 + rng.uniform(0, 40), 100 + rng.uniform(0, 40))) for _ in range(10)]
    box = plan_align(goods, margin=0.04).box
    y0, y1, x0, x1 = box
    assert 0.45 < x1 - x0 < 0.75 and 0.12 < y1 - y0 < 0.4, (y0, y1, x0, x1)  # the part: 132 x 40 px of 240, level
    assert abs((x0 + x1) / 2 - 0.5) < 0.08 and abs((y0 + y1) / 2 - 0.5) < 0.08  # centred


def test_calibrate_aligns_a_moving_part_end_to_end(tmp_path):
    """The default recipe on a part in random poses: the bundle records the pose step and its box and the frame mask,
    and the deployed detector scores a frame through them, its map on the frame's square view (the path that once
    stopped with an IndexError)."""
    from test_calibrate import READINESS_RECIPE, folder_job

    from edge_ad import bundle as B
    from edge_ad.calibrate.pipeline import calibrate
    from edge_ad.runtime.detector import open_detector
    from edge_ad.runtime.manifest import ModelInfo

    rng = np.random.default_rng(5)
    goods = [screw_like(rng, rng.uniform(0, 360), (100 + rng.uniform(0, 40), 100 + rng.uniform(0, 40))) for _ in range(32)]
    job = folder_job(tmp_path, goods, **{**READINESS_RECIPE, "data.image_size": [64, 128],
                                         "auto.lighting": False})
    calibrate(job, restart=True)
    root = B.resolve(tmp_path / "parts", "p")
    info = ModelInfo.load(root / "model.json")
    data = info.data
    assert data.align and data.align_box is not None
    assert info.scoring.frame_mask and 0 < info.scoring.frame_mask_min < 0.2  # a moving part: each frame's own mask
    y0, y1, x0, x1 = data.align_box
    assert y1 - y0 < 0.6 and x1 - x0 > y1 - y0  # a level part's box: wider than high, not the whole canvas
    det = open_detector(root)
    r = det.detect(goods[0])
    assert r.anomaly_map.shape == (128, 128) and np.isfinite(r.score)
    # the web view outlines where this frame's map counts: around the part as it lies in the frame
    from edge_ad.station.status import LiveView
    from edge_ad.station.web.live import REGION_BGR, render

    frame = render(LiveView(1, goods[0], r.anomaly_map, r.score, det.threshold, r.is_anomaly), 240, str(root))
    green = np.abs(frame.astype(int) - np.array(REGION_BGR)).sum(axis=2) <= 30  # the anti-aliased curve's pixels
    green[:40] = False  # the banner
    ys, xs = np.nonzero(green)
    part = np.nonzero(cv2.cvtColor(goods[0], cv2.COLOR_BGR2GRAY) < 100)
    assert len(ys) > 50, len(ys)  # a curve, not a speck
    assert abs(ys.mean() - part[0].mean()) < 25 and abs(xs.mean() - part[1].mean()) < 25  # centred on the part
    assert xs.max() - xs.min() < 0.9 * frame.shape[1] or ys.max() - ys.min() < 0.9 * frame.shape[0]  # not the frame
