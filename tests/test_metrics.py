"""Metrics agree with scikit-learn and with hand-computed AUPRO values."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score

from edge_ad.errors import EdgeAdError
from edge_ad.metrics import (
    MetricError,
    aupro,
    aupro_regions,
    auroc_se,
    f1_optimal_threshold,
    image_auroc,
    pixel_auroc,
    precision_recall_f1,
)


def _random_case(rng: np.random.Generator, n: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a weak signal; `levels` quantises scores to force many ties."""
    y = (rng.random(n) < 0.3).astype(int)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + 0.8 * y
    if levels is not None:
        s = np.round(s * levels) / levels
    return y, s


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [None, 2, 10])
def test_image_auroc_matches_sklearn(seed, levels):
    y, s = _random_case(np.random.default_rng(seed), 300, levels)
    assert image_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_image_auroc_all_equal_scores_is_half():
    y = np.array([0, 1, 0, 1, 1])
    s = np.full(5, 0.7)
    assert image_auroc(y, s) == pytest.approx(0.5)
    assert roc_auc_score(y, s) == pytest.approx(0.5)


def test_image_auroc_perfect_and_inverted():
    y = np.array([0, 0, 1, 1])
    assert image_auroc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert image_auroc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert image_auroc(y.astype(bool), np.array([1, 2, 3, 4])) == 1.0  # bool labels, int scores


@pytest.mark.parametrize("labels", [np.zeros(5), np.ones(5)])
def test_single_class_raises_clear_error(labels):
    s = np.arange(5.0)
    for fn in (image_auroc, f1_optimal_threshold):
        with pytest.raises(ValueError, match="both good and anomalous"):
            fn(labels, s)
    with pytest.raises(ValueError, match="both good and anomalous"):
        pixel_auroc([labels.reshape(1, 5)], [s.reshape(1, 5)])


def test_input_errors_are_user_errors():
    with pytest.raises(MetricError, match="differ in length"):
        image_auroc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(MetricError, match="0 \\(good\\) or 1"):
        image_auroc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(MetricError, match="NaN"):
        image_auroc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(MetricError, match="shape"):
        pixel_auroc([np.zeros((4, 4))], [np.zeros((4, 5))])
    with pytest.raises(EdgeAdError):  # the CLI prints these as one line
        aupro([np.zeros((4, 4))], [np.zeros((4, 4))], fpr_limit=0.0)


@pytest.mark.parametrize("levels", [None, 4])
def test_pixel_auroc_matches_sklearn_on_ragged_list(levels):
    rng = np.random.default_rng(1)
    shapes = [(16, 20), (8, 8), (30, 12), (5, 40)]
    masks = [rng.random(sh) < 0.1 for sh in shapes]
    maps = [rng.random(sh).astype(np.float32) + 0.5 * m for sh, m in zip(shapes, masks)]
    if levels is not None:
        maps = [np.round(a * levels) / levels for a in maps]
    y = np.concatenate([m.ravel() for m in masks])
    s = np.concatenate([a.ravel() for a in maps]).astype(np.float32)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_pixel_auroc_accepts_stacked_uint8_masks():
    rng = np.random.default_rng(2)
    masks = (rng.random((3, 10, 10)) < 0.2).astype(np.uint8) * 255
    maps = rng.random((3, 10, 10))
    expected = roc_auc_score(masks.ravel() > 0, maps.ravel().astype(np.float32))
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-9)


def test_pixel_auroc_is_fast_on_millions_of_pixels():
    rng = np.random.default_rng(3)
    masks = rng.random((40, 256, 256)) < 0.02  # 2.6M pixels
    maps = (rng.random((40, 256, 256)) + masks).astype(np.float32)
    start = time.perf_counter()
    value = pixel_auroc(masks, maps)
    assert time.perf_counter() - start < 5.0
    assert value > 0.9


def _brute_force_f1(y, s):
    precision, recall, thresholds = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return f1[:-1].max(), thresholds


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [None, 3])
def test_f1_optimal_threshold_matches_brute_force(seed, levels):
    y, s = _random_case(np.random.default_rng(seed), 200, levels)
    threshold, f1 = f1_optimal_threshold(y, s)
    best_f1, thresholds = _brute_force_f1(y, s)
    assert f1 == pytest.approx(best_f1, abs=1e-12)
    assert threshold in s
    # The threshold really achieves that F1, and it is the lowest threshold that does.
    assert precision_recall_f1(y, s, threshold)["f1"] == pytest.approx(f1, abs=1e-12)
    lower = thresholds[thresholds < threshold]
    assert all(precision_recall_f1(y, s, t)["f1"] < f1 - 1e-12 for t in lower)


