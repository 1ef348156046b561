"""Stages 2-8 of calibrate: split, train, prune, export, quantize, threshold, engine, bundle.

Each stage is a function (job, state, hook) -> its typed result (edge_ad.calibrate.job); it reads earlier
results from `state` and writes only under its own <work>/<part>/<stage>/ folder, so a rerun can redo it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from edge_ad import bundle as B
from edge_ad import data as D
from edge_ad.calibrate.judge import clopper_pearson
from edge_ad.calibrate.job import (CAPTURED, BundleResult, CalibrationError, EngineResult, ExportResult, Hook, Job,
                                   PruneResult, QuantizeResult, SplitResult, State, ThresholdResult, TrainResult, say)
from edge_ad.config import Config, read_yaml, to_dict
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write, atomic_write_json
from edge_ad.methods import get_method
from edge_ad.region import MIN_POSE_OVERLAP
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
    """Seeded shuffle of the sorted usable names -> dataset/train/good (MVTec layout) + dataset/val.txt;
    the input settings are chosen here from the images (recipe auto: section)."""
    from edge_ad.deploy.quantize import MIN_CALIB_IMAGES

    sp = job.recipe.calib.split
    paths = usable_images(job, state)
    order = np.random.default_rng(sp.seed).permutation(len(paths))
    n_val = max(1, int(round(sp.val_fraction * len(paths))), min(sp.min_val, int(sp.max_val_fraction * len(paths))))
    forced, few = "", ""
    floor = min(sp.min_val_few, sp.min_val)
    if n_val < floor:
        msg = (f"{len(paths)} usable images give {n_val} validation images; a threshold and its false-alarm estimate "
               f"need at least {floor} (split.min_val_few)")
        if not job.force:
            need = int(np.ceil(floor / sp.max_val_fraction))
            raise CalibrationError(f"{msg}: capture at least {need} good images (better {int(np.ceil(sp.min_val / sp.val_fraction))}), "
                                   "or rerun with --force to go on anyway (the report will say so)")
        forced = f"{msg}; continued because of --force"
        log.warning("%s", forced)
    elif n_val < sp.min_val:
        lo, hi = clopper_pearson(0, n_val)
        few = (f"few good images: {n_val} held out for validation ({n_val / len(paths):.0%}); even with no false alarm "
               f"among them the 95 % interval of the false-alarm rate reaches {hi:.0%} "
               f"(with {sp.min_val} it would be {clopper_pearson(0, sp.min_val)[1]:.0%}): capture more to narrow it")
        say(f"split: {few}")
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
    data, why = _input_plan(job, train)
    for line in why:
        say(f"split: {line}")
    return SplitResult(root=str(root), train=len(train), val=len(val), val_list=str(root / "val.txt"), data=data,
                       why=why + ([few] if few else []), forced=forced)


def _input_plan(job: Job, train: list[Path]) -> tuple[dict, list[str]]:
    """data.* overrides from the training images (recipe auto: section); ({}, []) when both are off."""
    import cv2

    from edge_ad.calibrate.auto import plan_input

    auto = job.recipe.calib.auto
    if not (auto.input_size or auto.lighting):
        return {}, []
    from edge_ad.calibrate.auto import NOISE_SIDE, noise_sigma

    shapes, greys, noises = [], [], []
    for p in train:
        g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if g is not None:
            shapes.append(g.shape[:2])
            greys.append(float(g.mean()))
            s = NOISE_SIDE / max(g.shape)
            small = cv2.resize(g.astype(np.float32), (round(g.shape[1] * s), round(g.shape[0] * s)),
                               interpolation=cv2.INTER_AREA) if s < 1 else g
            noises.append(noise_sigma(small))
    plan = plan_input(shapes, greys, noises)
    keep = (["data.image_size"] if auto.input_size else []) + (
        ["data.normalize", "data.gain", "data.denoise"] if auto.lighting else [])
    why = [w for w in plan.why if auto.input_size or "aspect" not in w]
    why = [w for w in why if auto.lighting or "aspect" in w]
    return {k: v for k, v in plan.overrides().items() if k in keep}, why


def val_paths(job: Job, state: State) -> list[Path]:
    names = Path(state.get("split").val_list).read_text().split()
    return [job.dir / CAPTURED / n for n in names]


# ----------------------------------------------------------------------------- train, prune


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


def judged_set(job: Job, state: State) -> tuple[list[np.ndarray], list]:
    """The held-out images (at most select.max_images) and their synthetic defects, prepared for the chosen model:
    what the quantize variants and the readiness verdict are judged on."""
    from edge_ad.calibrate.judge import judge_images, synthetic_defects
    from edge_ad.calibrate.select import prepared

    sel = job.recipe.calib.select
    val_rgb = judge_images(prepared(val_paths(job, state), chosen_config(job, state)), sel.max_images)
    return val_rgb, synthetic_defects(val_rgb, sel.seed)


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


def notes(state: State) -> list[str]:
    """What the report and the manifest warn about: the capture's and the training's notes."""
    return list(state.get("capture").warnings) + list(state.get("train").warnings)


def stage_prune(job: Job, state: State, hook: Hook | None) -> PruneResult:
    """Structural pruning + recovery distillation with the prune settings of the model config."""
    model = state.get("train").model
    if not job.recipe.prune:
        return PruneResult(model=model, skipped="prune.enabled is false in the recipe")
    method = state.get("train").method
    if not get_method(method).has_student:
        return PruneResult(model=model, skipped=f"method {method} has no student to prune")
    from edge_ad.training.prune import prune_model

    path = prune_model(model, out_dir=job.stage_dir("prune"), data_root=state.get("split").root)
    return PruneResult(model=str(path))


# ----------------------------------------------------------------------------- export, quantize


def stage_export(job: Job, state: State, hook: Hook | None) -> ExportResult:
    from edge_ad.deploy.export import export_onnx

    path = export_onnx(state.get("prune").model, job.stage_dir("export") / "model_fp32.onnx")
    return ExportResult(onnx=str(path), json=str(path.with_suffix(".json")))


def onnx_scorer(path: str | Path, threads: int = 0):
    """A judge.Scorer running a deployed graph through the station's own detector (preprocessing included)."""
    import cv2

    from edge_ad.runtime.detector import open_detector

    det = open_detector(path, "onnxruntime", threads)

    def score(images: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        maps, scores = [], []
        for i in range(0, len(images), 8):
            for r in det.detect_batch([cv2.cvtColor(im, cv2.COLOR_RGB2BGR) for im in images[i:i + 8]]):
                maps.append(r.anomaly_map)
                scores.append(r.score)
        return maps, scores
    return score, det


def time_sessions(sessions: dict, batch: np.ndarray, runs: int) -> dict[str, float]:
    """Median network-only milliseconds per variant, measured interleaved (round robin) so machine noise hits all alike."""
    import time

    for s in sessions.values():
        s.run(batch)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(batch)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def stage_quantize(job: Job, state: State, hook: Hook | None) -> QuantizeResult:
    """INT8 graphs from training images (never the validation ones), each judged against FP32 on held-out goods and
    synthetic defects and timed on this machine; the fastest within the accuracy bounds is deployed."""
    from edge_ad.calibrate.judge import judge
    from edge_ad.deploy.quantize import calibration_batch, quantize

    q, cfg = job.recipe.calib.quantize, chosen_config(job, state)
    out_dir = job.stage_dir("quantize")
    fp32 = state.get("export").onnx
    calib = calibration_batch(state.get("split").root, cfg.data, q.calib_images)
    cache = out_dir / "calibration.cache"
    if not q.variants:  # the recipe fixes the INT8 mode: no timing, no choice
        path = quantize(fp32, out_dir / "model.onnx", calib, q.mode, q.method, q.exclude, cache if q.mode == "trt" else None)
        return QuantizeResult(onnx=str(path), json=str(path.with_suffix(".json")), cache=str(cache) if q.mode == "trt" else "",
                              calib_images=len(calib), variant=f"int8_{q.mode}", why="quantize.variants is empty")
    graphs = {}
    for v in q.variants:
        if v == "fp32":
            graphs[v] = Path(fp32)
        else:
            mode = v.removeprefix("int8_")
            graphs[v] = quantize(fp32, out_dir / f"model_{v}.onnx", calib, mode, q.method, q.exclude,
                                 cache if mode == "trt" else None)
    val_rgb, defects = judged_set(job, state)
    threads = cfg.train.threads
    judged, sessions = {}, {}
    ref = judge(onnx_scorer(fp32, threads)[0], val_rgb, defects)
    for v, path in graphs.items():
        scorer, det = onnx_scorer(path, threads)
        judged[v] = ref if v == "fp32" else judge(scorer, val_rgb, defects)
        sessions[v] = det.session
    ms = time_sessions(sessions, calib[:1], q.timing_runs)
    table = {}
    for v in graphs:
        d_img = ref.image_auroc - judged[v].image_auroc
        d_pix = ref.pixel_auroc - judged[v].pixel_auroc
        ok = v == "fp32" or (d_img <= q.max_auroc_drop and d_pix <= q.max_auroc_drop)
        table[v] = {"ms": round(ms[v], 3), "image_auroc": round(judged[v].image_auroc, 4),
                    "pixel_auroc": round(judged[v].pixel_auroc, 4), "within_bounds": ok}
    fastest = min((v for v in graphs if table[v]["within_bounds"]), key=lambda v: table[v]["ms"])
    why = (f"{fastest} is the fastest graph on this machine within the accuracy bounds (AUROC drop <= {q.max_auroc_drop:g}): "
           + ", ".join(f"{v} {table[v]['ms']:.2f} ms{'' if table[v]['within_bounds'] else ' (outside bounds)'}"
                       for v in graphs))
    say(f"quantize: {why}")
    chosen = graphs[fastest]
    deployed = out_dir / "model.onnx"
    shutil.copy2(chosen, deployed)
    shutil.copy2(chosen.with_suffix(".json"), deployed.with_suffix(".json"))
    has_cache = "int8_trt" in graphs and cache.is_file()
    return QuantizeResult(onnx=str(deployed), json=str(deployed.with_suffix(".json")), cache=str(cache) if has_cache else "",
                          calib_images=len(calib), precision="fp32" if fastest == "fp32" else "int8", variant=fastest,
                          timings=table, why=why)


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

    sc = chosen_config(job, state).scoring
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
    readiness = assess_readiness(job, state, q.onnx, float(threshold), val,
                                 lambda g: threshold_from_good(g, sc.threshold_quantile, sc.threshold_margin))
    metrics["false_alarm_estimate"] = readiness["false_alarms"]
    out_dir = job.stage_dir("threshold")
    for src, name in ((q.json, "model.json"), (state.get("export").json, "model_fp32.json")):
        info = ModelInfo.load(src)
        info.threshold = float(threshold)
        info.meta.update({"threshold_source": source, "part": job.part})
        atomic_write_json(out_dir / name, info.to_dict())
    scores_doc = {"threshold": threshold, "val_good": [{"image": p.name, "score": s} for p, s in zip(vpaths, val)],
                  "defects": [{"image": str(p), "score": s} for p, s in zip(defect_paths, bad)],
                  "synthetic": readiness.pop("synthetic_scores")}
    atomic_write_json(out_dir / "scores.json", scores_doc)
    fa = readiness["false_alarms"]
    say(f"threshold {threshold:.5g} ({source}); estimated false alarms {fa['rate']:.1%} "
        f"({fa['confidence']:.0%} interval {fa['ci_low']:.1%}..{fa['ci_high']:.1%}, {fa['goods']} held-out goods)")
    say(f"readiness: {'READY' if readiness['ready'] else 'NOT READY'}: {readiness['reason']}")
    return ThresholdResult(threshold=float(threshold), source=source, metrics=metrics,
                           model_json=str(out_dir / "model.json"), fp32_json=str(out_dir / "model_fp32.json"),
                           scores=str(out_dir / "scores.json"), readiness=readiness)


def assess_readiness(job: Job, state: State, onnx: str, threshold: float, val: list[float], rule) -> dict:
    """The verdict a station checks before inspecting: held-out goods pass and synthetic defects are caught."""
    from edge_ad.calibrate.judge import detection_rates, false_alarm_estimate, judge
    from edge_ad.calibrate.select import per_location

    r = job.recipe.calib.readiness
    val_rgb, defects = judged_set(job, state)
    j = judge(onnx_scorer(onnx, chosen_config(job, state).train.threads)[0], val_rgb, defects, localisation=True)
    fa = false_alarm_estimate(val, rule)
    detect = detection_rates(j, threshold)
    problems = []
    if fa["rate"] > r.max_false_alarm_rate:
        problems.append(f"estimated false alarms {fa['rate']:.1%} > {r.max_false_alarm_rate:.0%} on held-out goods")
    if j.image_auroc < r.min_image_auroc:
        problems.append(f"held-out goods and synthetic defects are not separated (image AUROC {j.image_auroc:.3f} < "
                        f"{r.min_image_auroc:g})")
    if detect.get("large", 1.0) < r.min_detection_large:
        problems.append(f"only {detect['large']:.0%} of large synthetic defects reach the threshold "
                        f"(< {r.min_detection_large:.0%})")
    if j.peak_off_part is not None and j.peak_off_part > r.max_peak_off_part:
        problems.append(f"the anomaly maps of {j.peak_off_part:.0%} of held-out good images peak on the ground, not on "
                        f"the part (> {r.max_peak_off_part:.0%}): the model watches the background (sensor noise or a "
                        "textured ground); light the part better, use a plain ground, or crop to the part (station roi)")
    if j.pixel_auroc < r.min_pixel_auroc or (j.aupro is not None and j.aupro < r.min_aupro):
        problems.append(f"synthetic defects on the part are poorly localised (pixel AUROC {j.pixel_auroc:.3f}, AUPRO "
                        f"{j.aupro:.3f}; floors {r.min_pixel_auroc:g} / {r.min_aupro:g}): the maps would not show where a "
                        "defect is")
    sel = state.get("train").selection
    if sel.get("pose_overlap") is not None and sel["pose_overlap"] < MIN_POSE_OVERLAP and per_location(chosen_config(job, state)):
        problems.append(f"a per-location model for a part that moves between images (median overlap "
                        f"{sel['pose_overlap']:.2f} < {MIN_POSE_OVERLAP}): it cannot tell a defect from another pose; "
                        "use a fixture or a recipe without the Gaussian map")
    forced = state.get("split").forced
    if forced:
        problems.append(f"too few validation images for a meaningful threshold ({state.get('split').val}; --force)")
    interval = f"95 % interval {fa['ci_low']:.1%}..{fa['ci_high']:.1%} from {fa['goods']} held-out goods"
    reason = "; ".join(problems) if problems else (
        f"estimated false alarms {fa['rate']:.1%} ({interval}), synthetic defects detected: "
        + ", ".join(f"{s} {v:.0%}" for s, v in detect.items()) + f" (image AUROC {j.image_auroc:.3f}, "
        f"pixel AUROC {j.pixel_auroc:.3f}, AUPRO {j.aupro:.3f})")
    if problems:
        reason += f" (estimated false alarms {fa['rate']:.1%}, {interval})"
    if j.mean_good_map is not None:
        save_mean_map(job, j.mean_good_map)
    syn = {"good": j.good_scores, "defect": j.defect_scores, "sizes": j.defect_sizes}
    return {"ready": not problems, "reason": reason, "false_alarms": fa, "detection": detect,
            "synthetic": j.summary(), "rules": dataclasses.asdict(r), "synthetic_scores": syn}


MEAN_MAP_FILE = "mean_good_map.npy"


def save_mean_map(job: Job, m: np.ndarray) -> None:
    """The mean held-out good-image map, for the report (where the model looks when nothing is wrong)."""
    out = job.stage_dir("threshold") / MEAN_MAP_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, m.astype(np.float32))


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
    precision = "int8" if q.precision == "int8" else "fp16"  # a float graph runs in fp16 on the GPU
    built = build_engine(q.onnx, out_dir, precision=precision, workspace_mb=eng.workspace_mb)
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


