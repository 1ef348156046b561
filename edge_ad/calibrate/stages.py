"""Stages 2-8 of calibrate: split, train, prune, export, quantize, threshold, engine, bundle.

Each stage is a function (job, state, hook) -> its typed result (edge_ad.calibrate.job); it reads earlier
results from `state` and writes only under its own <work>/<part>/<stage>/ folder, so a rerun can redo it.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from edge_ad import bundle as B
from edge_ad import data as D
from edge_ad.calibrate.job import (CAPTURED, BundleResult, CalibrationError, EngineResult, ExportResult, Hook, Job,
                                   PruneResult, QuantizeResult, SplitResult, State, ThresholdResult, TrainResult, say)
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write, atomic_write_json
from edge_ad.methods import get_method
from edge_ad.versions import software_versions

log = logging.getLogger(__name__)

GAUSSIAN_FEW_IMAGES = 400  # a per-location Gaussian fitted on fewer training images is warned about (see calibration/README.md)


# ----------------------------------------------------------------------------- split


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def usable_images(job: Job, state: State) -> list[Path]:
    """Captured images minus the outliers the capture stage left out."""
    excluded = set(state.get("capture").relative.get("excluded", []))
    return [p for p in D.list_images(job.dir / CAPTURED) if p.name not in excluded]


def stage_split(job: Job, state: State, hook: Hook | None) -> SplitResult:
    """Seeded shuffle of the sorted usable names -> dataset/train/good (MVTec layout) + dataset/val.txt."""
    from edge_ad.deploy.quantize import MIN_CALIB_IMAGES

    sp = job.recipe.calib.split
    paths = usable_images(job, state)
    order = np.random.default_rng(sp.seed).permutation(len(paths))
    n_val = max(sp.min_val, int(round(sp.val_fraction * len(paths))))
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
    return SplitResult(root=str(root), train=len(train), val=len(val), val_list=str(root / "val.txt"))


def val_paths(job: Job, state: State) -> list[Path]:
    names = Path(state.get("split").val_list).read_text().split()
    return [job.dir / CAPTURED / n for n in names]


# ----------------------------------------------------------------------------- train, prune


def model_config(job: Job, state: State):
    cfg = copy.deepcopy(job.recipe.config)
    cfg.data.root = state.get("split").root
    cfg.train.out_dir = str(job.stage_dir("model"))
    return cfg


def stage_train(job: Job, state: State, hook: Hook | None) -> TrainResult:
    """Distil the student (recipe method and schedule); an interrupted training resumes from its checkpoint."""
    from edge_ad.training.train import train

    cfg = model_config(job, state)
    path = train(cfg, resume=True)
    n, warnings = state.get("split").train, []
    if cfg.model.gaussian_stride and n < GAUSSIAN_FEW_IMAGES:
        warnings.append(f"the Gaussian map was fitted on {n} training images; it keeps improving up to about "
                        f"{GAUSSIAN_FEW_IMAGES} or more: capture more good images if detections are weak")
        log.warning("%s", warnings[-1])
    return TrainResult(model=str(path), method=cfg.model.method, epochs=cfg.distill_epochs, warnings=warnings)


def notes(state: State) -> list[str]:
    """What the report and the manifest warn about: the capture's and the training's notes."""
    return list(state.get("capture").warnings) + list(state.get("train").warnings)


def stage_prune(job: Job, state: State, hook: Hook | None) -> PruneResult:
    """Structural pruning + recovery distillation with the prune settings of the model config."""
    model = state.get("train").model
    if not job.recipe.prune:
        return PruneResult(model=model, skipped="prune.enabled is false in the recipe")
    if not get_method(job.recipe.config.model.method).has_student:
        return PruneResult(model=model, skipped=f"method {job.recipe.config.model.method} has no student to prune")
    from edge_ad.training.prune import prune_model

    path = prune_model(model, out_dir=job.stage_dir("prune"), data_root=state.get("split").root)
    return PruneResult(model=str(path))


# ----------------------------------------------------------------------------- export, quantize


def stage_export(job: Job, state: State, hook: Hook | None) -> ExportResult:
    from edge_ad.deploy.export import export_onnx

    path = export_onnx(state.get("prune").model, job.stage_dir("export") / "model_fp32.onnx")
    return ExportResult(onnx=str(path), json=str(path.with_suffix(".json")))


def stage_quantize(job: Job, state: State, hook: Hook | None) -> QuantizeResult:
    """INT8 QDQ from calibration images chosen evenly over the training split (never the validation images)."""
    from edge_ad.deploy.quantize import calibration_batch, quantize

    q = job.recipe.calib.quantize
    calib = calibration_batch(state.get("split").root, job.recipe.config.data, q.calib_images)
    out_dir = job.stage_dir("quantize")
    cache = out_dir / "calibration.cache"
    path = quantize(state.get("export").onnx, out_dir / "model.onnx", calib, q.mode, q.method, q.exclude, cache)
    return QuantizeResult(onnx=str(path), json=str(path.with_suffix(".json")), cache=str(cache), calib_images=len(calib),
                          variant=f"int8_{q.mode}")


# ----------------------------------------------------------------------------- threshold


def score_paths(det, paths: list[Path], label: int, what: str) -> tuple[list[Path], list[float]]:
    from edge_ad.evaluate import run_split

    samples = [D.Sample(p, label, what, None) for p in paths]
    kept, _, scores, _, _ = run_split(det.session.run, det.info.data, det.info.scoring, samples, desc=what)
    return [s.path for s in kept], [float(s) for s in scores]


def stage_threshold(job: Job, state: State, hook: Hook | None) -> ThresholdResult:
    """Threshold from the deployed model's scores: val-good quantile + margin, or F1-optimal with defects."""
    from edge_ad import metrics as M
    from edge_ad.runtime.detector import open_detector
    from edge_ad.runtime.manifest import ModelInfo
    from edge_ad.scoring import threshold_from_good

    sc = job.recipe.config.scoring
    q = state.get("quantize")
    det = open_detector(q.onnx, "onnxruntime", job.recipe.config.train.threads)
    vpaths, val = score_paths(det, val_paths(job, state), 0, "good")
    if not val:
        raise CalibrationError("no readable validation image")
    defect_paths: list[Path] = []
    bad: list[float] = []
    if job.defects is not None:
        defect_paths, bad = score_paths(det, D.list_images(job.defects), 1, "defect")
        if not bad:
            raise CalibrationError(f"no readable defect images in {job.defects}")
    metrics = {"val_good": len(val), "val_score_mean": float(np.mean(val)), "val_score_max": float(np.max(val)),
               f"val_score_q{sc.threshold_quantile:g}": float(np.quantile(val, sc.threshold_quantile))}
    deployed = f"deployed {q.variant.replace('_', ' ')} model" if q.variant else "deployed model"
    if bad:
        labels = np.array([0] * len(val) + [1] * len(bad))
        scores = np.array(val + bad)
        threshold, _ = M.f1_optimal_threshold(labels, scores)
        source = f"F1-optimal on {len(val)} validation good + {len(bad)} defect images ({deployed})"
        metrics.update({"defects": len(bad), "image_auroc": M.image_auroc(labels, scores),
                        **{k: v for k, v in M.precision_recall_f1(labels, scores, threshold).items() if k != "threshold"}})
    else:
        threshold = threshold_from_good(np.array(val), sc.threshold_quantile, sc.threshold_margin)
        source = (f"quantile {sc.threshold_quantile:g} of {len(val)} validation good scores x (1 + {sc.threshold_margin:g}) "
                  f"({deployed})")
    metrics["val_false_alarm_rate"] = float(np.mean(np.array(val) >= threshold))
    out_dir = job.stage_dir("threshold")
    for src, name in ((q.json, "model.json"), (state.get("export").json, "model_fp32.json")):
        info = ModelInfo.load(src)
        info.threshold = float(threshold)
        info.meta.update({"threshold_source": source, "part": job.part})
        atomic_write_json(out_dir / name, info.to_dict())
    scores_doc = {"threshold": threshold, "val_good": [{"image": p.name, "score": s} for p, s in zip(vpaths, val)],
                  "defects": [{"image": str(p), "score": s} for p, s in zip(defect_paths, bad)]}
    atomic_write_json(out_dir / "scores.json", scores_doc)
    say(f"threshold {threshold:.5g} ({source}); validation false alarms {metrics['val_false_alarm_rate']:.1%}")
    return ThresholdResult(threshold=float(threshold), source=source, metrics=metrics,
                           model_json=str(out_dir / "model.json"), fp32_json=str(out_dir / "model_fp32.json"),
                           scores=str(out_dir / "scores.json"))


