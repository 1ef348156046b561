"""Stage 1, capture: good frames from a folder, a video or a live camera into <work>/<part>/captured/.

Frames are saved as they arrive (PNG), so a lost camera or Ctrl-C keeps what was taken. Broken frames
and near-duplicates are rejected while capturing; exposure and sharpness outliers are judged after it,
against the captured set itself, and left out of training (their files stay, a few examples are copied
to rejected/). Too many rejections stop calibrate before any training, with the counts per reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge_ad import data as D
from edge_ad.calibrate.job import CAPTURED, REJECTED, CalibrationError, CaptureResult, Hook, Job, State, say
from edge_ad.calibrate.quality import QualityFilter, measure, relative_outliers
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write

log = logging.getLogger(__name__)

MAX_FRAMES_PER_IMAGE = 20  # capture.max_frames = 0: give up on a live camera after 20 x n frames


def save_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise CalibrationError(f"cannot encode {path.name} as PNG")
    try:
        atomic_write(path, buf.tobytes())
    except OSError as e:
        raise CalibrationError(f"cannot save {path}: {e.strerror or e}") from None


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


def _lost(job: Job, kept: int, why: str) -> str:
    return (f"camera {job.source} lost ({why}); kept the {kept} images captured so far in {job.dir / CAPTURED}: "
            "reconnect it and rerun the same command to continue")


def _camera_frames(job: Job, taken: set[str], filt: QualityFilter, n: int) -> Iterator[tuple[str, np.ndarray]]:
    """Frames of a video file or a live camera (one every capture.interval_s); a lost camera is a CalibrationError."""
    from edge_ad.station.camera import Camera

    cap = job.recipe.calib.capture
    camera = Camera(job.source, job.camera, mode="every")
    max_frames = cap.max_frames or MAX_FRAMES_PER_IMAGE * n
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


def wanted_images(job: Job) -> int:
    """capture.n, or for 0 (auto): every image of a folder up to capture.max_images, else capture.camera_n."""
    cap = job.recipe.calib.capture
    if cap.n:
        return cap.n
    if job.source and Path(job.source).expanduser().is_dir():
        return min(len(D.list_images(Path(job.source).expanduser())), cap.max_images)
    return cap.camera_n


def stage_capture(job: Job, state: State, hook: Hook | None) -> CaptureResult:
    """Keep up to n good frames (PNG, as they arrive), then leave out the set's exposure and sharpness outliers."""
    cap, qcfg = job.recipe.calib.capture, job.recipe.calib.quality
    cap_dir, rej_dir = job.dir / CAPTURED, job.dir / REJECTED
    cap_dir.mkdir(parents=True, exist_ok=True)
    filt = QualityFilter(qcfg)
    existing = D.list_images(cap_dir)
    for p in existing:
        filt.remember(D.load_image(p))
    names = {p.name for p in existing}
    n = wanted_images(job) if job.source else (cap.n or cap.camera_n)
    new, frames = 0, 0
    saved_rejects: dict[str, int] = {}
    unreadable: list[str] = []

    def keep_example(reason: str, name: str, image: np.ndarray) -> None:
        if saved_rejects.get(reason, 0) < cap.keep_rejected:
            saved_rejects[reason] = saved_rejects.get(reason, 0) + 1
            save_png(rej_dir / f"{reason}_{name}", image)

    if len(existing) < n:
        if not job.source:
            raise CalibrationError(f"{len(existing)} of {n} images captured so far: give --source (a camera URI "
                                   "or an image folder) to capture the rest")
        from edge_ad.progress import progress

        is_dir = Path(job.source).expanduser().is_dir()
        source = _folder_frames(job, names, unreadable) if is_dir else _camera_frames(job, names, filt, n)
        try:
            with progress(total=n, initial=len(existing), desc="capture", unit="img") as bar:
                for name, image in source:
                    frames += 1
                    if name in names:  # a resumed video: this frame was kept by an earlier run
                        continue
                    image = D.crop_roi(image, job.roi)
                    reason = filt.check(image)
                    if reason is not None:
                        keep_example(reason, name, image)
                        bar.set_postfix(rejected=filt.rejected)
                        continue
                    save_png(cap_dir / name, image)
                    names.add(name)
                    new += 1
                    bar.update(1)
                    if hook:
                        hook("kept", {"name": name, "count": len(names)})
                    if len(names) >= n:
                        break
        finally:
            source.close()  # stops the camera now, also on Ctrl-C or an error
    counts = dict(filt.counts)
    kept_paths = D.list_images(cap_dir)
    outliers, stats = relative_outliers([measure(D.load_image(p), qcfg) for p in kept_paths], qcfg)
    for i, reason in outliers.items():
        counts[reason] += 1
        keep_example(reason, kept_paths[i].name, D.load_image(kept_paths[i]))
    excluded = sorted(kept_paths[i].name for i in outliers)
    usable = len(kept_paths) - len(excluded)
    say(f"capture: {len(kept_paths)} images in {cap_dir} ({new} new); this run {filt.summary()}"
        + (f"; {len(excluded)} left out as outliers of the set" if excluded else ""))
    _check_rejections(counts, frames + len(existing), rej_dir, qcfg.max_rejected_fraction, qcfg.enabled)
    warnings = []
    if usable < cap.min_images:
        hint = ""
        if counts.get("near_duplicate", 0) >= max(counts.values(), default=0) > 0:
            hint = ": the frames are (nearly) identical; present a different part, or move it, between shots"
        elif sum(counts.values()):
            hint = f": see the examples in {rej_dir} and the quality: section of the recipe"
        raise CalibrationError(f"too few usable images for training: {usable} (need at least {cap.min_images}; "
                               f"rejected: {', '.join(f'{k} {v}' for k, v in counts.items() if v) or 'none'})"
                               f"{hint}. Captured images are kept in {cap_dir}; add more and rerun")
    whole_folder = not cap.n and job.source and Path(job.source).expanduser().is_dir()
    if len(kept_paths) < n and not whole_folder:  # a whole folder minus its rejects is what was asked for
        warnings.append(f"the source gave {len(kept_paths)} usable images, fewer than the {n} wanted")
    spread = filt.aspect_spread()
    if spread > qcfg.aspect_tolerance:
        warnings.append(f"image aspect ratios differ by {100 * spread:.0f}% (> {100 * qcfg.aspect_tolerance:.0f}%): "
                        f"every image is resized to the same input ({job.recipe.config.data.resize}); "
                        "consider data.resize: letterbox or a fixed roi")
    for w in warnings:
        log.warning("%s", w)
    return CaptureResult(images=usable, new=new, frames=frames, rejected=counts, unreadable=unreadable,
                         aspect_spread=round(spread, 4), warnings=warnings, dir=str(cap_dir), rejected_dir=str(rej_dir),
                         relative={**stats, "excluded": excluded})


def _check_rejections(counts: dict[str, int], seen: int, rej_dir: Path, limit: float, enabled: bool) -> None:
    """Stop before training when more than `limit` of the frames were rejected for quality (not duplicates)."""
    bad = {k: v for k, v in counts.items() if v and k != "near_duplicate"}
    total = sum(bad.values())
    if enabled and seen and total / seen > limit:
        raise CalibrationError(
            f"{total} of {seen} frames ({total / seen:.0%}) were rejected for quality, more than the "
            f"{limit:.0%} allowed (quality.max_rejected_fraction): {', '.join(f'{k} {v}' for k, v in bad.items())}. "
            f"Examples are in {rej_dir}; fix the lighting or focus, or relax the recipe's quality: section")
