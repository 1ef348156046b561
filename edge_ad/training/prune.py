"""Structural pruning of the students (bottleneck + decoder) with recovery distillation; the teacher is never pruned.

Channels are removed uniformly layer by layer; torch-pruning's dependency graph keeps coupled layers
(residual adds, the OCBE concatenation, batch norms) consistent. The output heads keep the teacher's
channel counts, so the cosine maps still compare like with like. The result is an ordinary model.pt
(pruned students stored as whole modules) that loads, exports and quantizes like any other.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_ad.models.artifact import MODEL_FILE, load_model, save_model
from edge_ad.training import train as T
from edge_ad.config import Config, save_config, validate_tree
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json
from edge_ad.models.model import ADModel
from edge_ad.scoring import threshold_from_good

log = logging.getLogger(__name__)


def _tp():
    try:
        import torch_pruning
    except ImportError:
        raise EdgeAdError("pruning needs torch-pruning: pip install torch-pruning (or pip install 'edge_ad[train]')") from None
    return torch_pruning


def example_features(model: ADModel, cfg: Config) -> list[list[torch.Tensor]]:
    """Each student's inputs for one zero image: what the dependency graph traces and MACs are counted on."""
    h, w = cfg.data.input_size
    device = next(model.teacher.parameters()).device
    with torch.no_grad():
        return model.pair_features(model.teacher(torch.zeros(1, 3, h, w, device=device)))


def student_cost(model: ADModel, cfg: Config) -> tuple[int, int]:
    """(parameters, multiply-accumulates for one image) of all students together."""
    tp = _tp()
    params = macs = 0
    for student, feats in zip(model.students, example_features(model, cfg)):
        m, p = tp.utils.count_ops_and_params(student, (feats,))
        macs, params = macs + int(m), params + int(p)
    return params, macs


def effective_round_to(model: ADModel, cfg: Config) -> int | None:
    """prune.round_to, unless rounding would empty the narrowest prunable layer (then exact channel counts)."""
    r = cfg.prune.round_to
    if r <= 1:
        return None
    heads = {id(h) for s in model.students for h in s.heads}
    narrowest = min(m.out_channels for m in model.students.modules()
                    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and id(m) not in heads)
    if int(narrowest * (1 - cfg.prune.ratio)) < r:
        log.warning("prune.round_to=%d not applied: the narrowest student layer (%d channels) keeps fewer at ratio %.2f",
                    r, narrowest, cfg.prune.ratio)
        return None
    return r


def make_pruners(model: ADModel, cfg: Config, round_to: int | None) -> list:
    """One iterative pruner per student; its output heads are left whole."""
    tp = _tp()
    imp = tp.importance.TaylorImportance() if cfg.prune.importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    model.students.eval()  # tracing runs a forward pass: do not touch the batch-norm statistics
    return [tp.pruner.MetaPruner(student, (feats,), importance=imp, pruning_ratio=cfg.prune.ratio,
                                 iterative_steps=cfg.prune.steps, ignored_layers=list(student.heads), round_to=round_to)
            for student, feats in zip(model.students, example_features(model, cfg))]


def accumulate_gradients(model: ADModel, images: list[np.ndarray], raw: list[torch.Tensor], cfg: Config,
                         device: torch.device, rng: np.random.Generator) -> None:
    """Sum distillation-loss gradients over a few batches: what Taylor importance (|w * dL/dw|) reads."""
    model.students.eval()
    model.students.zero_grad(set_to_none=True)
    n, bs = len(images), cfg.train.batch_size
    order = torch.randperm(n).tolist()
    for b in range(min(cfg.prune.taylor_batches, math.ceil(n / bs))):
        T.batch_loss(model, images, order[b * bs:(b + 1) * bs], raw, cfg, device, rng).backward()


