"""Engine stage: a TensorRT engine of the deployed graph on this device (skipped, with the reason, without
TensorRT), and its parity with onnxruntime on the validation images through the same detector."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from edge_ad import data as D
from edge_ad.calibrate.job import EngineResult, Hook, Job, State
from edge_ad.calibrate.stages.common import val_paths
from edge_ad.errors import EdgeAdError

log = logging.getLogger(__name__)


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
