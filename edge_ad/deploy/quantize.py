"""Post-training static INT8 from good calibration images (onnxruntime QDQ), plus the TensorRT cache.

Only convolutions are quantized: the cosine-distance tail (Mul/ReduceSum/Sqrt/Div) and resizes stay
in float, because 1-cos of two nearly equal INT8 vectors is exactly where pixel maps collapse.
Modes: `trt` (symmetric int8 activations and per-channel weights, zero points 0: what TensorRT's
explicit-precision parser expects) and `cpu` (uint8 activations, int8 per-channel weights: ORT's fast x86 path).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from edge_ad import data as D
from edge_ad.config import DataConfig
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write
from edge_ad.runtime.manifest import ModelInfo, manifest_path

log = logging.getLogger(__name__)

QUANT_MODES = ("trt", "cpu")
CALIB_METHODS = ("minmax", "percentile", "entropy")
QUANT_OPS = ["Conv", "ConvTranspose"]
DEFAULT_CALIB_IMAGES = 128  # `edge_ad export --int8` (calibrate's recipe sets its own: quantize.calib_images)
DEFAULT_MODE = "trt"
DEFAULT_CALIB_METHOD = "percentile"
MIN_CALIB_IMAGES = 8
HISTOGRAM_BINS = 2048  # activation histogram for entropy/percentile calibration (TensorRT's entropy uses 2048)
QUANTIZED_BINS = 128  # int8 levels on one side of zero
PERCENTILE = 99.99
TEACHER_SCOPE = "/teacher/"  # ONNX node names of the teacher's layers (torch module path model.teacher)


def select_images(paths: list[Path], n: int) -> list[Path]:
    """n paths chosen evenly over a sorted list (covers every part of a capture session)."""
    if len(paths) <= n:
        return list(paths)
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, n).round()]


def calibration_batch(source: str | Path, data_cfg: DataConfig, n: int = DEFAULT_CALIB_IMAGES) -> np.ndarray:
    """Preprocessed calibration images from a folder, or from train/good of an MVTec-layout folder."""
    src = Path(source)
    folder = src / "train" / "good" if (src / "train" / "good").is_dir() else src
    paths = select_images(D.list_images(folder), n)
    batch = []
    for p in paths:
        try:
            batch.append(D.preprocess(D.load_image(p), data_cfg))
        except D.ImageError as e:
            log.warning("calibration: skipping %s", e)
    if len(batch) < MIN_CALIB_IMAGES:
        raise EdgeAdError(f"calibration needs at least {MIN_CALIB_IMAGES} readable images, {folder} has {len(batch)}")
    return np.stack(batch)


class _Reader:
    """onnxruntime CalibrationDataReader over an in-memory batch (one image per step)."""

    def __init__(self, batch: np.ndarray, input_name: str):
        self.batch, self.name, self.i = batch, input_name, 0

    def get_next(self):
        if self.i >= len(self.batch):
            return None
        self.i += 1
        return {self.name: self.batch[self.i - 1:self.i]}

    def rewind(self):
        self.i = 0

    def __iter__(self):
        self.rewind()
        return iter(self.get_next, None)


def quantize(onnx_path: str | Path, out_path: str | Path, calib: np.ndarray, mode: str = DEFAULT_MODE,
             method: str = DEFAULT_CALIB_METHOD, exclude: list[str] | None = None, trt_cache: str | Path | None = None,
             float_teacher: bool = True) -> Path:
    """Write an INT8 QDQ model (and its manifest); optionally the TensorRT calibration cache.

    float_teacher keeps the teacher's convolutions in float: quantization noise in the teacher's features goes
    straight into 1-cos, where nearly equal vectors are compared (measured: benchmarks/results/int8.md).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in QUANT_MODES:
        raise EdgeAdError(f"quantization mode must be one of {', '.join(QUANT_MODES)}, got {mode!r}")
    if method not in CALIB_METHODS:
        raise EdgeAdError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    src = Path(onnx_path)
    try:
        model = onnx.load(str(src))
    except Exception as e:  # noqa: BLE001
        raise EdgeAdError(f"{src}: not a readable ONNX model ({type(e).__name__})") from None
    inp = model.graph.input[0]
    want = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    if tuple(calib.shape[1:]) != want[1:]:
        raise EdgeAdError(f"calibration images are {calib.shape[1:]}, the model expects {want[1:]}")
    info = ModelInfo.load(manifest_path(src))
    out = Path(out_path)
    exclude = list(exclude or [])
    if float_teacher:
        exclude += [n.name for n in model.graph.node if n.op_type in QUANT_OPS and TEACHER_SCOPE in n.name]
    cal_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[method]
    extra = {"ActivationSymmetric": mode == "trt", "WeightSymmetric": True}
    with tempfile.TemporaryDirectory(prefix="edge_ad_quant.") as tmp, _quiet_root_logger():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        cache_json = Path(tmp) / "ranges.json"
        calibrate_ranges(pre, calib, inp.name, cal_method, mode == "trt", cache_json)
        q = Path(tmp) / "q.onnx"
        quantize_static(str(pre), str(q), _Reader(calib, inp.name), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=QUANT_OPS, per_channel=True,
                        activation_type=QuantType.QInt8 if mode == "trt" else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        calibrate_method=cal_method, extra_options=extra, calibration_cache_path=str(cache_json))
        atomic_write(out, q.read_bytes())
        if trt_cache is not None:
            write_trt_cache(cache_json, Path(trt_cache), method)
    info.meta.update({"precision": "int8", "quant_mode": mode, "calib_method": method, "calib_images": int(len(calib)),
                      "float_teacher": float_teacher, "excluded_nodes": exclude, "fp32_model": str(src)})
    info.save(out)
    return out


