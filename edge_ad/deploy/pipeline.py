"""The one deploy verb behind `edge_ad export`: a trained model.pt (or an exported ONNX) -> what runs on the station.

Steps, each only when asked: ONNX export (from .pt), INT8 QDQ from calibration images, TensorRT engine.
Every step writes its graph with a model.json beside it, so any of the files opens with `open_detector`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_ad.deploy.engine import DEFAULT_WORKSPACE_MB
from edge_ad.deploy.quantize import DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_METHOD, DEFAULT_MODE
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write_json

FORMATS = ("onnx", "engine")


class UnsupportedOps(EdgeAdError):
    """--check-only found ops this TensorRT cannot import (the command exits 1, like a failed check)."""


@dataclass
class ExportOptions:
    """What `edge_ad export` was asked for (defaults: FP32 ONNX beside the model); its flags come from these fields."""

    format: str = "onnx"  # onnx: ONNX graph(s) for onnxruntime | engine: also a TensorRT engine built on this device
    out: Path | None = None  # .onnx path of the FP32 export (default: model.onnx beside the model)
    fused: bool = False  # upsample, fuse and blur inside the graph
    int8: bool = False  # also quantize to INT8 from calibration images
    int8_out: Path | None = None  # path of the INT8 graph (default: <onnx stem>_int8_<mode>.onnx beside it)
    calib: str | None = None  # folder of good images (or an MVTec-layout folder; default: the training data)
    calib_images: int = DEFAULT_CALIB_IMAGES  # how many calibration images, chosen evenly
    mode: str = DEFAULT_MODE  # trt: symmetric int8 QDQ for TensorRT | cpu: uint8 activations, fastest in onnxruntime on x86
    calib_method: str = DEFAULT_CALIB_METHOD  # how activation ranges are found from the calibration images
    exclude: list[str] = field(default_factory=list)  # ONNX node names kept in float (see --sensitivity)
    int8_teacher: bool = False  # quantize the teacher too (faster; by default it stays float: its INT8 noise
    #                             dominates the 1-cos maps)
    sensitivity: bool = False  # after quantizing, report per-layer and per-output INT8 error against FP32
    precision: str = ""  # TensorRT engine precision: fp32 | fp16 | int8 (empty: int8 for an INT8 graph, else fp16)
    workspace_mb: int = DEFAULT_WORKSPACE_MB  # TensorRT builder workspace (MiB)
    dla: int | None = None  # build the engine for DLA core N (Jetson Orin AGX / NX), layers the DLA lacks on the GPU
    calib_cache: Path | None = None  # TensorRT INT8 calibration cache, for an int8 engine from a float (non-QDQ) ONNX
    engine_dir: Path | None = None  # folder of the engine (default: beside the graph it is built from)
    force: bool = False  # rebuild the engine even when a cached one matches
    trt_log: bool = False  # print TensorRT's build log
    check_only: bool = False  # only list the ops TensorRT cannot import (no TensorRT needed); exit 1 when there are
    trt_version: str = ""  # TensorRT version for --check-only (empty: the installed one, else the oldest supported)


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
    if opts.check_only:
        check_ops(deployed, opts.trt_version, say)
    elif opts.format == "engine":
        written.append(build(deployed, opts, say))
    return written


def check_ops(graph: Path, trt_version: str = "", say=print) -> None:
    """Whether TensorRT (the installed one, else the oldest edge_ad supports) imports every op; UnsupportedOps if not."""
    from edge_ad.deploy.trt_ops import DEFAULT_TRT_VERSION, check_onnx_ops
    from edge_ad.runtime.tensorrt import tensorrt_version

    target = trt_version or tensorrt_version() or DEFAULT_TRT_VERSION
    lacking = check_onnx_ops(graph, target)
    if lacking:
        raise UnsupportedOps(f"ops TensorRT {target} cannot import in {graph.name}: {', '.join(lacking)}")
    say(f"all ops of {graph.name} are supported by TensorRT {target}")


def build(graph: Path, opts: ExportOptions, say=print) -> Path:
    """The TensorRT engine of `graph` (built here, or the cached one), with the runtime manifest beside it."""
    from edge_ad.deploy.engine import build_engine
    from edge_ad.deploy.trt_ops import has_qdq
    from edge_ad.runtime.manifest import ModelInfo, manifest_path
    from edge_ad.runtime.tensorrt import import_tensorrt

    try:
        import_tensorrt()
    except EdgeAdError as e:  # absent or too old: say what still works here
        raise EdgeAdError(f"{e}; without it, `edge_ad export {graph} --check-only` checks the ops") from None
    precision = opts.precision or ("int8" if opts.int8 or opts.calib_cache or has_qdq(graph) else "fp16")
    engine = build_engine(graph, opts.engine_dir or graph.parent, precision=precision, calib_cache=opts.calib_cache,
                          workspace_mb=opts.workspace_mb, dla_core=opts.dla, force=opts.force, verbose=opts.trt_log)
    ModelInfo.load(manifest_path(graph)).save(engine)  # the runtime manifest travels with the engine
    say(f"TensorRT engine ({precision}{f', DLA {opts.dla}' if opts.dla is not None else ''}) written to {engine}")
    return engine
