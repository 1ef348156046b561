"""Distillation training for rd, rd_aug and dual (and the statistics-only gauss), with per-epoch checkpoints and --resume.

The frozen teacher's features of the raw images are computed once and cached: an epoch then costs
only the student's forward/backward (plus teacher passes on augmented images for rd_aug).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch

from edge_ad import data as D
from edge_ad.training.augment import augment
from edge_ad.config import Config, save_config, to_dict
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json
from edge_ad.methods import get_method
from edge_ad.models.artifact import MODEL_FILE, model_outputs, read_checkpoint, save_checkpoint, save_model
from edge_ad.models.model import ADModel
from edge_ad.models.rd import distill_loss
from edge_ad.progress import progress
from edge_ad.partmask import plan_frame_mask
from edge_ad.region import REGION_EPS, estimate_region, evened
from edge_ad.scoring import (ScoringSpec, blur, fit_group_scales, frame_weights, fuse, group_maps, image_score,
                             region_weights, threshold_from_good, weighted)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
ADAM_BETAS = (0.5, 0.999)  # as in RD4AD
FEATURE_BATCH = 16  # images per teacher pass when caching features


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgeAdError("train.device is cuda but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def to_batch(images: list[np.ndarray], cfg: Config, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack([D.normalize(im, cfg.data) for im in images])).to(device)


@torch.no_grad()
def teacher_features(model: ADModel, images: list[np.ndarray], cfg: Config, device: torch.device,
                     desc: str = "teacher features") -> list[torch.Tensor]:
    """Teacher features of all images, concatenated per tap (kept on the training device)."""
    chunks: list[list[torch.Tensor]] = []
    for i in progress(range(0, len(images), FEATURE_BATCH), desc=desc, unit="batch", leave=False):
        chunks.append(model.teacher(to_batch(images[i:i + FEATURE_BATCH], cfg, device)))
    return [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def load_training_images(cfg: Config) -> list[np.ndarray]:
    if not cfg.data.root:
        raise EdgeAdError("data.root is not set: give --data DIR or set data.root in the config")
    paths = [s.path for s in D.list_split(cfg.data.root, "train")]
    images, kept = D.load_prepared(paths, cfg.data)
    if len(kept) < 2:
        raise EdgeAdError(f"need at least 2 readable training images in {cfg.data.root}/train/good, found {len(kept)}")
    return images


def train(cfg: Config, resume: bool = False, images: list[np.ndarray] | None = None) -> Path:
    """Train the configured method; returns the path of the final model file."""
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    images = load_training_images(cfg) if images is None else images
    model = ADModel(cfg.model).to(device)
    epochs = cfg.epochs_for(len(images))
    opt = student_optimizer(model, cfg) if epochs else None
    start, history = 0, []
    ckpt_path = out / CHECKPOINT_FILE
    if resume and ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path, device)
        if ckpt["config"]["model"] != to_dict(cfg.model):
            raise EdgeAdError(f"{ckpt_path}: checkpoint was trained with another model config; remove it or drop --resume")
        model.students.load_state_dict(ckpt["students"])
        if opt is not None:
            opt.load_state_dict(ckpt["optimizer"])
        start, history = ckpt["epoch"], ckpt["history"]
        torch.set_rng_state(ckpt["torch_rng"])
        log.info("resuming %s from epoch %d", out, start)
    save_config(cfg, out / "config.yaml")

    raw = teacher_features(model, images, cfg, device)
    rng = np.random.default_rng(cfg.train.seed + start)
    n = len(images)
    budget_s = cfg.train.max_minutes * 60
    for epoch in range(start, epochs):
        if budget_s and not epoch_fits(history, budget_s):
            log.info("training stopped after epoch %d of %d: train.max_minutes (%g) reached", epoch, epochs,
                     cfg.train.max_minutes)
            break
        t0 = time.time()
        loss = distill_epoch(model, images, raw, cfg, device, opt, rng, f"epoch {epoch + 1}/{epochs}")
        history.append({"epoch": epoch + 1, "loss": loss, "seconds": round(time.time() - t0, 2)})
        log.info("epoch %d/%d: loss %.4f (%.1f s)", epoch + 1, epochs, loss, history[-1]["seconds"])
        save_checkpoint({"config": to_dict(cfg), "students": model.students.state_dict(), "optimizer": opt.state_dict(),
                     "epoch": epoch + 1, "history": history, "torch_rng": torch.get_rng_state()}, ckpt_path)
    atomic_write_json(out / "history.json", history)

    model.eval()
    if model.gaussian is not None:
        t0 = time.time()
        model.gaussian.fit(model.gaussian_features(raw))
        log.info("Gaussian map fitted on %d images in %.1f s", n, time.time() - t0)
    spec, good_scores = fit_scoring(model, images, cfg, device)
    threshold = threshold_from_good(good_scores, cfg.scoring.threshold_quantile, cfg.scoring.threshold_margin)
    steps = len(history) * (-(-n // cfg.train.batch_size))
    meta = {"train_seconds": round(sum(h["seconds"] for h in history), 2), "epochs": len(history), "steps": steps,
            "train_images": n, "data_root": cfg.data.root, "threshold": threshold, "threshold_source": "train good scores"}
    save_model(model, cfg, spec, meta, out / MODEL_FILE)
    return out / MODEL_FILE


def student_optimizer(model: ADModel, cfg: Config, lr: float | None = None) -> torch.optim.Optimizer:
    """Adam over the students only (the teacher stays frozen), with RD4AD's betas."""
    return torch.optim.Adam(model.students.parameters(), lr=cfg.train.lr if lr is None else lr, betas=ADAM_BETAS,
                            weight_decay=cfg.train.weight_decay)


