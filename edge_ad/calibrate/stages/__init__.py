"""Stages 2-10 of calibrate, one module each: split, train, prune, export, quantize, threshold (with the readiness
verdict), engine, bundle (capture and report live in edge_ad.calibrate.capture and .report).

Each stage is a function (job, state, hook) -> its typed result (edge_ad.calibrate.job); it reads earlier
results from `state` and writes only under its own <work>/<part>/<stage>/ folder, so a rerun can redo it.
"""

from edge_ad.calibrate.stages.bundle import stage_bundle
from edge_ad.calibrate.stages.common import chosen_config, judged_set, model_config, notes, usable_images, val_paths
from edge_ad.calibrate.stages.engine import stage_engine
from edge_ad.calibrate.stages.export import stage_export
from edge_ad.calibrate.stages.prune import stage_prune
from edge_ad.calibrate.stages.quantize import stage_quantize
from edge_ad.calibrate.stages.readiness import MEAN_MAP_FILE, assess_readiness
from edge_ad.calibrate.stages.split import stage_split
from edge_ad.calibrate.stages.threshold import stage_threshold
from edge_ad.calibrate.stages.train import stage_train

__all__ = ["MEAN_MAP_FILE", "assess_readiness", "chosen_config", "judged_set", "model_config", "notes", "stage_bundle",
           "stage_engine", "stage_export", "stage_prune", "stage_quantize", "stage_split", "stage_threshold",
           "stage_train", "usable_images", "val_paths"]
