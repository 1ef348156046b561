"""`edge_ad calibrate`: good images of a new part -> a versioned, deployable part bundle, in one command.

Stages: capture -> split -> train -> prune -> export -> quantize -> threshold -> engine -> report -> bundle.
Each finished stage is recorded in <work>/<part>/state.json with its outputs, so an interrupted run
(Ctrl-C, kill, a lost camera) continues from the last finished stage when the same command is rerun.
Captured images (<work>/<part>/captured/) are never deleted, not even by --restart.

Work folder <work>/<part>/: captured/ (PNG, as they arrive), rejected/ (a few examples per reason),
dataset/ (train/good links + val.txt), model/ (training, with checkpoint.pt), prune/, export/, quantize/,
threshold/, engine/, report/, bundle/ (staging), state.json.

Bundle layout (parts/<part>/v<N>/): model.onnx + model.json = the deployed INT8 model with the calibrated
threshold (what open_detector picks), model_fp32.onnx + model_fp32.json, calibration.cache (TensorRT),
model.engine when TensorRT was available, report.md, histogram.png, heatmap_*.png, scores.json,
recipe.yaml, manifest.json.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from edge_ad import bundle as B
from edge_ad import data as D
from edge_ad.errors import EdgeAdError
from edge_ad.methods import get_method
from edge_ad.versions import software_versions
from edge_ad.calibrate.quality import QualityFilter
from edge_ad.calibrate.recipe import Recipe
from edge_ad.station.config import CameraConfig

log = logging.getLogger(__name__)

STAGES = ("capture", "split", "train", "prune", "export", "quantize", "threshold", "engine", "report", "bundle")
STATE_FILE = "state.json"
STATE_FORMAT = "edge_ad-calibration-1"
CAPTURED = "captured"  # never deleted by any stage, failure or --restart
REJECTED = "rejected"
KEEP_ON_RESTART = (CAPTURED, REJECTED)
STAGE_DIRS = {"capture": CAPTURED, "split": "dataset", "train": "model"}  # others: <work>/<part>/<stage>/
RESUMABLE = ("capture", "train")  # their folders survive a rerun of the stage (captured images, training checkpoint)
LOCK_FILE = ".lock"
MAX_FRAMES_PER_IMAGE = 20  # capture.max_frames = 0: give up on a live camera after 20 x n frames
# A per-location Gaussian fitted on fewer training images than this is warned about: on magnetic_tile it gave
# 88.1 / 80.5 image / pixel AUROC from 160 images, 92.3 / 82.0 from 480, 93.1 / 81.9 from 573 (textured.yaml notes).
GAUSSIAN_FEW_IMAGES = 400

Hook = Callable[[str, dict], None]  # (event, info): "start"/"done" per stage, "kept" per captured frame


class CalibrationError(EdgeAdError):
    """Calibration cannot go on; finished stages and captured images are kept for a rerun."""


@dataclass
class Job:
    """What one `edge_ad calibrate` run was asked to do."""

    part: str
    recipe: Recipe
    source: str | None = None
    defects: Path | None = None
    parts_root: Path = Path("parts")
    work: Path = Path("calib_work")
    camera: CameraConfig = field(default_factory=CameraConfig)
    roi: list[int] | None = None  # [x, y, w, h] crop of every frame, as the station does

    @property
    def dir(self) -> Path:
        return self.work / self.part

    def fingerprint(self) -> str:
        """Everything that changes the outputs of the stages after capture."""
        return json.dumps({"recipe": self.recipe.fingerprint(), "defects": str(self.defects or ""), "roi": self.roi})


@dataclass
class CalibrationResult:
    bundle: Path
    version: int
    threshold: float
    stage_seconds: dict[str, float]
    manifest: dict


class State:
    """state.json: which stages finished, their outputs and times (written atomically after each stage)."""

    def __init__(self, path: Path, fingerprint: str):
        self.path = path
        self.doc = {"format": STATE_FORMAT, "fingerprint": fingerprint, "complete": False, "stages": {}}
        self.loaded = False
        if path.is_file():
            try:
                self.doc = json.loads(path.read_text())
                self.loaded = isinstance(self.doc.get("stages"), dict)
            except ValueError:
                log.warning("%s is unreadable; starting the stages over (captured images are kept)", path)

    def done(self, stage: str) -> bool:
        return stage in self.doc["stages"]

    def out(self, stage: str) -> dict:
        return self.doc["stages"][stage]["outputs"]

    def seconds(self) -> dict[str, float]:
        return {s: self.doc["stages"][s]["seconds"] for s in STAGES if self.done(s)}

    def record(self, stage: str, outputs: dict, seconds: float) -> None:
        self.doc["stages"][stage] = {"outputs": outputs, "seconds": round(seconds, 2),
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.save()

    def reset(self, fingerprint: str) -> None:
        self.doc = {"format": STATE_FORMAT, "fingerprint": fingerprint, "complete": False, "stages": {}}
        self.save()

    def save(self) -> None:
        _atomic_write(self.path, json.dumps(self.doc, indent=1, default=str).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- driver


def calibrate(job: Job, restart: bool = False, hook: Hook | None = None) -> CalibrationResult:
    """Run (or continue) every stage for one part and return the bundle that `current` now points at."""
    B.check_part_name(job.part)
    _preflight(job)
    try:
        job.dir.mkdir(parents=True, exist_ok=True)
        lock = open(job.dir / LOCK_FILE, "w")
    except OSError as e:
        raise CalibrationError(f"cannot use the work folder {job.dir}: {e.strerror or e}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CalibrationError(f"another calibrate of {job.part} is running in {job.dir}") from None
        return _run_stages(job, restart, hook)


def _run_stages(job: Job, restart: bool, hook: Hook | None) -> CalibrationResult:
    fp = job.fingerprint()
    state = State(job.dir / STATE_FILE, fp)
    why = None
    if restart:
        why = f"--restart: starting {job.part} over (captured images in {job.dir / CAPTURED} are kept)"
    elif not state.loaded:
        why = ""  # first run in this work folder (or an unreadable state file): nothing to continue
    elif state.doc.get("complete"):
        why = (f"the last calibration of {job.part} finished (v{state.doc.get('version')}); starting a new one "
               "from the captured images")
    elif state.doc.get("fingerprint") != fp or state.doc.get("format") != STATE_FORMAT:
        why = "the recipe or options changed since the unfinished run: redoing its stages (captured images are kept)"
    if why is not None:
        if why:
            _say(why)
        _clear_work(job)
        state.reset(fp)
    done = [s for s in STAGES if state.done(s)]
    if done:
        _say(f"continuing {job.part}: finished earlier: {', '.join(done)}")
    for i, stage in enumerate(STAGES, 1):
        if state.done(stage):
            continue
        _say(f"[{i}/{len(STAGES)}] {stage}")
        if stage not in RESUMABLE:
            shutil.rmtree(job.dir / STAGE_DIRS.get(stage, stage), ignore_errors=True)
        t0 = time.perf_counter()
        try:
            if hook:
                hook("start", {"stage": stage})
            outputs = _RUNNERS[stage](job, state, hook)
        except KeyboardInterrupt:
            _say(f"interrupted during {stage}: rerun the same command to continue from there")
            raise
        except EdgeAdError as e:
            raise CalibrationError(f"{stage}: {e}") from None
        except OSError as e:  # a full disk, a folder that became read-only: one line, finished stages kept
            where = f" ({e.filename})" if e.filename else ""
            raise CalibrationError(f"{stage}: {e.strerror or e}{where}; fix it and rerun to continue") from None
        try:
            state.record(stage, outputs, time.perf_counter() - t0)
        except OSError as e:
            raise CalibrationError(f"cannot save {state.path}: {e.strerror or e}; rerun to continue") from None
        if hook:
            hook("done", {"stage": stage, "outputs": outputs})
    out = state.out("bundle")
    state.doc.update({"complete": True, "version": out["version"]})
    state.save()
    bundle = Path(out["path"])
    manifest = B.read_manifest(bundle)
    _say(f"part {job.part}: bundle v{out['version']} at {bundle} is now current (threshold {manifest['threshold']:.5g})")
    return CalibrationResult(bundle, out["version"], manifest["threshold"], state.seconds(), manifest)


def _preflight(job: Job) -> None:
    """Fail before hours of work when the bundle can never be written (a file where a folder must be)."""
    for p, flag in ((job.parts_root, "--parts-root"), (job.parts_root / job.part, "--parts-root"),
                    (job.work, "--work"), (job.dir, "--work")):
        if p.exists() and not p.is_dir():
            raise CalibrationError(f"{p} exists and is not a folder: move it away or choose another {flag}")
    probe = job.parts_root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise CalibrationError(f"cannot write part bundles under {job.parts_root}: {probe} is not writable")


def _clear_work(job: Job) -> None:
    """Remove every stage's outputs except the captured images (and the rejected examples)."""
    if not job.dir.is_dir():
        return
    for p in job.dir.iterdir():
        if p.name in KEEP_ON_RESTART or p.name in (STATE_FILE, LOCK_FILE):
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


