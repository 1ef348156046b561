"""TensorRT engine build side: ONNX -> cached .engine plus its build record, built on the device that runs it.

Engines only run on the TensorRT and GPU that built them, hence the cache key; running them is
edge_ad.runtime.tensorrt's job, and that module never imports this one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from edge_ad.deploy import trt_cache as calib_format
from edge_ad.deploy.trt_ops import check_onnx_ops, has_qdq
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write, atomic_write_json
from edge_ad.runtime.tensorrt import build_record_path, gpu_name, import_tensorrt, is_oom, make_logger, oom_error

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MB = 1024
ENGINE_SUFFIX = ".engine"
KEY_CHARS_IN_NAME = 16
MIB_SHIFT = 20  # MiB -> bytes
EXPLICIT_BATCH_ONLY_FROM = 10  # TensorRT major version where explicit batch is the only mode (the flag is gone)
CALIBRATION_BATCH_SIZE = 1
_CALIBRATORS = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
}


# ----------------------------------------------------------------------------- pure helpers


def engine_cache_key(
    onnx_bytes: bytes,
    trt_version: str,
    gpu_name: str,
    precision: str,
    dla_core: int | None,
    extra: bytes = b"",
) -> str:
    """sha256 hex naming one engine; `extra` carries anything else that changes it (the INT8 cache)."""
    _check_precision(precision)
    meta = {
        "onnx": hashlib.sha256(onnx_bytes).hexdigest(),
        "trt": str(trt_version),
        "gpu": str(gpu_name),
        "precision": precision,
        "dla": dla_core,
        "extra": hashlib.sha256(extra).hexdigest() if extra else "",
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def engine_file_name(onnx_stem: str, precision: str, dla_core: int | None, key: str) -> str:
    """<model>.<precision>[.dla<N>].<key prefix>.engine: readable and unique per cache key."""
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"{onnx_stem}.{precision}{dla}.{key[:KEY_CHARS_IN_NAME]}{ENGINE_SUFFIX}"


def network_flags(trt) -> int:
    """create_network flags: EXPLICIT_BATCH on TensorRT 8.6, none on 10 (explicit batch is the only mode)."""
    major = int(str(trt.__version__).split(".")[0])
    if major >= EXPLICIT_BATCH_ONLY_FROM:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise EdgeAdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


# ----------------------------------------------------------------------------- INT8 calibration cache


def make_cache_calibrator(trt, cache: bytes, algorithm: str = calib_format.DEFAULT_ALGORITHM):
    """An INT8 calibrator that only replays a cache: TensorRT takes the scales and never asks for data."""
    base_name = _CALIBRATORS.get(algorithm)
    if base_name is None:
        raise EdgeAdError(
            f"calibration cache algorithm {algorithm!r} is not usable here; use one of {', '.join(_CALIBRATORS)}"
        )
    base = getattr(trt, base_name)

    class CacheCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self._cache = cache

        def get_batch_size(self):
            return CALIBRATION_BATCH_SIZE

        def get_batch(self, names, p_str=None):
            return None  # no data: the cache must cover every tensor

        def read_calibration_cache(self):
            return self._cache

        def write_calibration_cache(self, cache):
            return None

    return CacheCalibrator()


# ----------------------------------------------------------------------------- build


def build_engine(
    onnx_path: str | Path,
    out_dir: str | Path,
    precision: str = DEFAULT_PRECISION,
    calib_cache: Path | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
    force: bool = False,
    verbose: bool = False,
) -> Path:
    """Build (or reuse) the engine for this ONNX on this GPU; returns the .engine path.

    INT8 is explicit when the ONNX has QuantizeLinear/DequantizeLinear nodes; otherwise it needs a
    calibration cache (edge_ad.deploy.trt_cache format) that is replayed without calibration data.
    The build record (edge_ad.runtime.tensorrt.build_record_path) is written after the engine, so a cached
    engine counts only when its record is there too.
    """
    _check_precision(precision)
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise EdgeAdError(f"ONNX model not found: {onnx_path}")
    if workspace_mb <= 0:
        raise EdgeAdError(f"workspace must be a positive number of MiB, got {workspace_mb}")
    if dla_core is not None and precision == "fp32":
        raise EdgeAdError("the DLA runs fp16 or int8 only: use --precision fp16 or int8 with --dla")
    explicit_int8 = has_qdq(onnx_path)
    if explicit_int8 and precision != "int8":
        raise EdgeAdError(
            f"{onnx_path.name} has QuantizeLinear/DequantizeLinear nodes (an INT8 model): build it with "
            "--precision int8, or use the float ONNX for fp16/fp32"
        )

    parsed_cache = None
    if precision == "int8" and not explicit_int8:
        if calib_cache is None:
            raise EdgeAdError(
                f"INT8 from {onnx_path.name} (no Q/DQ nodes) needs a calibration cache: pass --calib-cache "
                "(written by edge_ad quantize), or build from the QDQ ONNX"
            )
        parsed_cache = calib_format.read_cache(calib_cache)

    trt = import_tensorrt()
    version = trt.__version__
    cache_text, algorithm = "", calib_format.DEFAULT_ALGORITHM
    if parsed_cache is not None:
        algorithm = parsed_cache.algorithm
        parsed_cache.version_tag = calib_format.version_tag(version)  # TensorRT ignores another version's cache
        cache_text = calib_format.format_cache(parsed_cache)

    device = gpu_name()
    onnx_bytes = onnx_path.read_bytes()
    key = engine_cache_key(onnx_bytes, version, device, precision, dla_core, extra=cache_text.encode())
    engine_path = out_dir / engine_file_name(onnx_path.stem, precision, dla_core, key)
    record_path = build_record_path(engine_path)
    if engine_path.is_file() and not force:
        if record_path.is_file():
            return engine_path
        log.info("%s has no build record %s (an interrupted or older build): rebuilding", engine_path.name,
                 record_path.name)

    logger = make_logger(trt, verbose)
    serialized = _build_serialized(
        trt, logger, onnx_path, precision, explicit_int8, cache_text, algorithm, workspace_mb, dla_core
    )
    atomic_write(engine_path, bytes(serialized))
    record = {
        "key": key,
        "engine": engine_path.name,
        "onnx": onnx_path.name,
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "trt_version": version,
        "gpu_name": device,
        "precision": precision,
        "int8_mode": ("explicit" if explicit_int8 else "calibration cache") if precision == "int8" else None,
        "dla_core": dla_core,
        "workspace_mb": workspace_mb,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(record_path, record)
    return engine_path


def _build_serialized(trt, logger, onnx_path: Path, precision: str, explicit_int8: bool, cache_text: str,
                      algorithm: str, workspace_mb: int, dla_core: int | None):
    """Parse and build; every failure becomes one EdgeAdError line."""
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # pybind returns nullptr when CUDA cannot start
        raise EdgeAdError(f"TensorRT could not start a builder (no usable NVIDIA GPU?): {exc}") from None
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        lacking = check_onnx_ops(onnx_path, trt.__version__)
        hint = f"; ops this TensorRT lacks: {', '.join(lacking)}" if lacking else ""
        raise EdgeAdError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {' | '.join(errors[:3])}{hint}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << MIB_SHIFT)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without scales fall back to fp16
    calibrator = None
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if not explicit_int8:
            calibrator = make_cache_calibrator(trt, cache_text.encode(), algorithm)
            config.int8_calibrator = calibrator
    if dla_core is not None:
        available = builder.num_DLA_cores
        if not 0 <= dla_core < available:
            raise EdgeAdError(f"DLA core {dla_core} does not exist: this device has {available} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    serialized = builder.build_serialized_network(network, config)
    del calibrator  # TensorRT only borrows it; keep it alive until the build returns
    if serialized is None:
        if is_oom(logger.errors):
            raise oom_error(f"building {onnx_path.name}")
        detail = " | ".join(logger.errors[-3:]) or "no error message"
        raise EdgeAdError(f"TensorRT failed to build {onnx_path.name} ({precision}): {detail}")
    return serialized