def prune_model(model_path: str | Path, ratio: float | None = None, steps: int | None = None,
                importance: str | None = None, finetune_epochs: int | None = None, out_dir: str | Path | None = None,
                data_root: str | Path | None = None) -> Path:
    """Prune a trained model's students in steps, recovering by distillation after each; refit the threshold.

    Arguments left None come from the model's `prune:` config section (defaults: config.PruneConfig).
    Writes model.pt, config.yaml and prune_history.json to out_dir (default: <model dir>/pruned_<ratio%>).
    """
    src = Path(model_path)
    model, cfg, _, meta = load_model(src)
    if not len(model.students):
        raise EdgeAdError(f"{src}: method {cfg.model.method} has no student to prune")
    given = {"ratio": ratio, "steps": steps, "importance": importance, "finetune_epochs": finetune_epochs}
    cfg.prune = dataclasses.replace(cfg.prune, **{k: v for k, v in given.items() if v is not None})
    validate_tree(cfg.prune, "prune.")
    p = cfg.prune
    cfg.data.root = str(data_root or meta.get("data_root") or cfg.data.root)
    out = Path(out_dir) if out_dir else (src if src.is_dir() else src.parent) / f"pruned_{round(100 * p.ratio):02d}"
    cfg.train.out_dir = str(out)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    T.seed_everything(cfg.train.seed)
    device = T.resolve_device(cfg.train.device)
    model.to(device)
    images = T.load_training_images(cfg)
    t_start = time.time()
    params_before, macs_before = student_cost(model, cfg)
    raw = T.teacher_features(model, images, cfg, device)
    rng = np.random.default_rng(cfg.train.seed)
    round_to = effective_round_to(model, cfg)
    pruners = make_pruners(model, cfg, round_to)
    history = []
    for step in range(1, p.steps + 1):
        t0 = time.time()
        if p.importance == "taylor":
            accumulate_gradients(model, images, raw, cfg, device, rng)
        for pruner in pruners:
            pruner.step()
        model.students.zero_grad(set_to_none=True)
        opt = T.student_optimizer(model, cfg, p.lr)  # pruning replaced the parameters: fresh optimizer state
        losses = [T.distill_epoch(model, images, raw, cfg, device, opt, rng,
                                  f"prune step {step}/{p.steps}, epoch {e + 1}/{p.finetune_epochs}")
                  for e in range(p.finetune_epochs)]
        params, macs = student_cost(model, cfg)
        history.append({"step": step, "params": params, "macs": macs, "losses": losses, "seconds": round(time.time() - t0, 2)})
        log.info("prune step %d/%d: student params %d -> %d, MACs %d -> %d%s", step, p.steps, params_before, params,
                 macs_before, macs, f", recovery loss {losses[-1]:.4f}" if losses else "")
    del pruners  # they hold the dependency graph; only the modules are saved

    model.eval()
    spec, good_scores = T.fit_scoring(model, images, cfg, device)
    threshold = threshold_from_good(good_scores, cfg.scoring.threshold_quantile, cfg.scoring.threshold_margin)
    params_after, macs_after = student_cost(model, cfg)
    new_meta = {**meta, "threshold": threshold, "threshold_source": "train good scores after pruning",
                "data_root": cfg.data.root, "pruned": True, "source_model": str(src),
                "prune": {"ratio": p.ratio, "steps": p.steps, "importance": p.importance,
                          "finetune_epochs": p.finetune_epochs, "lr": p.lr, "round_to": round_to or 1,
                          "params_before": params_before, "params_after": params_after,
                          "macs_before": macs_before, "macs_after": macs_after,
                          "seconds": round(time.time() - t_start, 2)}}
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    atomic_write_json(out / "prune_history.json", history)
    save_model(model, cfg, spec, new_meta, out / MODEL_FILE)
    log.info("pruned %s at ratio %.2f (%s): student params %d -> %d (%.0f%%), MACs %d -> %d (%.0f%%)", src, p.ratio,
             p.importance, params_before, params_after, 100 * params_after / params_before, macs_before, macs_after,
             100 * macs_after / macs_before)
    return out / MODEL_FILE
