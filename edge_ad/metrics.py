"""Evaluation metrics (image/pixel AUROC, AUPRO, F1 threshold) in numpy only, so they run on the device."""

from __future__ import annotations

import math

from typing import Sequence, Union

import cv2
import numpy as np

from edge_ad.errors import EdgeAdError

ArrayList = Union[np.ndarray, Sequence[np.ndarray]]
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x this = its standard deviation


def robust_spread(values: np.ndarray, floor: float) -> tuple[float, float]:
    """(median, sigma) with sigma = 1.4826 x the median absolute deviation, never below `floor`: a spread that a
    few outliers (the part on a ground, a bad frame in a set) do not move."""
    v = np.asarray(values)
    med = float(np.median(v))
    return med, max(MAD_TO_SIGMA * float(np.median(np.abs(v - med))), floor)


class MetricError(EdgeAdError, ValueError):
    """Inputs that make a metric undefined (one class only, shape mismatch, NaN scores)."""


def _check_labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a label/score pair and return (bool labels, float scores), both 1-D."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise MetricError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if y.size == 0:
        raise MetricError("no samples to evaluate")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise MetricError("labels must be 0 (good) or 1 (anomalous)")
        y = y.astype(bool)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise MetricError("scores contain NaN or infinity")
    return y, s


def _require_both_classes(y: np.ndarray, what: str) -> int:
    """Return the positive count; raise if only one class is present (AUROC/F1 undefined)."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        kind = "anomalous" if n_pos else "good"
        raise MetricError(f"{what} needs both good and anomalous samples, got only {kind} ones ({y.size})")
    return n_pos


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted as one half (equal to sklearn's trapezoidal ROC AUC)."""
    n_pos = _require_both_classes(y, "AUROC")
    n_neg = y.size - n_pos
    neg = np.sort(s[~y])
    pos = np.sort(s[y])  # sorted queries keep searchsorted cache-friendly
    below = np.searchsorted(neg, pos, side="left")
    not_above = np.searchsorted(neg, pos, side="right")
    # Each positive beats the negatives strictly below it and half of those tied with it.
    wins2 = int(below.sum(dtype=np.int64)) + int(not_above.sum(dtype=np.int64))
    return float(wins2 / (2.0 * float(n_pos) * float(n_neg)))


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of image scores (labels 1 = anomalous)."""
    y, s = _check_labels_scores(labels, scores)
    return _auroc(y, s)


def _as_list(arrays: ArrayList) -> list[np.ndarray]:
    """Accept a stacked (N, H, W) array, a single (H, W) array or a list of per-image arrays."""
    if isinstance(arrays, np.ndarray):
        return [arrays] if arrays.ndim <= 2 else list(arrays)
    return [np.asarray(a) for a in arrays]


def _flatten_pairs(masks: ArrayList, maps: ArrayList) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-image masks (as bool) and maps (as float32) without per-pixel Python work."""
    mask_list, map_list = _as_list(masks), _as_list(maps)
    if len(mask_list) != len(map_list):
        raise MetricError(f"got {len(mask_list)} masks but {len(map_list)} anomaly maps")
    if not mask_list:
        raise MetricError("no images to evaluate")
    total = 0
    for i, (m, a) in enumerate(zip(mask_list, map_list)):
        if m.shape != a.shape:
            raise MetricError(f"image {i}: mask shape {m.shape} differs from map shape {a.shape}")
        total += m.size
    y = np.empty(total, dtype=bool)
    s = np.empty(total, dtype=np.float32)
    pos = 0
    for m, a in zip(mask_list, map_list):
        n = m.size
        np.greater(m.ravel(), 0, out=y[pos:pos + n])
        s[pos:pos + n] = a.ravel()
        pos += n
    if not np.isfinite(s).all():
        raise MetricError("anomaly maps contain NaN or infinity")
    return y, s


def pixel_auroc(masks: ArrayList, maps: ArrayList) -> float:
    """ROC AUC over all pixels of all images pooled (mask > 0 = anomalous pixel), exact."""
    y, s = _flatten_pairs(masks, maps)
    return _auroc(y, s)


