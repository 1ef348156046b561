import numpy as np
import pytest

from edge_ad.scoring import (ScoringSpec, anomaly_map, blur, cosine_distance, fit_group_scales, fuse, image_score,
                             threshold_from_good)


def test_cosine_distance_hand_computed():
    a = np.zeros((2, 1, 2), np.float32)
    b = np.zeros((2, 1, 2), np.float32)
    a[:, 0, 0], b[:, 0, 0] = [1, 0], [1, 0]  # same direction -> 0
    a[:, 0, 1], b[:, 0, 1] = [1, 0], [0, 2]  # orthogonal -> 1
    np.testing.assert_allclose(cosine_distance(a, b), [[0.0, 1.0]], atol=1e-7)
    a2 = np.array([[[3.0]], [[4.0]]])
    b2 = np.array([[[4.0]], [[3.0]]])
    np.testing.assert_allclose(cosine_distance(a2, b2), [[1 - 24 / 25]])


def test_anomaly_map_upsamples_sums_and_scores():
    spec = ScoringSpec(out_size=(8, 8), groups=[[0, 1]], group_scales=[1.0], blur_sigma=0)
    m0 = np.full((4, 4), 0.5, np.float32)
    m1 = np.zeros((2, 2), np.float32)
    m1[0, 0] = 1.0
    amap = anomaly_map([m0, m1], spec)
    assert amap.shape == (8, 8)
    assert amap[0, 0] == pytest.approx(1.5)  # corner keeps the full value (bilinear, half-pixel centres)
    assert amap[7, 7] == pytest.approx(0.5)
    assert image_score(amap, spec) == pytest.approx(1.5)
    spec.image_score, spec.topk_fraction = "topk_mean", 2 / 64
    assert image_score(amap, spec) == pytest.approx(np.sort(amap.ravel())[-2:].mean())


def test_blur_preserves_mass_and_spreads_peak():
    m = np.zeros((33, 33), np.float32)
    m[16, 16] = 1.0
    b = blur(m, 2.0)
    assert b.sum() == pytest.approx(1.0, rel=1e-3) and b.max() < 0.05 and b[16, 16] == b.max()


def test_dual_normalisation_and_fusion():
    pairs = [[np.full((2, 2), 2.0), np.full((2, 2), 10.0)], [np.full((2, 2), 4.0), np.full((2, 2), 30.0)]]
    scales = fit_group_scales(pairs)
    assert scales == [3.0, 20.0]
    spec = ScoringSpec(out_size=(2, 2), groups=[[0], [1]], group_scales=scales, fusion="sum")
    np.testing.assert_allclose(fuse([np.full((2, 2), 3.0), np.full((2, 2), 40.0)], spec), 1 + 2)
    spec.fusion = "product"
    np.testing.assert_allclose(fuse([np.full((2, 2), 3.0), np.full((2, 2), 40.0)], spec), 1 * 2)


def test_threshold_from_good():
    assert threshold_from_good(np.arange(101), 0.9, 0.1) == pytest.approx(99.0)
