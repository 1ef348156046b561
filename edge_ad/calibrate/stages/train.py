"""Train stage: every candidate of the recipe trained and judged (edge_ad.calibrate.select); the best is kept."""

from __future__ import annotations

import logging

from edge_ad.calibrate.job import Hook, Job, State, TrainResult
from edge_ad.calibrate.stages.common import model_config, val_paths

log = logging.getLogger(__name__)

GAUSSIAN_FEW_IMAGES = 400  # a per-location Gaussian fitted on fewer training images is warned about (see calibration/README.md)


def stage_train(job: Job, state: State, hook: Hook | None) -> TrainResult:
    """Train the recipe's candidates (each resumable), judge them on held-out goods and synthetic defects, keep the best."""
    from edge_ad.calibrate.select import select_model

    picked = select_model(job, state, model_config(job, state), val_paths(job, state))
    best, cfg = picked["best"], picked["config"]
    n, warnings = state.get("split").train, []
    if cfg["model"]["gaussian_stride"] and n < GAUSSIAN_FEW_IMAGES:
        warnings.append(f"the Gaussian map was fitted on {n} training images; it keeps improving up to about "
                        f"{GAUSSIAN_FEW_IMAGES} or more: capture more good images if detections are weak")
        log.warning("%s", warnings[-1])
    return TrainResult(model=best["model"], method=best["method"], epochs=best["epochs"], warnings=warnings,
                       selection={k: v for k, v in picked.items() if k != "best"}, steps=best["steps"],
                       seconds=sum(r["train_seconds"] for r in picked["candidates"]))