def staging_fingerprint(job: Job, state: State) -> str:
    """What this calibration staged (options and every finished stage's record): the same on a rerun after a kill,
    different for the next calibration, so a bundle written just before a kill is recognised, not written twice."""
    done = {s: state.doc["stages"][s] for s in state.doc["stages"] if s != "bundle"}
    return hashlib.sha256(json.dumps([job.fingerprint(), done], sort_keys=True, default=str).encode()).hexdigest()


def stage_bundle(job: Job, state: State, hook: Hook | None) -> BundleResult:
    """Copy the deployable files into parts/<part>/v<N>/ (atomic, hashed manifest) and switch `current`;
    a bundle this calibration already wrote before it was killed is switched to, not written again."""
    fingerprint = staging_fingerprint(job, state)
    written = B.find_staged(job.parts_root, job.part, fingerprint)
    if written is not None:
        say(f"bundle v{written} was written before the interruption; not writing it again")
        if B.current_version(job.parts_root, job.part) != written:
            B.switch_current(job.parts_root, job.part, written)
        return BundleResult(path=str(job.parts_root / job.part / f"v{written}"), version=written)
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
    cfg = chosen_config(job, state)
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
        "warnings": notes(state), "staging": fingerprint,
    }
    path = B.write_bundle(job.parts_root, job.part, files, manifest)  # EdgeAdError on disk problems
    return BundleResult(path=str(path), version=int(path.name[1:]))