# ----------------------------------------------------------------------------- engine


def stage_engine(job: Job, state: State, hook: Hook | None) -> EngineResult:
    """TensorRT engine from the deployed model on this device; skipped (with the reason) without TensorRT."""
    from edge_ad.runtime import tensorrt as T

    eng = job.recipe.calib.engine
    if eng.build == "never":
        return EngineResult(skipped="engine.build is never in the recipe")
    try:
        T.import_tensorrt()
    except EdgeAdError as e:
        if eng.build == "always":
            raise
        log.info("engine: skipped (%s)", e)
        return EngineResult(skipped=str(e))
    from edge_ad.deploy.engine import build_engine

    q = state.get("quantize")
    out_dir = job.stage_dir("engine")
    built = build_engine(q.onnx, out_dir, precision=q.precision, workspace_mb=eng.workspace_mb)
    engine = out_dir / "model.engine"
    shutil.copy2(built, engine)
    record = T.build_record_path(engine)
    shutil.copy2(T.build_record_path(built), record)
    meta = T.read_build_record(engine) or {}
    return EngineResult(file=str(engine), build_record=str(record), trt_version=str(meta.get("trt_version", "")),
                        gpu_name=str(meta.get("gpu_name", "")), **_engine_parity(job, state, engine))


def _engine_parity(job: Job, state: State, engine: Path) -> dict:
    """Largest |engine score - onnxruntime score| over the validation images, also relative to the threshold."""
    import json

    from edge_ad.runtime.detector import AnomalyDetector
    from edge_ad.runtime.manifest import ModelInfo
    from edge_ad.runtime.tensorrt import TensorRTSession

    th = state.get("threshold")
    info = ModelInfo.load(th.model_json)
    ort_scores = {d["image"]: d["score"] for d in json.loads(Path(th.scores).read_text())["val_good"]}
    with TensorRTSession(engine) as session:
        det = AnomalyDetector(session, info)
        diffs = [abs(det.detect(D.load_image(p)).score - ort_scores[p.name]) for p in val_paths(job, state)
                 if p.name in ort_scores]
    worst = float(max(diffs, default=0.0))
    return {"max_score_diff_vs_ort": worst, "max_score_diff_rel_threshold": worst / max(info.threshold, 1e-12)}


