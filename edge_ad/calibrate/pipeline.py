"""`edge_ad calibrate`: good images of a new part -> a versioned, deployable part bundle, in one command.

Stages: capture -> split -> train -> prune -> export -> quantize -> threshold -> engine -> report -> bundle.
Each finished stage is recorded in <work>/<part>/state.json with its typed result, so an interrupted run
(Ctrl-C, kill, a lost camera) continues from the last finished stage when the same command is rerun.
Captured images (<work>/<part>/captured/) are never deleted, not even by --restart.

Bundle layout (parts/<part>/v<N>/): model.onnx + model.json = the deployed model with the calibrated threshold
(what open_detector picks), model_fp32.onnx + model_fp32.json, calibration.cache (TensorRT), model.engine and
model.build.json when TensorRT was available, report.md, histogram.png, heatmap_*.png, scores.json, recipe.yaml,
manifest.json.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edge_ad import bundle as B
from edge_ad.calibrate import stages as S
from edge_ad.calibrate.capture import stage_capture
from edge_ad.calibrate.job import (CAPTURED, LOCK_FILE, REJECTED, STAGES, STATE_FILE, STATE_FORMAT, CalibrationError,
                                   Hook, Job, State, say)
from edge_ad.calibrate.report import stage_report
from edge_ad.errors import EdgeAdError

__all__ = ["STAGES", "STATE_FILE", "CalibrationError", "CalibrationResult", "Job", "calibrate"]

KEEP_ON_RESTART = (CAPTURED, REJECTED)
RESUMABLE = ("capture", "train")  # their folders survive a rerun of the stage (captured images, training checkpoints)
STAGE_DIRS = {"capture": CAPTURED, "split": "dataset", "train": "model"}  # others: <work>/<part>/<stage>/
RUNNERS = {"capture": stage_capture, "split": S.stage_split, "train": S.stage_train, "prune": S.stage_prune,
           "export": S.stage_export, "quantize": S.stage_quantize, "threshold": S.stage_threshold,
           "engine": S.stage_engine, "report": stage_report, "bundle": S.stage_bundle}


@dataclass
class CalibrationResult:
    bundle: Path
    version: int
    threshold: float
    stage_seconds: dict[str, float]
    manifest: dict


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


def _start_over_reason(job: Job, state: State, restart: bool, fp: str) -> str | None:
    """Why the stages must start over (None: continue; "": a first run, nothing to say)."""
    if restart:
        return f"--restart: starting {job.part} over (captured images in {job.dir / CAPTURED} are kept)"
    if not state.loaded:
        return ""  # first run in this work folder (or an unreadable state file): nothing to continue
    if state.doc.get("complete"):
        return (f"the last calibration of {job.part} finished (v{state.doc.get('version')}); starting a new one "
                "from the captured images")
    if state.doc.get("fingerprint") != fp or state.doc.get("format") != STATE_FORMAT:
        return "the recipe or options changed since the unfinished run: redoing its stages (captured images are kept)"
    return None


def _run_stages(job: Job, restart: bool, hook: Hook | None) -> CalibrationResult:
    fp = job.fingerprint()
    state = State(job.dir / STATE_FILE, fp)
    why = _start_over_reason(job, state, restart, fp)
    if why is not None:
        if why:
            say(why)
        _clear_work(job)
        state.reset(fp)
    done = [s for s in STAGES if state.done(s)]
    if done:
        say(f"continuing {job.part}: finished earlier: {', '.join(done)}")
    for i, stage in enumerate(STAGES, 1):
        if state.done(stage):
            continue
        say(f"[{i}/{len(STAGES)}] {stage}")
        if stage not in RESUMABLE:
            shutil.rmtree(job.dir / STAGE_DIRS.get(stage, stage), ignore_errors=True)
        t0 = time.perf_counter()
        try:
            if hook:
                hook("start", {"stage": stage})
            result = RUNNERS[stage](job, state, hook)
        except KeyboardInterrupt:
            say(f"interrupted during {stage}: rerun the same command to continue from there")
            raise
        except CalibrationError:
            raise
        except EdgeAdError as e:
            raise CalibrationError(f"{stage}: {e}") from None
        except OSError as e:  # a full disk, a folder that became read-only: one line, finished stages kept
            where = f" ({e.filename})" if e.filename else ""
            raise CalibrationError(f"{stage}: {e.strerror or e}{where}; fix it and rerun to continue") from None
        try:
            state.record(stage, result, time.perf_counter() - t0)
        except OSError as e:
            raise CalibrationError(f"cannot save {state.path}: {e.strerror or e}; rerun to continue") from None
        if hook:
            hook("done", {"stage": stage, "outputs": result})
    out = state.get("bundle")
    state.doc.update({"complete": True, "version": out.version})
    state.save()
    bundle = Path(out.path)
    manifest = B.read_manifest(bundle)
    say(f"part {job.part}: bundle v{out.version} at {bundle} is now current (threshold {manifest['threshold']:.5g})")
    return CalibrationResult(bundle, out.version, manifest["threshold"], state.seconds(), manifest)


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
