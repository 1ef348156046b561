"""Evaluate any detector on an MVTec-layout test split: image/pixel AUROC, AUPRO, heatmap overlays.

Backend-agnostic: every image goes through a detector's detect_batch (the station's own preprocessing, scoring
and finite check), whatever session runs underneath: torch, onnxruntime, TensorRT (torch-free here).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_ad import data as D
from edge_ad import metrics as M
from edge_ad.config import DataConfig
from edge_ad.errors import EdgeAdError, NonFiniteOutput
from edge_ad.fileio import atomic_write_json
from edge_ad.progress import progress
from edge_ad.runtime.base import Detector
from edge_ad.visualize import heatmap_overlay

log = logging.getLogger(__name__)

EVAL_BATCH = 8
HEATMAPS_PER_TYPE = 3


@dataclass
class Scored:
    """What a detector made of a split: the samples it scored, their maps, scores, masks and valid boxes."""

    samples: list[D.Sample]
    maps: list[np.ndarray]
    scores: np.ndarray
    masks: list[np.ndarray]
    boxes: list[tuple[int, int, int, int]]


def _detect(det: Detector, frames: list[np.ndarray], chunk: list[D.Sample],
            errors: list[tuple[Path, str]] | None) -> list:
    """Results of one batch; an image the model gives a non-finite output for is an error, never a score (None)."""
    try:
        return list(det.detect_batch(frames))
    except NonFiniteOutput:
        pass
    out = []
    for f, s in zip(frames, chunk):  # find which image of the batch it was
        try:
            out.append(det.detect(f))
        except NonFiniteOutput as e:
            if errors is None:
                raise EdgeAdError(f"{s.path}: {e}") from None
            errors.append((s.path, str(e)))
            log.error("error: %s: %s", s.path, e)
            out.append(None)
    return out


def run_split(det: Detector, samples: list[D.Sample], desc: str = "eval",
              errors: list[tuple[Path, str]] | None = None) -> Scored:
    """Every readable sample through det.detect_batch, with its mask and valid box in input geometry. A non-finite
    map or score is an error: with `errors` the image is listed there and left out, without it EdgeAdError."""
    data_cfg = det.info.data
    out = Scored([], [], np.zeros(0), [], [])
    scores: list[float] = []
    for i in progress(range(0, len(samples), EVAL_BATCH), desc=desc, unit="batch", leave=False):
        frames, chunk = [], []
        for s in samples[i:i + EVAL_BATCH]:
            try:
                frames.append(D.load_image(s.path))
                chunk.append(s)
            except D.ImageError as e:
                log.warning("skipping %s", e)
        if not frames:
            continue
        for f, s, r in zip(frames, chunk, _detect(det, frames, chunk, errors)):
            if r is None:
                continue
            out.samples.append(s)
            out.maps.append(r.anomaly_map)
            scores.append(r.score)
            out.masks.append(D.prepare_mask(D.load_mask(s.mask_path, f.shape[:2]), data_cfg))
            out.boxes.append(D.valid_box(f.shape[:2], data_cfg))
    out.scores = np.array(scores)
    return out


def compute_metrics(samples: list[D.Sample], maps: list[np.ndarray], scores: np.ndarray,
                    masks: list[np.ndarray], boxes: list[tuple[int, int, int, int]]) -> dict:
    """Image AUROC, pixel AUROC and AUPRO (over real image content), plus pixel AUROC per defect type."""
    labels = np.array([s.label for s in samples])
    crop = lambda a, b: a[b[0]:b[1], b[2]:b[3]]  # noqa: E731
    cm = [crop(m, b) for m, b in zip(maps, boxes)]
    ck = [crop(k, b) for k, b in zip(masks, boxes)]
    out = {"n_images": len(samples), "n_defective": int(labels.sum()), "image_auroc": M.image_auroc(labels, scores)}
    if any(k.any() for k in ck):
        out["pixel_auroc"] = M.pixel_auroc(ck, cm)
        out["aupro"] = M.aupro(ck, cm)
        per = {}
        good = [i for i, s in enumerate(samples) if s.label == 0]
        for t in sorted({s.defect for s in samples if s.label}):
            idx = [i for i, s in enumerate(samples) if s.defect == t] + good
            if any(ck[i].any() for i in idx):
                per[t] = M.pixel_auroc([ck[i] for i in idx], [cm[i] for i in idx])
        out["pixel_auroc_per_type"] = per
    thr, f1 = M.f1_optimal_threshold(labels, scores)
    out.update({"f1_threshold": thr, "f1": f1})
    return out


def save_heatmaps(samples: list[D.Sample], maps: list[np.ndarray], scores: np.ndarray, data_cfg: DataConfig,
                  out_dir: Path, per_type: int = HEATMAPS_PER_TYPE) -> Path:
    """Overlay PNGs for the first few images of each test type, on one colour scale."""
    out_dir.mkdir(parents=True, exist_ok=True)
    vmin, vmax = float(np.min(scores)), float(np.quantile(scores, 0.99))
    seen: dict[str, int] = {}
    for s, m, sc in zip(samples, maps, scores):
        if seen.get(s.defect, 0) >= per_type:
            continue
        seen[s.defect] = seen.get(s.defect, 0) + 1
        rgb = D.prepare_view(D.load_image(s.path), data_cfg)  # the maps lie on the frame as taken
        panel = heatmap_overlay(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), m, vmin * 0.5, vmax)
        cv2.imwrite(str(out_dir / f"{s.defect}_{s.path.stem}_{sc:.3f}.png"), np.hstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), panel]))
    return out_dir


def evaluate(det: Detector, root: str | Path, out_dir: str | Path | None = None,
             errors: list[tuple[Path, str]] | None = None) -> dict:
    """Score the test split; when out_dir is given write metrics.json and heatmap overlays there. Images the model
    gave a non-finite output for go to `errors` (and the result's `errors`), else they raise."""
    samples = D.list_split(root, "test")
    if len({s.label for s in samples}) < 2:
        raise EdgeAdError(f"{root}/test needs both good and defective images to compute AUROC")
    t0 = time.time()
    sc = run_split(det, samples, errors=errors)
    kept, maps, scores = sc.samples, sc.maps, sc.scores
    if len({s.label for s in kept}) < 2:
        raise EdgeAdError(f"{root}/test: too few images scored to compute AUROC ({len(errors or [])} gave non-finite "
                          "output)")
    result = compute_metrics(kept, maps, scores, sc.masks, sc.boxes)
    if errors:
        result["errors"] = [{"image": str(p), "error": why} for p, why in errors]
    result["eval_seconds"] = round(time.time() - t0, 2)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result["heatmaps"] = str(save_heatmaps(kept, maps, scores, det.info.data, out / "heatmaps"))
        atomic_write_json(out / "metrics.json", result)
    return result
