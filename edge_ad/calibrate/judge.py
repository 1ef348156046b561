"""Judging a model without defect images: held-out good images, the same images with synthetic defects,
and what that says about false alarms and detections (numpy only).

The same judgement picks the model (calibrate's train stage), checks the INT8 graphs against FP32
(quantize stage) and gives the readiness verdict (threshold stage), so one yardstick runs through calibrate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from edge_ad import metrics as M
from edge_ad.calibrate.synthetic import SIZES, Defect, defect_set, part_masks
from edge_ad.runtime.base import Detector

JUDGE_BATCH = 8  # prepared images per detect_batch call
CONFIDENCE = M.CONFIDENCE


@dataclass
class Judgement:
    """How well held-out goods and synthetic defects are separated (AUROCs in [0, 1])."""

    image_auroc: float
    pixel_auroc: float
    image_auroc_by_size: dict[str, float]
    good_scores: list[float] = field(repr=False)
    defect_scores: list[float] = field(repr=False)
    defect_sizes: list[str] = field(repr=False)
    aupro: float | None = None  # synthetic-defect AUPRO (localisation), when asked for
    aupro_se: float | None = None  # its standard error, from the spread of the regions' own areas
    image_auroc_se: float | None = None  # the image AUROC's standard error (Hanley and McNeil)
    peak_off_part: float | None = None  # share of good images whose map peaks off the part (None: no plain ground)
    mean_good_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def score(self) -> float:
        """The number that compares models: how well the map finds the synthetic defects (pixel AUROC).

        Measured on bottle (benchmarks/results/calibrate_candidates.md): the synthetic image AUROC ranked rd and the
        Gaussian map opposite to the real test set, the synthetic pixel AUROC ranked them as the real one did.
        """
        return self.pixel_auroc

    def summary(self) -> dict:
        d = {k: v for k, v in asdict(self).items()
             if k not in ("good_scores", "defect_scores", "defect_sizes", "mean_good_map") and v is not None}
        return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()},
                "image_auroc_by_size": {k: round(v, 4) for k, v in self.image_auroc_by_size.items()},
                "score": round(self.score, 4)}


def judge_images(val_rgb: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """At most `limit` held-out images, spread evenly: enough for stable AUROCs, bounded time on large sets."""
    if len(val_rgb) <= limit:
        return val_rgb
    return [val_rgb[int(i)] for i in np.linspace(0, len(val_rgb) - 1, limit).round()]


@dataclass
class JudgedSet:
    """Held-out good images, their synthetic defects and where the part is in each (segmented once)."""

    images: list[np.ndarray]
    defects: list[tuple[int, Defect]]
    parts: list[np.ndarray | None]


def synthetic_defects(val_rgb: list[np.ndarray], seed: int, per_size: int = 0) -> JudgedSet:
    """The synthetic defect set of a calibration: defects of each size on every held-out good image, several per
    image on a small set so that each size has about `per_size` (a rate from 24 defects moves by 4 pt per defect)."""
    parts = part_masks(val_rgb)
    per_image = max(1, -(-per_size // max(len(val_rgb), 1)))
    return JudgedSet(val_rgb, defect_set(val_rgb, seed, per_image=per_image, where=parts), parts)


def score_prepared(det: Detector, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """Maps and scores of prepared RGB images through the detector's one scoring path (detect_batch)."""
    maps, scores = [], []
    for i in range(0, len(images), JUDGE_BATCH):
        for r in det.detect_batch(images[i:i + JUDGE_BATCH], prepared=True):
            maps.append(r.anomaly_map)
            scores.append(r.score)
    return maps, scores


def judge(det: Detector, js: JudgedSet, localisation: bool = False) -> Judgement:
    """Score held-out goods and their defective copies with one model; AUROCs overall and per size, and with
    `localisation` how well the maps find the defects (AUPRO) and whether good maps peak on the ground."""
    defects = js.defects
    good_maps, good = score_prepared(det, js.images)
    maps, bad = score_prepared(det, [d.image for _, d in defects])
    sizes = [d.size for _, d in defects]
    good_a, bad_a = np.asarray(good, np.float64), np.asarray(bad, np.float64)
    by_size = {}
    for s in SIZES:
        sel = np.array([z == s for z in sizes])
        if sel.any():
            by_size[s] = M.image_auroc(np.r_[np.zeros(len(good_a)), np.ones(int(sel.sum()))], np.r_[good_a, bad_a[sel]])
    img = M.image_auroc(np.r_[np.zeros(len(good_a)), np.ones(len(bad_a))], np.r_[good_a, bad_a])
    pix = M.pixel_auroc([d.mask for _, d in defects], maps)
    j = Judgement(float(img), float(pix), by_size, [float(v) for v in good], [float(v) for v in bad], sizes,
                  image_auroc_se=M.auroc_se(float(img), len(bad_a), len(good_a)))
    if localisation:
        areas = M.aupro_regions([d.mask for _, d in defects], maps)
        j.aupro = float(areas.mean()) if areas.size else float("nan")
        j.aupro_se = float(areas.std(ddof=1) / np.sqrt(areas.size)) if areas.size > 1 else None
        j.peak_off_part = peak_off_part(js.parts, good_maps)
        j.mean_good_map = np.mean(np.stack([np.asarray(m, np.float32) for m in good_maps]), axis=0)
    return j


def peak_off_part(parts: list[np.ndarray | None], maps: list[np.ndarray]) -> float | None:
    """Share of good images whose anomaly map is highest off the part (on its ground): such a model watches the
    background, not the part. None when the set has no part on a plain ground (a full-frame texture)."""
    import cv2

    off, n = 0, 0
    for part, m in zip(parts, maps):
        if part is None:
            continue
        grown = cv2.dilate(part.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        off += int(not grown[y, x])
        n += 1
    return off / n if n else None


def false_alarm_estimate(good: list[float], threshold_of: Callable[[np.ndarray], float]) -> dict:
    """Leave-one-out false-alarm rate of the threshold rule on held-out goods, with its confidence interval.

    Each good image is scored against a threshold set without it, so the estimate is not flattered by the
    threshold having seen the image (which a plain count on the same images would be).
    """
    g = np.asarray(good, np.float64)
    hits = sum(int(g[i] >= threshold_of(np.delete(g, i))) for i in range(len(g))) if len(g) > 1 else 0
    lo, hi = M.clopper_pearson(hits, len(g))
    return {"false_alarms": hits, "goods": int(len(g)), "rate": hits / max(len(g), 1), "ci_low": lo, "ci_high": hi,
            "confidence": CONFIDENCE}


def detection_rates(j: Judgement, threshold: float) -> dict[str, float]:
    """Share of synthetic defects at or above the threshold, per size class."""
    from edge_ad.rejudge import detection_counts

    counts = detection_counts(j.defect_scores, j.defect_sizes, threshold)
    return {s: counts[s][0] / counts[s][1] for s in SIZES if s in counts}
