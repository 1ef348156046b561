"""Bundle stage: the deployable files into parts/<part>/v<N>/ (atomic, hashed manifest), `current` switched."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import yaml

from edge_ad import bundle as B
from edge_ad.calibrate.job import BundleResult, Hook, Job, State, say
from edge_ad.calibrate.stages.common import chosen_config, notes
from edge_ad.fileio import atomic_write
from edge_ad.versions import software_versions


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
