"""Picking the model for a part from its good images alone: train each candidate of the recipe, judge it on
held-out goods and synthetic defects (edge_ad.calibrate.judge), keep the one that separates them best.

Candidates are trained one after another into <work>/<part>/model/<name>/ and each judgement is saved
there, so an interrupted selection resumes with the candidates it has not finished.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np

from edge_ad import data as D
from edge_ad.calibrate.job import CalibrationError, Job, State, say
from edge_ad.calibrate.judge import JudgedSet, judge, judge_images, synthetic_defects
from edge_ad.config import Config, build, read_yaml, to_dict
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json
from edge_ad.region import MIN_POSE_OVERLAP, pose_overlap

log = logging.getLogger(__name__)

JUDGEMENT_FILE = "judgement.json"


def candidate_config(base: Config, overrides: dict, out_dir: Path, name: str) -> Config:
    """The recipe's model config with one candidate's dotted overrides, checked like any config."""
    raw, _ = read_yaml(None, {**_flatten(to_dict(base)), **overrides})
    cfg = build(Config, raw, f"select.candidates.{name}")
    cfg.train.out_dir = str(out_dir)
    return cfg


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def prepared(paths: list[Path], cfg: Config) -> list[np.ndarray]:
    images, kept = D.load_prepared(paths, cfg.data)
    if len(kept) < len(paths):
        log.warning("%d held-out image(s) could not be read", len(paths) - len(kept))
    return images


def train_and_judge(name: str, cfg: Config, js: JudgedSet) -> dict:
    """Train (or resume) one candidate and judge it; the result is saved beside its model."""
    from edge_ad.runtime.detector import open_detector
    from edge_ad.training.train import train

    out = Path(cfg.train.out_dir)
    saved = out / JUDGEMENT_FILE
    if saved.is_file():
        doc = json.loads(saved.read_text())
        if doc.get("config") == to_dict(cfg):
            return doc
    t0 = time.perf_counter()
    path = train(cfg, resume=True)
    seconds = time.perf_counter() - t0
    det = open_detector(path, "torch", cfg.train.threads)
    j = judge(det, js)
    meta = det.info.meta
    doc = {"name": name, "model": str(path), "method": cfg.model.method, "teacher": cfg.model.teacher,
           "epochs": int(meta.get("epochs", 0)), "steps": int(meta.get("steps", 0)), "train_seconds": round(seconds, 1),
           "judgement": j.summary(), "config": to_dict(cfg)}
    atomic_write_json(saved, doc)
    return doc


def select_model(job: Job, state: State, base: Config, val_paths: list[Path]) -> dict:
    """Train every candidate, judge each, return the chosen one's record plus the table of all of them."""
    sel = job.recipe.calib.select
    names = list(sel.candidates) if sel.enabled else ["recipe"]
    val_rgb = judge_images(prepared(val_paths, base), sel.max_images)
    if not val_rgb:
        raise CalibrationError("no readable validation image to judge the models on")
    js = synthetic_defects(val_rgb, sel.seed, sel.max_images)
    overlap = pose_overlap(val_rgb)
    moving = overlap is not None and overlap < MIN_POSE_OVERLAP
    cfgs = {}
    for name in names:
        overrides = sel.candidates.get(name, {}) if sel.enabled else {}
        try:
            cfgs[name] = candidate_config(base, overrides, job.stage_dir("model") / name, name)
        except EdgeAdError as e:
            raise CalibrationError(f"recipe select.candidates.{name}: {e}") from None
    can_skip = moving and any(not per_location(c) for c in cfgs.values())
    skip = {name for name, cfg in cfgs.items() if can_skip and per_location(cfg)}
    if skip and sel.pool_minutes:
        pool_minutes({n: c for n, c in cfgs.items() if n not in skip}, [cfgs[n] for n in skip])
    rows, skipped = [], []
    for name, cfg in cfgs.items():
        if name in skip:
            skipped.append(f"{name} (a per-location model: the part moves between images, median overlap "
                           f"{overlap:.2f} < {MIN_POSE_OVERLAP})")
            say(f"train: skipped candidate {skipped[-1]}")
            continue
        say(f"train: candidate {name} ({cfg.model.method}, {cfg.model.teacher})")
        rows.append(train_and_judge(name, cfg, js))
        j = rows[-1]["judgement"]
        say(f"train: {name}: held-out goods vs synthetic defects: image AUROC {j['image_auroc']:.3f}, "
            f"pixel AUROC {j['pixel_auroc']:.3f}")
    best = rows[0]
    for row in rows[1:]:  # a later candidate must be better by min_gain: ties keep the earlier (preferred) one
        if row["judgement"]["score"] > best["judgement"]["score"] + sel.min_gain:
            best = row
    why = (f"{best['name']} separates {len(val_rgb)} held-out good images from {len(js.defects)} synthetic defects best "
           f"(synthetic-defect pixel AUROC {best['judgement']['score']:.3f}"
           + "".join(f"; {r['name']} {r['judgement']['score']:.3f}" for r in rows if r is not best) + ")")
    if len(rows) == 1:
        why = f"the recipe's model ({best['method']}); select.enabled is false" if not sel.enabled else \
            f"the only candidate ({best['name']})"
    if skipped:
        why += "; skipped: " + ", ".join(skipped)
    say(f"train: picked {best['name']}: {why}")
    table = [{k: r[k] for k in ("name", "method", "teacher", "epochs", "steps", "train_seconds", "judgement")} for r in rows]
    return {"best": best, "candidates": table, "why": why, "val_images": len(val_rgb), "synthetic_defects": len(js.defects),
            "config": copy.deepcopy(best["config"]), "pose_overlap": overlap, "skipped": skipped}


def pool_minutes(trained: dict[str, Config], skipped: list[Config]) -> None:
    """Spread the skipped candidates' training minutes over the trained ones: calibrate's time budget is per part,
    and a moving part that rules out the per-location model needs the longer schedule of the one left."""
    spare = sum(c.train.max_minutes for c in skipped)
    capped = [c for c in trained.values() if c.train.max_minutes > 0]
    if spare <= 0 or not capped or any(c.train.max_minutes == 0 for c in skipped):
        return
    for c in capped:
        c.train.max_minutes += spare / len(capped)
    say("train: the skipped candidates' minutes go to " + ", ".join(
        f"{n} (train.max_minutes {c.train.max_minutes:g})" for n, c in trained.items() if c in capped))


def per_location(cfg: Config) -> bool:
    """Whether a model keeps statistics per image location (the Gaussian map): it needs the part in a fixed place."""
    from edge_ad.methods import get_method

    return bool(cfg.model.gaussian_stride) or get_method(cfg.model.method).needs_gaussian