# ----------------------------------------------------------------------------- bundle


def stage_bundle(job: Job, state: State, hook: Hook | None) -> BundleResult:
    """Copy the deployable files into parts/<part>/v<N>/ (atomic, hashed manifest) and switch `current`."""
    import dataclasses

    eng, th, q, exp = state.get("engine"), state.get("threshold"), state.get("quantize"), state.get("export")
    files = {"model.onnx": Path(q.onnx), "model.json": Path(th.model_json),
             "model_fp32.onnx": Path(exp.onnx), "model_fp32.json": Path(th.fp32_json), "scores.json": Path(th.scores)}
    if q.cache:
        files["calibration.cache"] = Path(q.cache)
    if eng.file:
        files["model.engine"] = Path(eng.file)
        files[Path(eng.build_record).name] = Path(eng.build_record)
    report = state.get("report")
    for name in report.files:
        files[name] = Path(report.dir) / name
    staging = job.stage_dir("bundle")
    staging.mkdir(parents=True, exist_ok=True)
    files["recipe.yaml"] = atomic_write(staging / "recipe.yaml", f"# recipe used for part {job.part} (from {job.recipe.name})\n"
                                        + yaml.safe_dump(job.recipe.to_dict(), sort_keys=False))
    cfg = job.recipe.config
    capture = dataclasses.asdict(state.get("capture"))
    manifest = {
        "kind": "edge_ad-part-bundle-1",
        "deployed": {"model": "model.onnx", "precision": q.precision, "variant": q.variant,
                     "engine": "model.engine" if eng.file else None, "fp32_model": "model_fp32.onnx"},
        "input_size": list(cfg.data.input_size), "method": state.get("train").method,
        "threshold": th.threshold, "threshold_source": th.source, "metrics": th.metrics,
        "readiness": th.readiness,
        "capture": {k: v for k, v in capture.items() if k not in ("dir", "rejected_dir")},
        "split": {"train": state.get("split").train, "val": state.get("split").val},
        "selection": state.get("train").selection, "deploy_choice": q.timings,
        "engine": {k: v for k, v in dataclasses.asdict(eng).items() if k not in ("file", "build_record")},
        "source": job.source, "defects": str(job.defects) if job.defects else None,
        "recipe_file": job.recipe.name, "recipe": job.recipe.to_dict(),
        "versions": software_versions(), "stage_seconds": state.seconds(),
        "warnings": notes(state),
    }
    path = B.write_bundle(job.parts_root, job.part, files, manifest)  # EdgeAdError on disk problems
    return BundleResult(path=str(path), version=int(path.name[1:]))
