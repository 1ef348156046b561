"""Each frame's own part mask: a speck on the ground beside a moving part never decides the frame's score, a defect on
the part's edge still does, and a frame with no part found is scored unmasked (never passed by hiding its map)."""

from __future__ import annotations

import cv2
import numpy as np

from edge_ad.config import DataConfig
from edge_ad.partmask import MIN_PIECE, frame_mask, mask_weights, plan_frame_mask
from edge_ad.runtime.detector import function_detector
from edge_ad.scoring import ScoringSpec

try:
    from test_pose import screw_like
except ImportError:
    from tests.test_pose import screw_like

SIZE = 256  # the input size of a real bundle (the mask is found at half of it)


def prepared(img_bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(img_bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def with_speck(img: np.ndarray, at: tuple[int, int], r: int = 3) -> np.ndarray:
    out = img.copy()
    cv2.circle(out, at, r, (60, 60, 60), -1)  # dust on the ground: as dark as the part, far smaller
    return out


def test_the_mask_is_the_part_not_the_ground_or_a_speck_on_it():
    rng = np.random.default_rng(0)
    img = screw_like(rng, 35.0, (120, 120))
    part = cv2.cvtColor(prepared(img), cv2.COLOR_RGB2GRAY) < 130
    m = frame_mask(prepared(with_speck(img, (40, 200))))
    assert (m & part).sum() >= 0.95 * part.sum()  # the whole part (measured 98.7 %) ...
    near = cv2.dilate(part.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0  # 5 px: 2 % of the side
    assert (m & ~near).sum() <= 0.05 * m.sum()  # ... and close to it: its outline, not a halo (measured 2.4 %)
    speck = np.zeros_like(m)
    cv2.circle(speck, (40 * SIZE // 240, 200 * SIZE // 240), 3, 1, -1)
    assert not (m & speck.astype(bool)).any()  # a piece under MIN_PIECE of the frame is a speck
    assert not frame_mask(prepared(np.full_like(img, 190))).any()  # no part: an empty mask


def test_no_part_found_means_no_mask_so_the_map_is_never_hidden():
    flat = prepared(np.full((240, 240, 3), 190, np.uint8))
    assert mask_weights(flat, 0.015, 0.01) is None
    rng = np.random.default_rng(1)
    w = mask_weights(prepared(screw_like(rng, 0.0, (120, 120))), 0.015, 0.01)
    assert w is not None and w.min() == 0.0 and w.max() == 1.0


def test_the_plan_masks_a_moving_part_and_leaves_a_fixed_one_and_a_texture_alone():
    rng = np.random.default_rng(2)
    moving = [prepared(screw_like(rng, rng.uniform(0, 360), (100 + rng.uniform(0, 40), 100 + rng.uniform(0, 40))))
              for _ in range(12)]
    plan = plan_frame_mask(moving, region_coverage=0.8, mode="auto")
    assert plan.use and MIN_PIECE * 0.3 <= plan.min_share < 0.1, plan
    fixed = [prepared(screw_like(rng, 30.0, (120, 120))) for _ in range(12)]
    assert not plan_frame_mask(fixed, region_coverage=0.12, mode="auto").use  # the region is the part already
    texture = [rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(6)]
    assert not plan_frame_mask(texture, region_coverage=1.0, mode="auto").use
    assert not plan_frame_mask(moving, region_coverage=0.8, mode="off").use


def test_a_detector_with_the_frame_mask_ignores_a_speck_and_finds_a_defect_on_the_part():
    """A stand-in network that lights up every dark pixel: with the mask the speck on the ground scores nothing, a
    nick on the part's edge still scores, and a frame with no part scores as it would unmasked."""
    rng = np.random.default_rng(3)

    def darkness(batch: np.ndarray) -> list[np.ndarray]:
        return [np.maximum(-batch[:, :1], 0).astype(np.float32)]

    def spec(mask: bool) -> ScoringSpec:
        return ScoringSpec(out_size=(SIZE, SIZE), groups=[[0]], group_scales=[1.0], blur_sigma=1.0,
                           frame_mask=mask, frame_mask_min=0.01)

    data = DataConfig(image_size=[SIZE, SIZE])
    masked, plain = function_detector(darkness, data, spec(True)), function_detector(darkness, data, spec(False))
    img = screw_like(rng, 20.0, (120, 120))
    img[img[..., 0] < 100] = 110  # a part that is lighter than a speck: only the speck is darkest
    speck = with_speck(img, (40, 200))
    assert plain.detect(speck).score > plain.detect(img).score + 0.3  # unmasked, the speck decides the score
    assert masked.detect(speck).score < masked.detect(img).score + 0.05  # masked, it does not
    nick = img.copy()
    ys, xs = np.nonzero(img[..., 0] == 110)
    edge = int(np.argmin(ys))  # the part's topmost pixel: a dark nick on its outline
    cv2.circle(nick, (int(xs[edge]), int(ys[edge])), 3, (60, 60, 60), -1)
    assert masked.detect(nick).score > masked.detect(img).score + 0.3
    empty = np.full_like(img, 190)
    cv2.circle(empty, (60, 60), 3, (60, 60, 60), -1)  # only a speck: no part found, so nothing is hidden
    assert abs(masked.detect(empty).score - plain.detect(empty).score) < 1e-6
