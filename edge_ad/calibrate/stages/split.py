"""Split stage: a seeded shuffle of the usable images into train/good and a validation list, and the input
settings (size, lighting, denoising) chosen from the training images."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from edge_ad.calibrate.job import CalibrationError, Hook, Job, SplitResult, State, say
from edge_ad.calibrate.stages.common import usable_images
from edge_ad.fileio import atomic_write
from edge_ad.metrics import clopper_pearson

log = logging.getLogger(__name__)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def held_out(n: int, job: Job) -> tuple[int, str, str]:
    """(validation images, forced note, few-images note) for n usable images: a small set holds out up to
    split.max_val_fraction to reach split.min_val; below split.min_val_few it stops unless --force."""
    sp = job.recipe.calib.split
    n_val = max(1, int(round(sp.val_fraction * n)), min(sp.min_val, int(sp.max_val_fraction * n)))
    floor = min(sp.min_val_few, sp.min_val)
    if n_val < floor:
        msg = (f"{n} usable images give {n_val} validation images; a threshold and its false-alarm estimate "
               f"need at least {floor} (split.min_val_few)")
        if not job.force:
            need = int(np.ceil(floor / sp.max_val_fraction))
            raise CalibrationError(f"{msg}: capture at least {need} good images (better "
                                   f"{int(np.ceil(sp.min_val / sp.val_fraction))}), or rerun with --force to go on "
                                   "anyway (the report will say so)")
        forced = f"{msg}; continued because of --force"
        log.warning("%s", forced)
        return n_val, forced, ""
    if n_val < sp.min_val:
        hi = clopper_pearson(0, n_val)[1]
        few = (f"few good images: {n_val} held out for validation ({n_val / n:.0%}); even with no false alarm among "
               f"them the 95 % interval of the false-alarm rate reaches {hi:.0%} (with {sp.min_val} it would be "
               f"{clopper_pearson(0, sp.min_val)[1]:.0%}): capture more to narrow it")
        say(f"split: {few}")
        return n_val, "", few
    return n_val, "", ""


def stage_split(job: Job, state: State, hook: Hook | None) -> SplitResult:
    """Seeded shuffle of the sorted usable names -> dataset/train/good (MVTec layout) + dataset/val.txt;
    the input settings are chosen here from the images (recipe auto: section)."""
    from edge_ad.deploy.quantize import MIN_CALIB_IMAGES

    paths = usable_images(job, state)
    order = np.random.default_rng(job.recipe.calib.split.seed).permutation(len(paths))
    n_val, forced, few = held_out(len(paths), job)
    n_train = len(paths) - n_val
    need = max(2, MIN_CALIB_IMAGES)
    if n_train < need:
        raise CalibrationError(f"{len(paths)} images leave {n_train} for training after {n_val} for validation; "
                               f"need at least {need + n_val}: capture more")
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    root = job.stage_dir("dataset")
    good = root / "train" / "good"
    good.mkdir(parents=True)
    for p in train:
        _link_or_copy(p, good / p.name)
    atomic_write(root / "val.txt", "".join(f"{p.name}\n" for p in val))
    data, why = input_plan(job, train)
    for line in why:
        say(f"split: {line}")
    return SplitResult(root=str(root), train=len(train), val=len(val), val_list=str(root / "val.txt"), data=data,
                       why=why + ([few] if few else []), forced=forced)


def input_plan(job: Job, train: list[Path]) -> tuple[dict, list[str]]:
    """data.* overrides from the training images (recipe auto: section) and why; ({}, []) when both are off."""
    import cv2

    from edge_ad.calibrate.auto import NOISE_SIDE, noise_sigma, plan_input
    from edge_ad.pose import AlignPlan, canvas, plan_align
    from edge_ad.region import POSE_SAMPLE

    auto = job.recipe.calib.auto
    if not (auto.input_size or auto.lighting or auto.align or auto.frame_mask):
        return {}, []
    shapes, greys, noises = [], [], []
    sample = set(train[:: max(1, len(train) // POSE_SAMPLE)][:POSE_SAMPLE])
    frames = []
    for p in train:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        if p in sample:
            frames.append(img)
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        shapes.append(g.shape[:2])
        greys.append(float(g.mean()))
        s = NOISE_SIDE / max(g.shape)
        small = cv2.resize(g.astype(np.float32), (round(g.shape[1] * s), round(g.shape[0] * s)),
                           interpolation=cv2.INTER_AREA) if s < 1 else g
        noises.append(noise_sigma(small))
    plan_pose = plan_align(frames) if auto.align or auto.frame_mask else AlignPlan(False, "")
    box = plan_pose.box if auto.align else None
    if box is not None:  # the input shows the aligned part's box: its shape sets the input size
        shapes = [(round(side * (box[1] - box[0])), round(side * (box[3] - box[2])))
                  for side in (canvas(hw)[0] for hw in shapes)]  # the box is in fractions of the aligned canvas
    plan = plan_input(shapes, greys, noises)
    keep = (["data.image_size"] if auto.input_size else []) + (
        ["data.normalize", "data.gain", "data.denoise"] if auto.lighting else [])
    why = (plan.size_why if auto.input_size else []) + (plan.lighting_why if auto.lighting else [])
    out = {k: v for k, v in plan.overrides().items() if k in keep}
    if auto.align:
        out.update({"data.align": plan_pose.align, "data.align_box": box})
        why.append(plan_pose.why + (f"; the input shows the part's box {box} (y0, y1, x0, x1 of the aligned frame)"
                                    if box else ""))
    if auto.frame_mask and plan_pose.moves:  # the learnt region is loose around a part that moves: each frame's own
        out["scoring.frame_mask"] = "auto"  # mask, when training finds it reliable (edge_ad.partmask.plan_frame_mask)
    return out, why