# ----------------------------------------------------------------------------- 1. capture


def _save_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise CalibrationError(f"cannot encode {path.name} as PNG")
    try:
        _atomic_write(path, buf.tobytes())
    except OSError as e:
        raise CalibrationError(f"cannot save {path}: {e.strerror or e}") from None


def _crop(image: np.ndarray, roi: list[int] | None) -> np.ndarray:
    if not roi:
        return image
    return D.crop_roi(image, roi)


def _folder_frames(job: Job, taken: set[str], unreadable: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Images of a folder in a seeded shuffled order (so n of many cover the whole set), minus those kept earlier."""
    paths = D.list_images(Path(job.source).expanduser())
    if not paths:
        raise CalibrationError(f"no images ({', '.join(D.IMAGE_SUFFIXES)}) in {job.source}")
    for i in np.random.default_rng(job.recipe.calib.split.seed).permutation(len(paths)):
        name = f"{paths[i].stem}.png"
        if name in taken:
            continue
        try:
            yield name, D.load_image(paths[i])
        except D.ImageError as e:
            log.warning("capture: skipping %s", e)
            unreadable.append(paths[i].name)


def _camera_frames(job: Job, taken: set[str], filt: QualityFilter) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of a video file or a live camera (one every capture.interval_s); a lost camera is a CalibrationError."""
    from edge_ad.station.camera import Camera

    cap = job.recipe.calib.capture
    camera = Camera(job.source, job.camera, mode="every")
    max_frames = cap.max_frames or MAX_FRAMES_PER_IMAGE * cap.n
    frames, last = 0, -float("inf")
    try:
        camera.start()
        while True:
            try:
                frame = camera.read(timeout=cap.frame_timeout_s if camera.live else 0.5)
            except EdgeAdError as e:
                raise CalibrationError(_lost(job, len(taken), str(e))) from None
            if frame is None:
                if camera.live:
                    raise CalibrationError(_lost(job, len(taken), f"no frame for {cap.frame_timeout_s:g} s"))
                if camera.finished:
                    return
                continue
            if not camera.live:
                yield f"frame_{frame.index:06d}.png", frame.image  # frame numbers: a rerun skips kept ones
                continue
            if time.monotonic() - last < cap.interval_s:
                continue
            last = time.monotonic()
            frames += 1
            if frames > max_frames:
                raise CalibrationError(f"{max_frames} frames from {job.source} gave only {len(taken)} usable images "
                                       f"({filt.summary()}): check focus and lighting, move the part between shots, "
                                       "or relax the recipe's quality: thresholds")
            seq = len(taken)
            while f"cam_{seq:06d}.png" in taken:
                seq += 1
            yield f"cam_{seq:06d}.png", frame.image
    finally:
        camera.stop()


def stage_capture(job: Job, state: State, hook: Hook | None) -> dict:
    """Keep up to capture.n good frames (PNG, as they arrive), rejecting blurred, badly exposed and duplicate ones."""
    cap = job.recipe.calib.capture
    cap_dir, rej_dir = job.dir / CAPTURED, job.dir / REJECTED
    cap_dir.mkdir(parents=True, exist_ok=True)
    filt = QualityFilter(job.recipe.calib.quality)
    existing = D.list_images(cap_dir)
    for p in existing:
        filt.remember(D.load_image(p))
    names = {p.name for p in existing}
    new, frames = 0, 0
    saved_rejects: dict[str, int] = {}
    unreadable: list[str] = []
    if len(existing) < cap.n:
        if not job.source:
            raise CalibrationError(f"{len(existing)} of {cap.n} images captured so far: give --source (a camera URI "
                                   "or an image folder) to capture the rest")
        from tqdm import tqdm

        is_dir = Path(job.source).expanduser().is_dir()
        source = _folder_frames(job, names, unreadable) if is_dir else _camera_frames(job, names, filt)
        try:
            with tqdm(total=cap.n, initial=len(existing), desc="capture", unit="img") as bar:
                for name, image in source:
                    frames += 1
                    if name in names:  # a resumed video: this frame was kept by an earlier run
                        continue
                    image = _crop(image, job.roi)
                    reason = filt.check(image)
                    if reason is not None:
                        if saved_rejects.get(reason, 0) < cap.keep_rejected:
                            saved_rejects[reason] = saved_rejects.get(reason, 0) + 1
                            _save_png(rej_dir / f"{reason}_{name}", image)
                        bar.set_postfix(rejected=filt.rejected)
                        continue
                    _save_png(cap_dir / name, image)
                    names.add(name)
                    new += 1
                    bar.update(1)
                    if hook:
                        hook("kept", {"name": name, "count": len(names)})
                    if len(names) >= cap.n:
                        break
        finally:
            source.close()  # stops the camera now, also on Ctrl-C or an error
    counts = dict(filt.counts)
    _say(f"capture: {len(names)} images in {cap_dir} ({new} new); this run {filt.summary()}")
    warnings = []
    if len(names) < cap.min_images:
        hint = ""
        if counts.get("near_duplicate", 0) >= max(counts.values(), default=0) > 0:
            hint = ": the frames are (nearly) identical; present a different part, or move it, between shots"
        elif filt.rejected:
            hint = f": see the examples in {rej_dir} and the quality: section of the recipe"
        raise CalibrationError(f"too few usable images for training: {len(names)} (need at least {cap.min_images}; "
                               f"rejected this run: {', '.join(f'{k} {v}' for k, v in counts.items() if v) or 'none'})"
                               f"{hint}. Captured images are kept in {cap_dir}; add more and rerun")
    if len(names) < cap.n:
        warnings.append(f"the source gave {len(names)} usable images, fewer than capture.n = {cap.n}")
    spread = filt.aspect_spread()
    if spread > job.recipe.calib.quality.aspect_tolerance:
        warnings.append(f"image aspect ratios differ by {100 * spread:.0f}% (> {100 * job.recipe.calib.quality.aspect_tolerance:.0f}%): "
                        f"every image is resized to {job.recipe.config.data.image_size} "
                        f"({job.recipe.config.data.resize}); consider data.resize: letterbox or a fixed roi")
    for w in warnings:
        log.warning("%s", w)
    return {"images": len(names), "new": new, "frames": frames, "rejected": counts, "unreadable": unreadable,
            "aspect_spread": round(spread, 4), "warnings": warnings, "dir": str(cap_dir)}


def _lost(job: Job, kept: int, why: str) -> str:
    return (f"camera {job.source} lost ({why}); kept the {kept} images captured so far in {job.dir / CAPTURED}: "
            "reconnect it and rerun the same command to continue")


# ----------------------------------------------------------------------------- 2. split


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_split(job: Job, state: State, hook: Hook | None) -> dict:
    """Seeded shuffle of the sorted captured names -> dataset/train/good (MVTec layout) + dataset/val.txt."""
    from edge_ad.deploy.quantize import MIN_CALIB_IMAGES

    sp = job.recipe.calib.split
    paths = D.list_images(job.dir / CAPTURED)
    order = np.random.default_rng(sp.seed).permutation(len(paths))
    n_val = max(sp.min_val, int(round(sp.val_fraction * len(paths))))
    n_train = len(paths) - n_val
    need = max(2, MIN_CALIB_IMAGES)
    if n_train < need:
        raise CalibrationError(f"{len(paths)} images leave {n_train} for training after {n_val} for validation; "
                               f"need at least {need + n_val}: capture more")
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    root = job.dir / STAGE_DIRS["split"]
    good = root / "train" / "good"
    good.mkdir(parents=True)
    for p in train:
        _link_or_copy(p, good / p.name)
    (root / "val.txt").write_text("".join(f"{p.name}\n" for p in val))
    return {"root": str(root), "train": len(train), "val": len(val), "val_list": str(root / "val.txt")}


def _val_paths(job: Job, state: State) -> list[Path]:
    names = Path(state.out("split")["val_list"]).read_text().split()
    return [job.dir / CAPTURED / n for n in names]


# ----------------------------------------------------------------------------- 3-4. train, prune


def _model_config(job: Job, state: State):
    cfg = copy.deepcopy(job.recipe.config)
    cfg.data.root = state.out("split")["root"]
    cfg.train.out_dir = str(job.dir / STAGE_DIRS["train"])
    return cfg


def stage_train(job: Job, state: State, hook: Hook | None) -> dict:
    """Distil the student (recipe method and schedule); an interrupted training resumes from its checkpoint."""
    from edge_ad.training.train import train

    cfg = _model_config(job, state)
    path = train(cfg, resume=True)
    n, warnings = state.out("split")["train"], []
    if cfg.model.gaussian_stride and n < GAUSSIAN_FEW_IMAGES:
        warnings.append(f"the Gaussian map was fitted on {n} training images; it keeps improving up to about "
                        f"{GAUSSIAN_FEW_IMAGES} or more: capture more good images (capture.n) if detections are weak")
        log.warning("%s", warnings[-1])
    return {"model": str(path), "method": cfg.model.method, "epochs": cfg.distill_epochs, "warnings": warnings}


def _warnings(state: State) -> list[str]:
    """What the report and the manifest warn about: the capture's and the training's notes."""
    return list(state.out("capture").get("warnings", [])) + list(state.out("train").get("warnings", []))


def stage_prune(job: Job, state: State, hook: Hook | None) -> dict:
    """Structural pruning + recovery distillation with the prune settings of the model config (edge_ad.training.prune)."""
    if not job.recipe.prune:
        return {"model": state.out("train")["model"], "skipped": "prune.enabled is false in the recipe"}
    try:
        from edge_ad.training.prune import prune_model
    except ImportError:
        raise CalibrationError("pruning not available in this edge_ad (no edge_ad.training.prune): set prune.enabled: false "
                               "in the recipe") from None
    path = prune_model(state.out("train")["model"], out_dir=job.dir / "prune", data_root=state.out("split")["root"])
    return {"model": str(path)}


# ----------------------------------------------------------------------------- 5. export, quantize


def stage_export(job: Job, state: State, hook: Hook | None) -> dict:
    from edge_ad.deploy.export import export_onnx

    path = export_onnx(state.out("prune")["model"], job.dir / "export" / "model_fp32.onnx")
    return {"onnx": str(path), "json": str(path.with_suffix(".json"))}


def stage_quantize(job: Job, state: State, hook: Hook | None) -> dict:
    """INT8 QDQ from calibration images chosen evenly over the training split (never the validation images)."""
    from edge_ad.deploy.quantize import calibration_batch, quantize

    q = job.recipe.calib.quantize
    calib = calibration_batch(state.out("split")["root"], job.recipe.config.data, q.calib_images)
    out_dir = job.dir / "quantize"
    cache = out_dir / "calibration.cache"
    path = quantize(state.out("export")["onnx"], out_dir / "model.onnx", calib, q.mode, q.method, q.exclude, cache)
    return {"onnx": str(path), "json": str(path.with_suffix(".json")), "cache": str(cache), "calib_images": len(calib)}


# ----------------------------------------------------------------------------- 6. threshold


def _score(det, paths: list[Path], label: int, what: str) -> tuple[list[Path], list[float]]:
    from edge_ad.evaluate import run_split

    samples = [D.Sample(p, label, what, None) for p in paths]
    kept, _, scores, _, _ = run_split(det.session.run, det.info.data, det.info.scoring, samples, desc=what)
    return [s.path for s in kept], [float(s) for s in scores]


def stage_threshold(job: Job, state: State, hook: Hook | None) -> dict:
    """Threshold from the deployed INT8 model's scores: val-good quantile + margin, or F1-optimal with defects."""
    from edge_ad import metrics as M
    from edge_ad.runtime.detector import ModelInfo, open_detector
    from edge_ad.scoring import threshold_from_good

    sc = job.recipe.config.scoring
    det = open_detector(state.out("quantize")["onnx"], "onnxruntime", job.recipe.config.train.threads)
    val_paths, val = _score(det, _val_paths(job, state), 0, "good")
    if not val:
        raise CalibrationError("no readable validation image")
    defect_paths: list[Path] = []
    bad: list[float] = []
    if job.defects is not None:
        defect_paths, bad = _score(det, D.list_images(job.defects), 1, "defect")
        if not bad:
            raise CalibrationError(f"no readable defect images in {job.defects}")
    metrics = {"val_good": len(val), "val_score_mean": float(np.mean(val)), "val_score_max": float(np.max(val)),
               f"val_score_q{sc.threshold_quantile:g}": float(np.quantile(val, sc.threshold_quantile))}
    if bad:
        labels = np.array([0] * len(val) + [1] * len(bad))
        scores = np.array(val + bad)
        threshold, _ = M.f1_optimal_threshold(labels, scores)
        source = f"F1-optimal on {len(val)} validation good + {len(bad)} defect images (deployed INT8 model)"
        metrics.update({"defects": len(bad), "image_auroc": M.image_auroc(labels, scores),
                        **{k: v for k, v in M.precision_recall_f1(labels, scores, threshold).items() if k != "threshold"}})
    else:
        threshold = threshold_from_good(np.array(val), sc.threshold_quantile, sc.threshold_margin)
        source = (f"quantile {sc.threshold_quantile:g} of {len(val)} validation good scores x (1 + {sc.threshold_margin:g}) "
                  "(deployed INT8 model)")
    metrics["val_false_alarm_rate"] = float(np.mean(np.array(val) >= threshold))
    out_dir = job.dir / "threshold"
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, name in ((state.out("quantize")["json"], "model.json"), (state.out("export")["json"], "model_fp32.json")):
        info = ModelInfo.load(src)
        info.threshold = float(threshold)
        info.meta.update({"threshold_source": source, "part": job.part})
        _atomic_write(out_dir / name, json.dumps(info.to_dict(), indent=1).encode())
    scores_doc = {"threshold": threshold, "val_good": [{"image": p.name, "score": s} for p, s in zip(val_paths, val)],
                  "defects": [{"image": str(p), "score": s} for p, s in zip(defect_paths, bad)]}
    _atomic_write(out_dir / "scores.json", json.dumps(scores_doc, indent=1).encode())
    _say(f"threshold {threshold:.5g} ({source}); validation false alarms {metrics['val_false_alarm_rate']:.1%}")
    return {"threshold": float(threshold), "source": source, "metrics": metrics, "model_json": str(out_dir / "model.json"),
            "fp32_json": str(out_dir / "model_fp32.json"), "scores": str(out_dir / "scores.json")}


# ----------------------------------------------------------------------------- 7. engine


def stage_engine(job: Job, state: State, hook: Hook | None) -> dict:
    """TensorRT engine from the deployed INT8 model on this device; skipped (with the reason) without TensorRT."""
    from edge_ad.runtime import tensorrt as T

    eng = job.recipe.calib.engine
    if eng.build == "never":
        return {"skipped": "engine.build is never in the recipe"}
    try:
        T.import_tensorrt()
    except EdgeAdError as e:
        if eng.build == "always":
            raise
        log.info("engine: skipped (%s)", e)
        return {"skipped": str(e)}
    out_dir = job.dir / "engine"
    built = T.build_engine(state.out("quantize")["onnx"], out_dir, precision="int8", workspace_mb=eng.workspace_mb)
    engine = out_dir / "model.engine"
    shutil.copy2(built, engine)
    meta = T.read_engine_meta(built) or {}
    # The bundle's model.json is both the ModelInfo and the engine's build record (TensorRTSession checks
    # trt_version and gpu_name there), because open_detector reads model.json beside model.engine.
    doc = json.loads(Path(state.out("threshold")["model_json"]).read_text())
    doc.update({"trt_version": meta.get("trt_version"), "gpu_name": meta.get("gpu_name"), "engine": meta})
    _atomic_write(out_dir / "model.json", json.dumps(doc, indent=1).encode())
    parity = _engine_parity(job, state, engine)
    return {"file": str(engine), "model_json": str(out_dir / "model.json"), "trt_version": meta.get("trt_version"),
            "gpu_name": meta.get("gpu_name"), **parity}


def _engine_parity(job: Job, state: State, engine: Path) -> dict:
    """Largest |engine score - onnxruntime score| over the validation images, relative to the threshold."""
    from edge_ad.runtime.detector import AnomalyDetector, ModelInfo
    from edge_ad.runtime.tensorrt import TensorRTSession

    info = ModelInfo.load(state.out("threshold")["model_json"])
    ort_scores = {d["image"]: d["score"] for d in json.loads(Path(state.out("threshold")["scores"]).read_text())["val_good"]}
    with TensorRTSession(engine) as session:
        det = AnomalyDetector(session, info)
        diffs = [abs(det.detect(D.load_image(p)).score - ort_scores[p.name]) for p in _val_paths(job, state)
                 if p.name in ort_scores]
    return {"max_score_diff_vs_ort": float(max(diffs, default=0.0)),
            "max_score_diff_rel_threshold": float(max(diffs, default=0.0) / max(info.threshold, 1e-12))}


# ----------------------------------------------------------------------------- 8. report, bundle


def _heatmaps(job: Job, state: State, out_dir: Path) -> list[tuple[str, str]]:
    """Overlays of the highest-scoring validation goods and of defects spread over their score range."""
    from edge_ad.runtime.detector import AnomalyDetector, ModelInfo
    from edge_ad.runtime.onnx import OrtSession
    from edge_ad.visualize import heatmap_overlay

    k = job.recipe.calib.report.heatmaps
    if not k:
        return []
    info = ModelInfo.load(state.out("threshold")["model_json"])
    det = AnomalyDetector(OrtSession(state.out("quantize")["onnx"], job.recipe.config.train.threads), info)
    scores = json.loads(Path(state.out("threshold")["scores"]).read_text())
    good = sorted(scores["val_good"], key=lambda d: -d["score"])[:k]
    bad = sorted(scores["defects"], key=lambda d: d["score"])
    if len(bad) > k:
        bad = [bad[int(i)] for i in np.linspace(0, len(bad) - 1, k).round()]
    picks = [(job.dir / CAPTURED / d["image"], "validation good") for d in good] + [(Path(d["image"]), "defect") for d in bad]
    out = []
    for i, (path, kind) in enumerate(picks):
        img = D.load_image(path)
        r = det.detect(img)
        shown = cv2.cvtColor(D.prepare(img, info.data), cv2.COLOR_RGB2BGR)
        panel = heatmap_overlay(shown, r.anomaly_map, 0.0, 2 * info.threshold, info.threshold)
        name = f"heatmap_{i:02d}_{kind.split()[-1]}.png"
        cv2.imwrite(str(out_dir / name), np.hstack([shown, panel]))
        verdict = "ALARM" if r.is_anomaly else "ok"
        out.append((name, f"{kind} {path.name}: score {r.score:.4g} ({verdict})"))
    return out


def stage_report(job: Job, state: State, hook: Hook | None) -> dict:
    from edge_ad.calibrate.report import histogram_png, write_report

    out_dir = job.dir / "report"
    out_dir.mkdir(parents=True)
    th = state.out("threshold")
    scores = json.loads(Path(th["scores"]).read_text())
    good = [d["score"] for d in scores["val_good"]]
    bad = [d["score"] for d in scores["defects"]]
    histogram_png(good, bad, th["threshold"], out_dir / "histogram.png", job.recipe.calib.report.histogram_bins)
    heatmaps = _heatmaps(job, state, out_dir)
    cfg = job.recipe.config
    m = th["metrics"]
    stages = "+".join(map(str, cfg.model.gaussian_stages))
    gauss = (f", Gaussian map at stride {cfg.model.gaussian_stride}" + (f" (stages {stages})" if stages else "")
             if cfg.model.gaussian_stride else "")
    method = (f"gauss ({cfg.model.teacher}{gauss}, no student)" if not get_method(cfg.model.method).has_student else
              f"{cfg.model.method} ({cfg.model.teacher}, width {cfg.model.width}, {cfg.distill_epochs} epochs{gauss})")
    summary = [("part", job.part), ("created", time.strftime("%Y-%m-%d %H:%M:%S")), ("recipe", job.recipe.name),
               ("method", method),
               ("input size", f"{cfg.data.input_size[0]} x {cfg.data.input_size[1]} ({cfg.data.resize})"),
               ("deployed model", f"INT8 ({job.recipe.calib.quantize.mode}, {job.recipe.calib.quantize.method})"),
               ("threshold", f"{th['threshold']:.5g}"), ("threshold source", th["source"]),
               ("images", f"{state.out('split')['train']} train, {state.out('split')['val']} validation"),
               ("validation false alarms", f"{m['val_false_alarm_rate']:.1%}")]
    if "image_auroc" in m:
        summary += [("defect images", str(m["defects"])), ("image AUROC (val good vs defects)", f"{m['image_auroc']:.3f}"),
                    ("precision / recall / F1 at threshold", f"{m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f}")]
    write_report(out_dir / "report.md", summary, state.out("capture"), state.seconds(), "histogram.png", heatmaps,
                 _warnings(state), state.out("engine"), software_versions())
    return {"dir": str(out_dir), "files": sorted(p.name for p in out_dir.iterdir())}


def stage_bundle(job: Job, state: State, hook: Hook | None) -> dict:
    """Copy the deployable files into parts/<part>/v<N>/ (atomic, hashed manifest) and switch `current`."""
    eng, th, q = state.out("engine"), state.out("threshold"), state.out("quantize")
    files = {"model.onnx": Path(q["onnx"]), "model.json": Path(eng.get("model_json") or th["model_json"]),
             "model_fp32.onnx": Path(state.out("export")["onnx"]), "model_fp32.json": Path(th["fp32_json"]),
             "calibration.cache": Path(q["cache"]), "scores.json": Path(th["scores"])}
    if eng.get("file"):
        files["model.engine"] = Path(eng["file"])
    report_dir = Path(state.out("report")["dir"])
    for name in state.out("report")["files"]:
        files[name] = report_dir / name
    staging = job.dir / "bundle"
    staging.mkdir(parents=True, exist_ok=True)
    files["recipe.yaml"] = staging / "recipe.yaml"
    files["recipe.yaml"].write_text(f"# recipe used for part {job.part} (from {job.recipe.name})\n"
                                    + yaml.safe_dump(job.recipe.to_dict(), sort_keys=False))
    cfg = job.recipe.config
    manifest = {
        "kind": "edge_ad-part-bundle-1",
        "deployed": {"model": "model.onnx", "precision": "int8", "engine": "model.engine" if eng.get("file") else None,
                     "fp32_model": "model_fp32.onnx"},
        "input_size": list(cfg.data.input_size), "method": cfg.model.method,
        "threshold": th["threshold"], "threshold_source": th["source"], "metrics": th["metrics"],
        "capture": {k: v for k, v in state.out("capture").items() if k != "dir"},
        "split": {k: state.out("split")[k] for k in ("train", "val")},
        "engine": {k: v for k, v in eng.items() if k not in ("file", "model_json")},
        "source": job.source, "defects": str(job.defects) if job.defects else None,
        "recipe_file": job.recipe.name, "recipe": job.recipe.to_dict(),
        "versions": software_versions(), "stage_seconds": state.seconds(),
        "warnings": _warnings(state),
    }
    path = B.write_bundle(job.parts_root, job.part, files, manifest)  # EdgeAdError on disk problems
    return {"path": str(path), "version": int(path.name[1:])}


_RUNNERS = {"capture": stage_capture, "split": stage_split, "train": stage_train, "prune": stage_prune,
            "export": stage_export, "quantize": stage_quantize, "threshold": stage_threshold, "engine": stage_engine,
            "report": stage_report, "bundle": stage_bundle}
