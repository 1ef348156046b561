"""Export stage: the chosen (pruned) model as an FP32 ONNX graph with its model.json."""

from __future__ import annotations

from edge_ad.calibrate.job import ExportResult, Hook, Job, State


def stage_export(job: Job, state: State, hook: Hook | None) -> ExportResult:
    from edge_ad.deploy.export import export_onnx

    path = export_onnx(state.get("prune").model, job.stage_dir("export") / "model_fp32.onnx")
    return ExportResult(onnx=str(path), json=str(path.with_suffix(".json")))