def _pro_inputs(masks: ArrayList, maps: ArrayList) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Split pixels into region pixels (score, region id) and normal-pixel scores.

    Regions are 8-connected components of each ground-truth mask.
    """
    mask_list, map_list = _as_list(masks), _as_list(maps)
    if len(mask_list) != len(map_list):
        raise MetricError(f"got {len(mask_list)} masks but {len(map_list)} anomaly maps")
    if not mask_list:
        raise MetricError("no images to evaluate")
    region_scores, region_ids, normal_scores = [], [], []
    n_regions = 0
    for i, (m, a) in enumerate(zip(mask_list, map_list)):
        if m.shape != a.shape or m.ndim != 2:
            raise MetricError(f"image {i}: mask {m.shape} and map {a.shape} must be equal 2-D shapes")
        fg = m > 0
        a = np.asarray(a, dtype=np.float32)
        normal_scores.append(a[~fg])
        if fg.any():
            count, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
            region_scores.append(a[fg])
            region_ids.append(lab[fg].astype(np.int64) + (n_regions - 1))
            n_regions += count - 1
    normal = np.concatenate(normal_scores)
    if n_regions == 0:
        return np.empty(0, np.float32), np.empty(0, np.int64), normal, 0
    rs, ri = np.concatenate(region_scores), np.concatenate(region_ids)
    if not (np.isfinite(rs).all() and np.isfinite(normal).all()):
        raise MetricError("anomaly maps contain NaN or infinity")
    return rs, ri, normal, n_regions


def _area_to_limit(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoid area under a curve with non-decreasing x from x=0 to x=limit, interpolated at limit."""
    k = int(np.searchsorted(fpr, limit, side="right"))
    area = float(np.sum(np.diff(fpr[:k]) * (pro[1:k] + pro[:k - 1]) / 2.0))
    if k < fpr.size:
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (limit - x0) * (y0 + y_lim) / 2.0
    return area


def _pro_curve_inputs(masks: ArrayList, maps: ArrayList, fpr_limit: float, num_thresholds: int):
    """Region pixels sorted by score (scores, region ids), the region count, the thresholds (high to low) and
    the FPR of the normal pixels at each; None when no mask has a region."""
    if not 0.0 < fpr_limit <= 1.0:
        raise MetricError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds == 1 or num_thresholds < 0:
        raise MetricError(f"num_thresholds must be 0 (exact) or >= 2, got {num_thresholds}")
    rs, ri, normal, n_regions = _pro_inputs(masks, maps)
    if n_regions == 0:
        return None
    if normal.size == 0:
        raise MetricError("AUPRO needs normal pixels to measure false positives, but every pixel is masked")
    order = np.argsort(rs)
    rs, ri = rs[order], ri[order]
    normal = np.sort(normal)
    n_normal = normal.size
    if num_thresholds:
        lo = min(float(rs[0]), float(normal[0]))
        hi = max(float(rs[-1]), float(normal[-1]))
        thresholds = np.linspace(hi, lo, num_thresholds)
    else:
        # Only thresholds down to the first one whose FPR reaches the limit can change the area.
        k0 = min(int(np.floor(n_normal * (1.0 - fpr_limit))), n_normal - 1)
        cut = normal[k0]
        thresholds = np.unique(np.concatenate([rs[rs >= cut], normal[k0:]]))[::-1]
    fpr = (n_normal - np.searchsorted(normal, thresholds, side="left")) / n_normal
    return rs, ri, n_regions, thresholds, fpr


