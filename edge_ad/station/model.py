"""The model the station inspects with, loaded so that a bad bundle can never stop the station.

A bundle is refused with its reason when it is missing, damaged (files differ from its manifest), marked not
ready by calibrate (unless `allow_not_ready`), or does not load. At start that is a fault and the station keeps
trying; on a reload (SIGHUP, the web view) the running model stays and the fault says why. A detector that
fails on frame after frame is a fault too, and is reopened while it lasts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edge_ad import bundle as B
from edge_ad.data import crop_roi
from edge_ad.errors import EdgeAdError
from edge_ad.runtime.base import Result
from edge_ad.runtime.detector import AnomalyDetector, open_detector, resolve_model
from edge_ad.runtime.manifest import manifest_path
from edge_ad.station.config import StationConfig
from edge_ad.station.faults import Faults
from edge_ad.station.lograte import log_limited
from edge_ad.station.status import StationStatus

log = logging.getLogger(__name__)


@dataclass
class Model:
    """A loaded bundle."""

    detector: AnomalyDetector
    bundle: Path  # resolved folder
    version: str  # its folder name, e.g. v3
    ready: bool | None  # calibrate's readiness verdict (None: the bundle has none)


def one_line(exc: BaseException) -> str:
    """An exception as one short line (EdgeAdError messages are already written for people)."""
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return text if isinstance(exc, EdgeAdError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def readiness(manifest: dict) -> tuple[bool | None, str]:
    """(ready, reason) from a bundle manifest; (None, "") for bundles written before readiness existed."""
    r = manifest.get("readiness")
    if not isinstance(r, dict) or not isinstance(r.get("ready"), bool):
        return None, ""
    return r["ready"], str(r.get("reason") or "no reason given")


def load_bundle(cfg: StationConfig) -> Model:
    """The detector of the bundle the config names; EdgeAdError with the reason when it must not run.

    Under parts_dir a bundle is a folder with a valid manifest.json whose hashes match and which lists the model file
    and model.json that would run (a file added beside them, e.g. a model.engine that `auto` prefers, is refused).
    An explicit `bundle:` folder without a manifest (development) runs with a warning."""
    path = cfg.bundle_dir()
    if not path.exists():
        raise EdgeAdError(f"part bundle not found: {path} (calibrate the part or set `bundle:` in the station config)")
    resolved = path.resolve()
    manifest: dict = {}
    if not cfg.bundle and not (resolved / B.MANIFEST).is_file():
        raise EdgeAdError(f"bundle {resolved} has no {B.MANIFEST}: under parts_dir that is not a part bundle (no hashes "
                          "to check, no readiness verdict); recalibrate or roll back")
    if (resolved / B.MANIFEST).is_file():
        why = B.damage(resolved)
        if why:
            raise EdgeAdError(f"bundle {resolved} is damaged: {why}")
        manifest = B.read_manifest(resolved)
        model_file, _ = resolve_model(resolved, cfg.runtime)
        unlisted = [p.name for p in (model_file, manifest_path(model_file)) if p.name not in manifest.get("files", {})]
        if unlisted:
            raise EdgeAdError(f"bundle {resolved} is damaged: {', '.join(unlisted)} not listed in its {B.MANIFEST} "
                              "(added after it was written)")
    else:
        log_limited(log, logging.WARNING, f"unchecked:{resolved}", "bundle %s has no %s: running it unchecked (no "
                    "hashes, no readiness verdict) because `bundle:` names it; fine for development, not for a line",
                    resolved, B.MANIFEST)
    ready, reason = readiness(manifest)
    if ready is False and not cfg.allow_not_ready:
        raise EdgeAdError(f"bundle {resolved.name} is not ready: {reason} (allow_not_ready: true in the station "
                          "config runs it anyway)")
    det = open_detector(resolved, cfg.runtime, threshold=cfg.threshold)
    if ready is False:
        log.info("bundle %s is not ready (%s); it runs because allow_not_ready is set", resolved.name, reason)
    return Model(det, resolved, resolved.name, ready)


def _target(cfg: StationConfig) -> tuple:
    """What the bundle path points at now (its folder and files' sizes and times): a change is worth a retry."""
    path = cfg.bundle_dir()
    try:
        resolved = path.resolve()
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in resolved.iterdir())
        return str(resolved), files
    except OSError:
        return str(path), None