def batch_loss(model: ADModel, images: list[np.ndarray], idx: list[int], raw: list[torch.Tensor], cfg: Config,
               device: torch.device, rng: np.random.Generator) -> torch.Tensor:
    """Distillation loss of one batch: students fed T(x) (or T(aug x) for rd_aug) must reproduce T(x)."""
    target = [f[idx] for f in raw]
    inputs = target
    if get_method(cfg.model.method).augmented_inputs:
        inputs = augmented_features(model, images, idx, target, cfg, device, rng)
    return sum(distill_loss(t, s) for t, s in zip(model.pair_features(target), model.student_outputs(inputs)))


def epoch_fits(history: list[dict], budget_s: float) -> bool:
    """Whether one more epoch (as long as the mean so far) ends within the budget: max_minutes is a cap, not a floor."""
    spent = sum(h["seconds"] for h in history)
    mean = spent / len(history) if history else 0.0
    return spent + mean <= budget_s


def distill_epoch(model: ADModel, images: list[np.ndarray], raw: list[torch.Tensor], cfg: Config, device: torch.device,
                  opt: torch.optim.Optimizer, rng: np.random.Generator, desc: str = "epoch") -> float:
    """One shuffled pass over the cached teacher features (used by training and pruning recovery); mean loss."""
    model.students.train()
    n, bs = len(images), cfg.train.batch_size
    order = torch.randperm(n).tolist()
    bar = progress(range(0, n, bs), desc=desc, unit="it")
    total = 0.0
    for i in bar:
        idx = order[i:i + bs]
        loss = batch_loss(model, images, idx, raw, cfg, device, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / n


def augmented_features(model: ADModel, images: list[np.ndarray], idx: list[int], raw: list[torch.Tensor],
                       cfg: Config, device: torch.device, rng: np.random.Generator) -> list[torch.Tensor]:
    """Teacher features of augmented copies (for a random subset of the batch; raw for the rest)."""
    chosen = [k for k in range(len(idx)) if rng.random() < cfg.augment.probability]
    if not chosen:
        return raw
    with torch.no_grad():
        aug = model.teacher(to_batch([augment(images[idx[k]], cfg.augment, rng) for k in chosen], cfg, device))
    out = [f.clone() for f in raw]
    for f, a in zip(out, aug):
        f[chosen] = a
    return out


def fit_scoring(model: ADModel, images: list[np.ndarray], cfg: Config,
                device: torch.device) -> tuple[ScoringSpec, np.ndarray]:
    """Scoring spec with pair normalisers fitted on good training images, and those images' scores."""
    spec = ScoringSpec(out_size=tuple(cfg.data.input_size), groups=model.groups, group_scales=[1.0] * len(model.groups),
                       fusion=cfg.model.fusion, blur_sigma=cfg.scoring.blur_sigma, image_score=cfg.scoring.image_score,
                       topk_fraction=cfg.scoring.topk_fraction)
    pair_maps = []
    for i in range(0, len(images), FEATURE_BATCH):
        outs = model_outputs(model, to_batch(images[i:i + FEATURE_BATCH], cfg, torch.device("cpu")).numpy())
        pair_maps += [group_maps([o[j, 0] for o in outs], spec) for j in range(outs[0].shape[0])]
    if len(model.groups) > 1:
        spec.group_scales = fit_group_scales(pair_maps)
    maps = [blur(fuse(pm, spec).astype(np.float32), spec.blur_sigma) for pm in pair_maps]
    if cfg.scoring.region == "auto":
        region = estimate_region(images)
        log.info("part region: %s", region.why)
        spec.region = np.round(evened(region.weights, np.mean(maps, axis=0)), 3).tolist()
    coverage = 1.0 if spec.region is None else float((region_weights(spec) > REGION_EPS).mean())
    plan = plan_frame_mask(images, coverage, cfg.scoring.frame_mask)
    if cfg.scoring.frame_mask != "off":
        log.info("frame mask: %s", plan.why)
    spec.frame_mask, spec.frame_mask_min = plan.use, plan.min_share
    weights = frame_weights(images, spec)
    scores = [image_score(weighted(m, spec, w), spec) for m, w in zip(maps, weights)]
    return spec, np.array(scores)