def sensitivity(fp32_path: str | Path, int8_path: str | Path, calib: np.ndarray, n: int = 8) -> dict:
    """Where INT8 hurts: per-layer SQNR (dB) of the INT8 model's conv outputs against FP32 on calibration images
    (worst first, with the node name to pass to `exclude`), per block the worst layer, and per output map the error."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    graph = onnx.load(str(fp32_path)).graph
    name = graph.input[0].name
    producers = {out: node.name for node in graph.node for out in node.output}
    sample = calib[:n]
    with tempfile.TemporaryDirectory(prefix="edge_ad_sens.") as tmp, _quiet_root_logger():
        acts = []
        for src, tag in ((fp32_path, "f"), (int8_path, "q")):
            aug = str(Path(tmp) / f"{tag}.onnx")
            modify_model_output_intermediate_tensors(str(src), aug, op_types_for_saving=QUANT_OPS)
            acts.append(collect_activations(aug, _Reader(sample, name)))
    errors = compute_activation_error(create_activation_matching(acts[1], acts[0]))
    layers = sorted(({"tensor": t, "node": producers.get(t, ""), "block": "/".join(producers.get(t, "").split("/")[:4]),
                      "sqnr_db": float(e["xmodel_err"])} for t, e in errors.items() if "xmodel_err" in e),
                    key=lambda r: r["sqnr_db"])
    blocks: dict[str, dict] = {}
    for r in layers:
        blocks.setdefault(r["block"], r)
    outputs = []
    fp, q8 = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32_path, int8_path))
    for i in range(len(sample)):
        a, b = fp.run(None, {name: sample[i:i + 1]}), q8.run(None, {name: sample[i:i + 1]})
        outputs.append([float(np.abs(x - y).mean() / max(float(np.abs(x).mean()), 1e-12)) for x, y in zip(a, b)])
    per_output = {o.name: float(np.mean([r[k] for r in outputs])) for k, o in enumerate(fp.get_outputs())}
    return {"layers": layers, "blocks": list(blocks.values()), "outputs_rel_mae": per_output, "images": int(len(sample))}


def format_sensitivity(report: dict, top: int = 10) -> str:
    lines = [f"INT8 sensitivity on {report['images']} calibration images (SQNR of conv outputs vs FP32; lower is worse)",
             "output maps, mean |int8 - fp32| / mean |fp32|: "
             + ", ".join(f"{k} {v:.3f}" for k, v in report["outputs_rel_mae"].items()),
             f"{'SQNR dB':>8}  node (pass to --exclude to keep it in float)"]
    lines += [f"{r['sqnr_db']:8.1f}  {r['node']}" for r in report["layers"][:top]]
    return "\n".join(lines)


def calibrate_ranges(model: Path, calib: np.ndarray, input_name: str, method, symmetric: bool, cache: Path) -> Path:
    """Activation ranges into onnxruntime's calibration cache, with histogram settings quantize_static cannot pass:
    with its fixed 128 bins, entropy calibration can only pick the full range and equals minmax."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    extra = {"symmetric": symmetric}
    if method == CalibrationMethod.Entropy:
        extra.update(num_bins=HISTOGRAM_BINS, num_quantized_bins=QUANTIZED_BINS)
    elif method == CalibrationMethod.Percentile:
        extra.update(num_bins=HISTOGRAM_BINS, percentile=PERCENTILE)
    calibrator = create_calibrator(model, QUANT_OPS, augmented_model_path=str(cache.with_suffix(".aug.onnx")),
                                   calibrate_method=method, extra_options=extra)
    calibrator.collect_data(_Reader(calib, input_name))
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs one INFO line per rescaled bias to the root logger: keep warnings only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def _ranges(cache_json: Path) -> dict[str, float]:
    """Absolute max per tensor from onnxruntime's calibration cache."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    amax = {}
    for name, rec in load_tensors_data(cache_json).items():
        lo, hi = (np.asarray(v, dtype=np.float64).ravel()[0] for v in rec.range_value)
        amax[name] = float(max(abs(lo), abs(hi)))
    return amax


def write_trt_cache(cache_json: Path, path: Path, method: str) -> Path:
    """TensorRT text calibration cache from the same calibration ranges (for implicit INT8 builds)."""
    from edge_ad.deploy.trt_cache import DEFAULT_TRT_VERSION, CalibrationCache, format_cache, scales_from_amax, version_tag

    algo = "MinMaxCalibration" if method == "minmax" else "EntropyCalibration2"
    cache = CalibrationCache(version_tag(DEFAULT_TRT_VERSION), algo, scales_from_amax(_ranges(cache_json)))
    if not cache.scales:
        raise EdgeAdError(f"no calibration ranges found in {cache_json}")
    atomic_write(path, format_cache(cache))
    return path