class ModelSlot:
    """Holds the running model; every load failure is a `bundle` fault, repeated frame failures a `detector` one."""

    def __init__(self, faults: Faults, status: StationStatus, retry_s: float, frame_errors: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.faults = faults
        self.status = status
        self.retry_s = retry_s
        self.frame_errors = frame_errors
        self.model: Model | None = None
        self._clock = clock
        self._retry_at = 0.0
        self._failed_target: tuple | None = None
        self._errors = 0  # frames in a row the detector failed on
        self._reopen = False  # the detector fault is a runtime failure: reopening it may help
        self.last_failure = ""  # why the newest frame that failed was not inspected

    @property
    def ready(self) -> bool:
        return self.model is not None

    def load(self, cfg: StationConfig) -> bool:
        """Load the configured bundle; on failure keep the running model (if any) and report the fault."""
        self._retry_at = self._clock() + self.retry_s
        try:
            model = load_bundle(cfg)
        except Exception as exc:  # noqa: BLE001 - any bundle problem is a fault, never a dead station
            self._failed_target = _target(cfg)
            keep = f"; still inspecting with {self.model.version}" if self.model else "; not inspecting"
            self.faults.set("bundle", one_line(exc) + keep)
            return False
        self.model, self._failed_target, self._errors = model, None, 0
        det = model.detector
        log.info("model %s (%s) threshold %.4f", model.bundle, model.version, det.threshold)
        self.status.update(bundle=str(model.bundle), version=model.version, threshold=det.threshold,
                           method=str(det.info.meta.get("method", "")), backend=_backend(det), ready=model.ready)
        self.faults.clear("bundle")  # a detector fault clears with the first frame inspected
        return True

    def retry(self, cfg: StationConfig) -> None:
        """While a fault lasts, try again every retry_s: at once when nothing runs, else when the bundle changed
        (a rollback, a repaired file) or the detector is the problem."""
        if self._clock() < self._retry_at:
            return
        self._retry_at = self._clock() + self.retry_s
        if self.faults.active("bundle"):
            if self.model is None or _target(cfg) != self._failed_target:
                self.load(cfg)
        elif self.faults.active("detector") and self._reopen:
            self.load(cfg)

    def score(self, image: np.ndarray, roi: list[int] | None, frame_index: int) -> \
            tuple[np.ndarray, Result] | None:
        """The one path that scores a frame, in continuous and triggered mode: roi, detect, and a failure counted
        (a fault when it repeats); (inspected image, result), or None with the reason in `last_failure`."""
        assert self.model is not None
        try:
            cropped = crop_roi(image, roi)
            r = self.model.detector.detect(cropped)
        except Exception as exc:  # noqa: BLE001 - a bad frame or a failing detector: a fault when it repeats
            self.status.count("errors")
            self.last_failure = one_line(exc)
            self.frame_failed(exc, frame_index)
            return None
        self.frame_ok()
        return cropped, r

    def frame_failed(self, exc: BaseException, frame_index: int) -> None:
        """A frame the detector could not inspect; `frame_errors` in a row are a fault."""
        self._errors += 1
        log_limited(log, logging.WARNING, "frame-error", "frame %d not inspected: %s", frame_index, one_line(exc))
        if self._errors >= self.frame_errors and not self.faults.active("detector"):
            self.faults.set("detector", f"no frame inspected since {self._errors} in a row failed: {one_line(exc)}")
            self._reopen = not isinstance(exc, EdgeAdError)  # a runtime failure, not a bad frame or roi

    def frame_ok(self) -> None:
        if self._errors:
            self._errors = 0
            self.faults.clear("detector")


def _backend(det: AnomalyDetector) -> str:
    name = type(det.session).__name__
    return {"OrtSession": "onnxruntime", "TensorRTSession": "tensorrt", "TorchSession": "torch"}.get(name, name)
