"""Pick a model for a new part without defect images.

Each candidate is trained on the good images; the one that best separates the validation goods from
synthetic-defect copies of them (cut-paste, noise blobs, scratches from augment.py) is kept. On the
shared data sets this ranks the candidates as their real test AUROC does: gauss for magnetic_tile,
rd + Gaussian map for kolektor, a tie (so the plain model) for bottle (see benchmarks/results/calibrate.md).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from edge_ad.augment import augment
from edge_ad.config import AugmentConfig, Config
from edge_ad.metrics import image_auroc

CANDIDATES = ("model", "gauss", "model+gauss")  # the recipe's model as written; the Gaussian map alone; both fused
DEFAULT_GAUSSIAN_STRIDE = 16  # when the recipe sets none: the deepest distilled stage (calibration/textured.yaml)


def candidate_config(cfg: Config, name: str) -> Config:
    """The model config of one candidate, derived from the recipe's."""
    out = copy.deepcopy(cfg)
    stride = cfg.model.gaussian_stride or DEFAULT_GAUSSIAN_STRIDE
    if name == "gauss":
        out.model.method, out.model.gaussian_stride = "gauss", stride
    elif name == "model+gauss" and cfg.model.method != "gauss":
        out.model.gaussian_stride = stride
    return out


def method_label(cfg: Config) -> str:
    """rd, gauss, rd+gauss, ...: what a model config trains, in one word."""
    m = cfg.model
    return m.method + ("+gauss" if m.gaussian_stride and m.method != "gauss" else "")


def distinct_candidates(cfg: Config, names: list[str]) -> list[str]:
    """Candidates in the given order, dropping any whose config repeats an earlier one's."""
    seen, out = set(), []
    for name in names:
        label = method_label(candidate_config(cfg, name))
        if label not in seen:
            seen.add(label)
            out.append(name)
    return out


def synthetic_auroc(model_path, images: list[np.ndarray], aug: AugmentConfig, seed: int) -> float:
    """Image AUROC of good images against one synthetic-defect copy of each (no photometric changes)."""
    from edge_ad.train import load_model, score_images

    model, cfg, spec, _ = load_model(model_path)
    defects_only = dataclasses.replace(aug, color_jitter=0.0, blur=False, noise_std=0.0, cutpaste=True,
                                       noise_blobs=True, scratches=True)
    rng = np.random.default_rng(seed)
    bad = [augment(im, defects_only, rng) for im in images]
    _, good_scores = score_images(model, images, cfg, spec)
    _, bad_scores = score_images(model, bad, cfg, spec)
    labels = np.r_[np.zeros(len(good_scores)), np.ones(len(bad_scores))]
    return image_auroc(labels, np.r_[good_scores, bad_scores])


def pick(aurocs: dict[str, float], min_gain: float) -> str:
    """The first candidate, unless a later one beats the best so far by min_gain (ties keep the earlier one)."""
    names = list(aurocs)
    best = names[0]
    for name in names[1:]:
        if aurocs[name] >= aurocs[best] + min_gain:
            best = name
    return best