def test_f1_optimal_threshold_separable():
    threshold, f1 = f1_optimal_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert (threshold, f1) == (0.8, 1.0)


def test_precision_recall_f1_counts():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    r = precision_recall_f1(y, s, 0.5)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (2, 1, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    nothing = precision_recall_f1(y, s, 2.0)
    assert nothing["precision"] == 0.0 and nothing["recall"] == 0.0 and nothing["f1"] == 0.0


# --- AUPRO -----------------------------------------------------------------------------------


def _blob_masks(rng: np.random.Generator, n: int = 6, size: int = 64) -> np.ndarray:
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in range(1, n):  # image 0 stays wholly good
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(8, size - 8, 2)
            r = rng.integers(2, 7)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return masks


@pytest.mark.parametrize("num_thresholds", [200, 0])
def test_aupro_perfect_map_is_one(num_thresholds):
    masks = _blob_masks(np.random.default_rng(0))
    assert aupro(masks, masks.astype(np.float32), num_thresholds=num_thresholds) == pytest.approx(1.0)


@pytest.mark.parametrize("num_thresholds", [200, 0])
def test_aupro_inverted_map_is_near_zero(num_thresholds):
    masks = _blob_masks(np.random.default_rng(0))
    assert aupro(masks, 1.0 - masks.astype(np.float32), num_thresholds=num_thresholds) < 1e-6


def test_aupro_random_map_is_about_half_the_limit():
    # Random scores: PRO(t) ~ FPR(t), so the normalised area up to L is ~ L / 2.
    rng = np.random.default_rng(4)
    masks = _blob_masks(rng, n=20)
    maps = rng.random(masks.shape).astype(np.float32)
    for limit in (0.3, 1.0):
        exact = aupro(masks, maps, fpr_limit=limit, num_thresholds=0)
        assert limit / 2 - 0.03 < exact < limit / 2 + 0.03
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(exact, abs=0.01)


def _tiny_case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One 3x6 image with a 1-pixel region A and a 2-pixel region B, plus one wholly good image.

    Normal pixels (15 + 6 = 21): one scores 0.85, two score 0.6, the rest 0.0.
    Region A scores 0.9; region B scores 0.8 and 0.1.
    Thresholds from the top give (FPR, PRO):
      0.9 -> (0, 1/2)   0.85 -> (1/21, 1/2)   0.8 -> (1/21, 3/4)
      0.6 -> (3/21, 3/4)   0.1 -> (3/21, 1)   0.0 -> (1, 1)
    Area up to 0.3: 1/2 * 1/21 + 3/4 * 2/21 + 1 * (0.3 - 3/21) = 2/21 + 0.3 - 3/21 = 0.3 - 1/21.
    Area up to 0.1: 1/2 * 1/21 + 3/4 * (0.1 - 1/21).
    """
    mask = np.zeros((3, 6), dtype=np.uint8)
    mask[0, 0] = 1
    mask[1, 4:6] = 1
    amap = np.zeros((3, 6), dtype=np.float32)
    amap[0, 0], amap[1, 4], amap[1, 5] = 0.9, 0.8, 0.1
    amap[2, 0], amap[2, 2], amap[0, 3] = 0.85, 0.6, 0.6
    good_mask = np.zeros((2, 3), dtype=np.uint8)
    good_map = np.zeros((2, 3), dtype=np.float32)
    return [mask, good_mask], [amap, good_map]


@pytest.mark.parametrize("num_thresholds", [200, 0])
def test_aupro_tiny_case_known_value(num_thresholds):
    masks, maps = _tiny_case()
    expected_03 = (0.3 - 1 / 21) / 0.3
    expected_01 = (0.5 / 21 + 0.75 * (0.1 - 1 / 21)) / 0.1
    assert aupro(masks, maps, num_thresholds=num_thresholds) == pytest.approx(expected_03, abs=1e-6)
    assert aupro(masks, maps, 0.1, num_thresholds) == pytest.approx(expected_01, abs=1e-6)


def test_aupro_interpolates_a_sloped_segment_at_the_limit():
    # One region pixel and one normal pixel tie at 0.5: the curve runs straight from (0, 0) to (1, 1)
    # except that 3 other normals (score 0) are admitted only at the very end.
    mask = np.array([[1, 0, 0, 0, 0]], dtype=np.uint8)
    amap = np.array([[0.5, 0.5, 0.0, 0.0, 0.0]], dtype=np.float32)
    # Points: (0,0) -> (1/4, 1) -> (1, 1). Area to 0.1: segment to (0.1, 0.4) = 0.1 * 0.4 / 2 = 0.02.
    assert aupro([mask], [amap], fpr_limit=0.1, num_thresholds=0) == pytest.approx(0.2)
    assert aupro([mask], [amap], fpr_limit=0.1) == pytest.approx(0.2)


def test_aupro_regions_are_8_connected_and_weighted_equally():
    # A diagonal pair is one region (8-connectivity); a separate 1-pixel region weighs the same.
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[0, 0] = mask[1, 1] = 1
    mask[4, 4] = 1
    amap = np.zeros((6, 6), dtype=np.float32)
    amap[0, 0] = 1.0  # half of the big region found: PRO = (1/2 + 0) / 2 at FPR 0
    amap[4, 4] = 0.5  # whole small region found next: PRO = (1/2 + 1) / 2 at FPR 0
    # The curve sits at 0.75 from FPR 0 until all normals come in together with (1, 1) at score 0.
    value = aupro([mask], [amap], fpr_limit=0.3, num_thresholds=0)
    # Last segment runs from (0, 0.75) to (1, 1): area to 0.3 = 0.3 * (0.75 + 0.825) / 2.
    assert value == pytest.approx((0.75 + 0.825) / 2)


def test_aupro_without_regions_is_nan():
    assert np.isnan(aupro([np.zeros((4, 4))], [np.random.default_rng(0).random((4, 4))]))


def test_aupro_all_pixels_masked_raises():
    with pytest.raises(MetricError, match="normal pixels"):
        aupro([np.ones((4, 4))], [np.zeros((4, 4))])


def _defect_maps(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n noisy maps with one or two rectangular defects each, of random strength."""
    masks, maps = [], []
    for i in range(n):
        m = np.zeros((64, 64), bool)
        y, x = rng.integers(4, 50, 2)
        m[y:y + rng.integers(3, 12), x:x + rng.integers(3, 12)] = True
        if i % 3 == 0:
            m[1:3, 2:20] = True
        masks.append(m)
        maps.append(rng.normal(0, 1, m.shape).astype(np.float32) + m * rng.uniform(0, 3))
    return masks, maps


def test_aupro_is_the_mean_of_the_regions_areas_and_their_spread_matches_a_bootstrap():
    rng = np.random.default_rng(0)
    masks, maps = _defect_maps(rng, 60)
    areas = aupro_regions(masks, maps)
    assert len(areas) == 80 and areas.mean() == pytest.approx(aupro(masks, maps), abs=1e-9)
    se = areas.std(ddof=1) / np.sqrt(areas.size)
    boot = [aupro([masks[i] for i in idx], [maps[i] for i in idx])
            for idx in (rng.integers(0, 60, 60) for _ in range(60))]
    assert 0.6 * np.std(boot) < se < 1.6 * np.std(boot)  # measured: se 0.028, bootstrap 0.031 (seed 0)
    with pytest.raises(MetricError):
        aupro_regions(masks, maps, num_thresholds=0)  # the exact curve is aupro's alone


def test_auroc_standard_error_matches_resampling():
    rng = np.random.default_rng(1)
    aucs = []
    for _ in range(300):
        y = np.r_[np.zeros(42), np.ones(120)]
        aucs.append(image_auroc(y, np.r_[rng.normal(0, 1, 42), rng.normal(1.3, 1, 120)]))
    se = auroc_se(float(np.mean(aucs)), 120, 42)
    assert 0.75 * np.std(aucs) < se < 1.3 * np.std(aucs)  # measured: se 0.033, spread over 300 draws 0.035
    assert auroc_se(0.9, 50, 50) == pytest.approx(0.0321, abs=5e-4)  # Hanley and McNeil's formula by hand