def aupro(masks: ArrayList, maps: ArrayList, fpr_limit: float = 0.3, num_thresholds: int = 200) -> float:
    """Normalised area under the per-region-overlap curve up to `fpr_limit` (MVTec AD, Bergmann et al.).

    `num_thresholds` evenly spaced thresholds run from the map maximum to the minimum;
    0 uses every distinct score (the exact curve). A perfect map gives 1.0; nan when no mask has a region.
    """
    curve = _pro_curve_inputs(masks, maps, fpr_limit, num_thresholds)
    if curve is None:
        return float("nan")
    rs, ri, n_regions, thresholds, fpr = curve
    weights = 1.0 / (np.bincount(ri)[ri].astype(np.float64) * n_regions)
    # pro_above[i] = PRO when the threshold admits region pixels rs[i:]; last entry 0 (none admitted).
    pro_above = np.append(np.cumsum(weights[::-1])[::-1], 0.0)
    pro = pro_above[np.searchsorted(rs, thresholds, side="left")]
    fpr = np.concatenate([[0.0], fpr])
    pro = np.concatenate([[0.0], np.minimum(pro, 1.0)])
    return _area_to_limit(fpr, pro, fpr_limit) / fpr_limit


def aupro_regions(masks: ArrayList, maps: ArrayList, fpr_limit: float = 0.3, num_thresholds: int = 200) -> np.ndarray:
    """Each region's own normalised area under its overlap curve (the normal pixels' FPR shared): AUPRO is their
    mean, so their spread says how far a few hundred regions can vouch for it. Evenly spaced thresholds only: the
    exact curve (0) would need a row of every distinct score per region."""
    if num_thresholds < 2:
        raise MetricError(f"num_thresholds must be >= 2 for per-region areas, got {num_thresholds}")
    curve = _pro_curve_inputs(masks, maps, fpr_limit, num_thresholds)
    if curve is None:
        return np.empty(0)
    rs, ri, n_regions, thresholds, fpr = curve
    sizes = np.bincount(ri, minlength=n_regions).astype(np.float64)
    above = np.zeros((n_regions, thresholds.size))  # above[r, k]: pixels of region r scoring >= thresholds[k]
    step = np.searchsorted(-thresholds, -rs, side="left")  # the first threshold each pixel reaches
    np.add.at(above, (ri, np.minimum(step, thresholds.size - 1)), (step < thresholds.size).astype(np.float64))
    pro = np.concatenate([np.zeros((n_regions, 1)), np.cumsum(above, axis=1) / sizes[:, None]], axis=1)
    x = np.concatenate([[0.0], fpr])
    return np.array([_area_to_limit(x, p, fpr_limit) / fpr_limit for p in pro])


def auroc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC from n_pos positives and n_neg negatives (Hanley and McNeil, 1982)."""
    if n_pos < 1 or n_neg < 1:
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(math.sqrt(max(var, 0.0)))


def f1_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Threshold (predict anomalous when score >= threshold) maximising F1; ties go to the lower threshold."""
    y, s = _check_labels_scores(labels, scores)
    n_pos = _require_both_classes(y, "F1 threshold")
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    tp_cum = np.cumsum(y[order])
    # Threshold at each distinct score: everything up to the end of its run of ties is predicted positive.
    ends = np.append(np.flatnonzero(s_desc[1:] != s_desc[:-1]), s.size - 1)
    tp = tp_cum[ends].astype(np.float64)
    predicted = ends + 1.0
    f1 = 2.0 * tp / (predicted + n_pos)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(s_desc[ends[best]]), float(f1[best])


def precision_recall_f1(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Confusion counts and precision/recall/F1 at one threshold (score >= threshold is anomalous).

    Undefined ratios (nothing predicted or nothing anomalous) are reported as 0.0.
    """
    y, s = _check_labels_scores(labels, scores)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(y.size - tp - fp - fn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


CONFIDENCE = 0.95  # the confidence of every false-alarm interval edge_ad states


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval of a rate k/n (no scipy: bisection on the binomial tails)."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1 - confidence

    def pmf(i: int, p: float) -> float:
        return math.comb(n, i) * p**i * (1 - p) ** (n - i)

    def bisect(f, increasing: bool) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (f(mid) < 0) == increasing else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else bisect(lambda p: 1 - sum(pmf(i, p) for i in range(k)) - alpha / 2, True)
    high = 1.0 if k == n else bisect(lambda p: sum(pmf(i, p) for i in range(k + 1)) - alpha / 2, False)
    return low, high
