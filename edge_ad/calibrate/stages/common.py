"""What several stages read: the usable and held-out images, the model configs, the judged set, the notes."""

from __future__ import annotations

from pathlib import Path

from edge_ad import data as D
from edge_ad.calibrate.job import CAPTURED, Job, State
from edge_ad.calibrate.judge import JudgedSet
from edge_ad.config import Config, read_yaml, to_dict


def usable_images(job: Job, state: State) -> list[Path]:
    """Captured images minus the outliers the capture stage left out."""
    excluded = set(state.get("capture").relative.get("excluded", []))
    return [p for p in D.list_images(job.dir / CAPTURED) if p.name not in excluded]


def val_paths(job: Job, state: State) -> list[Path]:
    names = Path(state.get("split").val_list).read_text().split()
    return [job.dir / CAPTURED / n for n in names]


def model_config(job: Job, state: State) -> Config:
    """The recipe's model config with the split's data root and its input settings chosen from the images."""
    from edge_ad.config import build

    split = state.get("split")
    raw, _ = read_yaml(None, {**split.data, "data.root": split.root, "train.out_dir": str(job.stage_dir("model"))})
    merged = to_dict(job.recipe.config)
    for section, values in raw.items():
        merged[section].update(values)
    return build(Config, merged, "recipe")


def chosen_config(job: Job, state: State) -> Config:
    """The config of the model the train stage picked (the recipe's, with the winning candidate's overrides)."""
    from edge_ad.config import build

    picked = state.get("train").selection.get("config")
    return build(Config, picked, "the chosen model") if picked else model_config(job, state)


_JUDGED: dict[str, JudgedSet] = {}  # one judged set per calibration and chosen input, shared by quantize and readiness


def judged_set(job: Job, state: State) -> JudgedSet:
    """The held-out images (at most select.max_images) and their synthetic defects, prepared for the chosen model:
    what the quantize variants and the readiness verdict are judged on (made once per process)."""
    import json

    from edge_ad.calibrate.judge import judge_images, synthetic_defects
    from edge_ad.calibrate.select import prepared

    sel, cfg = job.recipe.calib.select, chosen_config(job, state)
    paths = val_paths(job, state)
    key = json.dumps([str(job.dir), to_dict(cfg.data), sel.seed, sel.max_images, [str(p) for p in paths]])
    if key not in _JUDGED:
        _JUDGED.clear()
        val_rgb = judge_images(prepared(paths, cfg), sel.max_images)
        _JUDGED[key] = synthetic_defects(val_rgb, sel.seed, sel.max_images)
    return _JUDGED[key]


def deployed_detector(path: str | Path, job: Job, threshold: float | None = None):
    """The station's own detector for a graph calibrate made (onnxruntime here; the engine has its own check)."""
    from edge_ad.runtime.detector import open_detector

    return open_detector(path, "onnxruntime", job.recipe.config.train.threads, threshold)


def notes(state: State) -> list[str]:
    """What the report and the manifest warn about: the capture's and the training's notes."""
    return list(state.get("capture").warnings) + list(state.get("train").warnings)
