"""The one deploy verb behind `edge_ad export`: a trained model.pt (or an exported ONNX) -> what runs on the station.

Steps, each only when asked: ONNX export (from .pt), INT8 QDQ from calibration images, TensorRT engine.
Every step writes its graph with a model.json beside it, so any of the files opens with `open_detector`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json

FORMATS = ("onnx", "engine")


@dataclass
class ExportOptions:
    """What `edge_ad export` was asked for (defaults: FP32 ONNX beside the model)."""

    format: str = "onnx"  # onnx | engine (TensorRT, built on this device)
    out: Path | None = None  # .onnx path of the FP32 export (default: model.onnx beside the model)
    fused: bool = False
    int8: bool = False
    int8_out: Path | None = None  # default: <onnx stem>_int8_<mode>.onnx beside it
    calib: str | None = None  # folder of good images (default: the model's training data)
    calib_images: int = 128
    mode: str = "trt"  # quantize.QUANT_MODES
    calib_method: str = "percentile"  # quantize.CALIB_METHODS
    exclude: list[str] = field(default_factory=list)
    int8_teacher: bool = False
    sensitivity: bool = False
    precision: str = ""  # engine precision; default: int8 with --int8, else fp16
    workspace_mb: int = 1024


def export(model: str | Path, opts: ExportOptions, say=print) -> list[Path]:
    """Run the requested steps; returns the written graphs (last = the one to deploy)."""
    from edge_ad.runtime.manifest import ModelInfo, manifest_path

    if opts.format not in FORMATS:
        raise EdgeAdError(f"--format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
    src = Path(model)
    if src.is_dir():
        src = src / "model.pt"
    if not src.is_file():
        raise EdgeAdError(f"model not found: {src}")
    written = []
    if src.suffix == ".onnx":
        onnx_path = src
    elif src.suffix == ".pt":
        from edge_ad.deploy.export import export_onnx

        onnx_path = export_onnx(src, opts.out or src.parent / "model.onnx", fused=opts.fused)
        say(f"ONNX written to {onnx_path} (+ {manifest_path(onnx_path).name})")
        written.append(onnx_path)
    else:
        raise EdgeAdError(f"{src}: export takes a model.pt (or its folder) or an exported .onnx")
    deployed = onnx_path
    if opts.int8:
        from edge_ad.deploy.quantize import calibration_batch, quantize

        info = ModelInfo.load(manifest_path(onnx_path))
        calib_src = opts.calib or info.meta.get("data_root")
        if not calib_src:
            raise EdgeAdError("no calibration images: give --calib DIR (a folder of good images)")
        calib = calibration_batch(calib_src, info.data, opts.calib_images)
        out = opts.int8_out or onnx_path.with_name(f"{onnx_path.stem}_int8_{opts.mode}.onnx")
        cache = out.with_suffix(".cache") if opts.mode == "trt" else None
        deployed = quantize(onnx_path, out, calib, opts.mode, opts.calib_method, opts.exclude, cache,
                            float_teacher=not opts.int8_teacher)
        say(f"INT8 ({opts.mode}, {opts.calib_method}, {len(calib)} images) written to {deployed}"
            + (f"; TensorRT cache {cache}" if cache else ""))
        written.append(deployed)
        if opts.sensitivity:
            from edge_ad.deploy.quantize import format_sensitivity, sensitivity

            report = sensitivity(onnx_path, deployed, calib)
            rep_path = atomic_write_json(deployed.with_suffix(".sensitivity.json"), report)
            say(format_sensitivity(report))
            say(f"full report: {rep_path}")
    if opts.format == "engine":
        from edge_ad.deploy.engine import build_engine

        precision = opts.precision or ("int8" if opts.int8 else "fp16")
        engine = build_engine(deployed, deployed.parent, precision=precision, workspace_mb=opts.workspace_mb)
        ModelInfo.load(manifest_path(deployed)).save(engine)  # the runtime manifest travels with the engine
        say(f"TensorRT engine ({precision}) written to {engine}")
        written.append(engine)
    return written

