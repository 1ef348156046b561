"""TensorRT backend: build a cached engine from the exported ONNX, run it with pinned host buffers.

Engines are specific to one TensorRT version and one GPU, so they are built on the device and cached
under a key of (ONNX bytes, TensorRT version, GPU, precision, DLA core). Works with TensorRT 8.5+
(name-based tensor API, execute_async_v3) and 10.x; TensorRT 8.4 and older fall back to bindings.
tensorrt and cuda-python (or pycuda) are imported only when a function needs them; this module never
imports torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.deploy import trt_cache as calib_format
from edge_ad.errors import EdgeAdError
from edge_ad.deploy.trt_ops import check_onnx_ops, has_qdq

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MB = 1024
ENGINE_SUFFIX = ".engine"
META_SUFFIX = ".json"
KEY_CHARS_IN_NAME = 16
JETSON_MODEL_FILE = Path("/proc/device-tree/model")
BUILD_HINT = "rebuild it: python tools/build_engine.py MODEL.onnx --precision fp16|int8"

TRT_MISSING = (
    "TensorRT not installed: on a Jetson install JetPack's TensorRT Python bindings "
    "(sudo apt-get install python3-libnvinfer) and use a venv made with --system-site-packages; "
    "on a desktop NVIDIA GPU: pip install tensorrt"
)
CUDA_MISSING = (
    "no CUDA Python bindings for the TensorRT buffers: pip install cuda-python "
    "(part of edge_ad[jetson]); pycuda works too when installed"
)
_OOM_MARKERS = ("out of memory", "outofmemory", "cudaerrormemoryallocation", "could not be allocated")
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


def engine_meta_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(META_SUFFIX)


def read_engine_meta(engine_path: str | Path) -> dict | None:
    """The JSON written beside an engine at build time, or None when absent or unreadable."""
    path = engine_meta_path(engine_path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stale_reason(meta: dict | None, trt_version: str, gpu_name: str) -> str | None:
    """Why an engine built as `meta` cannot run here, or None when it should."""
    if not meta:
        return None
    built_trt, built_gpu = meta.get("trt_version"), meta.get("gpu_name")
    if built_trt and built_trt != trt_version:
        return f"it was built with TensorRT {built_trt} and this is TensorRT {trt_version}"
    if built_gpu and gpu_name and built_gpu != gpu_name:
        return f"it was built on {built_gpu} and this GPU is {gpu_name}"
    return None


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise EdgeAdError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _is_oom(messages: list[str]) -> bool:
    return any(marker in msg.lower() for msg in messages for marker in _OOM_MARKERS)


def _oom_error(what: str) -> EdgeAdError:
    return EdgeAdError(
        f"out of GPU memory while {what}: stop other GPU programs (e.g. a running edge_ad service), "
        "lower --workspace-mb, or use a smaller model / int8"
    )


# ----------------------------------------------------------------------------- lazy imports


def import_tensorrt():
    """The tensorrt module, or EdgeAdError naming the package to install."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: bindings present but libnvinfer missing
        raise EdgeAdError(f"{TRT_MISSING} ({exc})") from None
    return trt


def tensorrt_version() -> str | None:
    """Installed TensorRT version, or None when it is not importable."""
    try:
        return import_tensorrt().__version__
    except EdgeAdError:
        return None


def _make_logger(trt, verbose: bool = False):
    """A TensorRT logger that prints warnings (or everything) and keeps errors for our messages."""
    show = trt.ILogger.Severity.VERBOSE if verbose else trt.ILogger.Severity.WARNING
    errors_up_to = int(trt.ILogger.Severity.ERROR)

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= errors_up_to:
                self.errors.append(str(msg))
            if int(severity) <= int(show):
                level = getattr(severity, "name", str(severity))
                print(f"[TensorRT] {level}: {msg}", file=sys.stderr)

    return _Logger()


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
            return 1

        def get_batch(self, names, p_str=None):
            return None  # no data: the cache must cover every tensor

        def read_calibration_cache(self):
            return self._cache

        def write_calibration_cache(self, cache):
            return None

    return CacheCalibrator()


# ----------------------------------------------------------------------------- CUDA memory


class _CudaPython:
    """CUDA runtime calls through cuda-python (cuda.bindings.runtime; cuda.cudart before 12.6)."""

    backend = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # raises ImportError when cuda-python is absent
        self.rt = rt
        self._host: list[int] = []
        self._device: list[int] = []
        self._streams: list[Any] = []

    def _call(self, result, what: str):
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if int(err) != 0:
            name = getattr(err, "name", str(err))
            if name == "cudaErrorMemoryAllocation":
                raise _oom_error(what)
            if name in ("cudaErrorInsufficientDriver", "cudaErrorNoDevice"):
                raise EdgeAdError(f"no usable NVIDIA GPU while {what} ({name}): check the driver (nvidia-smi)")
            raise EdgeAdError(f"CUDA error while {what}: {name}")
        return rest[0] if len(rest) == 1 else rest

    def stream(self) -> int:
        stream = self._call(self.rt.cudaStreamCreate(), "creating a CUDA stream")
        self._streams.append(stream)
        return int(stream)

    def host_array(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """Page-locked host memory viewed as a numpy array (fast async copies)."""
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = int(self._call(self.rt.cudaMallocHost(nbytes), "allocating pinned host memory"))
        self._host.append(ptr)
        buf = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def device_alloc(self, nbytes: int) -> int:
        ptr = int(self._call(self.rt.cudaMalloc(max(nbytes, 1)), "allocating GPU memory"))
        self._device.append(ptr)
        return ptr

    def to_device(self, dptr: int, host: np.ndarray, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes, kind, stream), "copying to the GPU")

    def to_host(self, host: np.ndarray, dptr: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes, kind, stream), "copying from the GPU")

    def synchronize(self, stream: int) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream), "waiting for the GPU")

    def mem_info(self) -> tuple[int, int]:
        free, total = self._call(self.rt.cudaMemGetInfo(), "reading GPU memory")
        return int(free), int(total)

    def device_name(self) -> str:
        prop = self._call(self.rt.cudaGetDeviceProperties(0), "reading the GPU name")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return f"{name.strip(chr(0)).strip()} sm_{prop.major}{prop.minor}"

    def close(self) -> None:
        for ptr in self._device:
            self.rt.cudaFree(ptr)
        for ptr in self._host:
            self.rt.cudaFreeHost(ptr)
        for stream in self._streams:
            self.rt.cudaStreamDestroy(stream)
        self._device, self._host, self._streams = [], [], []


class _PyCuda:
    """The same calls through pycuda, for images that ship it instead of cuda-python."""

    backend = "pycuda"

    def __init__(self):
        import pycuda.autoinit  # noqa: F401  creates the context on GPU 0
        import pycuda.driver as cuda

        self.cuda = cuda
        self._keep: list[Any] = []

    def stream(self) -> int:
        stream = self.cuda.Stream()
        self._keep.append(stream)
        return stream

    def host_array(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def device_alloc(self, nbytes: int) -> int:
        try:
            mem = self.cuda.mem_alloc(max(nbytes, 1))
        except self.cuda.MemoryError:
            raise _oom_error("allocating GPU memory") from None
        self._keep.append(mem)
        return int(mem)

    def to_device(self, dptr: int, host: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(dptr, host, stream)

    def to_host(self, host: np.ndarray, dptr: int, stream) -> None:
        self.cuda.memcpy_dtoh_async(host, dptr, stream)

    def synchronize(self, stream) -> None:
        stream.synchronize()

    def mem_info(self) -> tuple[int, int]:
        free, total = self.cuda.mem_get_info()
        return int(free), int(total)

    def device_name(self) -> str:
        dev = self.cuda.Device(0)
        major, minor = dev.compute_capability()
        return f"{dev.name()} sm_{major}{minor}"

    def close(self) -> None:
        self._keep = []


def open_cuda():
    """cuda-python when importable, else pycuda, else EdgeAdError naming the package."""
    try:
        return _CudaPython()
    except ImportError:
        pass
    try:
        return _PyCuda()
    except ImportError:
        raise EdgeAdError(CUDA_MISSING) from None


def _stream_handle(stream) -> int:
    return stream if isinstance(stream, int) else int(stream.handle)


def gpu_name() -> str:
    """CUDA device name and compute capability, plus the Jetson module (Orin Nano vs AGX Orin)."""
    cuda = open_cuda()
    try:
        name = cuda.device_name()
    finally:
        cuda.close()
    try:
        model = JETSON_MODEL_FILE.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        model = ""
    return f"{name} [{model}]" if model else name


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
    if engine_path.is_file() and not force:
        return engine_path

    logger = _make_logger(trt, verbose)
    serialized = _build_serialized(
        trt, logger, onnx_path, precision, explicit_int8, cache_text, algorithm, workspace_mb, dla_core
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    meta = {
        "key": key,
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
    engine_meta_path(engine_path).write_text(json.dumps(meta, indent=2) + "\n")
    return engine_path


def _build_serialized(trt, logger, onnx_path, precision, explicit_int8, cache_text, algorithm, workspace_mb, dla_core):
    """Parse and build; every failure becomes one EdgeAdError line."""
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # pybind returns nullptr when CUDA cannot start
        raise EdgeAdError(f"TensorRT could not start a builder (no usable NVIDIA GPU?): {exc}") from None
    major = int(trt.__version__.split(".")[0])
    # Explicit batch is the only mode from TensorRT 10 on, where the flag is deprecated.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        lacking = check_onnx_ops(onnx_path, trt.__version__)
        hint = f"; ops this TensorRT lacks: {', '.join(lacking)}" if lacking else ""
        raise EdgeAdError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {' | '.join(errors[:3])}{hint}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
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
        if _is_oom(logger.errors):
            raise _oom_error(f"building {onnx_path.name}")
        detail = " | ".join(logger.errors[-3:]) or "no error message"
        raise EdgeAdError(f"TensorRT failed to build {onnx_path.name} ({precision}): {detail}")
    return serialized


# ----------------------------------------------------------------------------- run


class TensorRTSession:
    """One deserialized engine with its buffers; run() takes NCHW float32 and returns host copies of the outputs."""

    def __init__(self, engine_path: str | Path, verbose: bool = False):
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise EdgeAdError(f"TensorRT engine not found: {self.engine_path}; {BUILD_HINT}")
        trt = import_tensorrt()
        self._trt = trt
        self._cuda = open_cuda()
        self.meta = read_engine_meta(self.engine_path) or {}
        try:
            self._load(trt, verbose)
        except BaseException:
            self.close()
            raise

    def _load(self, trt, verbose: bool) -> None:
        reason = stale_reason(self.meta, trt.__version__, gpu_name())
        if reason:
            raise EdgeAdError(f"TensorRT engine {self.engine_path.name} is stale: {reason}; {BUILD_HINT}")
        self._logger = _make_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            if _is_oom(self._logger.errors):
                raise _oom_error(f"loading {self.engine_path.name}")
            said = " | ".join(self._logger.errors[-2:]) or "no message"
            raise EdgeAdError(
                f"cannot load TensorRT engine {self.engine_path.name}: built by another TensorRT version or "
                f"GPU, or corrupt (TensorRT: {said}); {BUILD_HINT}"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise _oom_error(f"creating an execution context for {self.engine_path.name}")
        tensors = _io_tensors(trt, self._engine)
        inputs = [t for t in tensors if t[1]]
        if len(inputs) != 1:
            count = len(inputs)
            raise EdgeAdError(f"engine {self.engine_path.name} has {count} inputs; edge_ad models have one ('image')")
        for name, _, shape, _ in tensors:
            if any(d < 0 for d in shape):
                raise EdgeAdError(
                    f"engine tensor {name!r} has a dynamic shape {shape}: export the ONNX with a static (1,3,H,W) input"
                )
        self.input_name, self.input_shape = inputs[0][0], inputs[0][2]
        self.output_names = [t[0] for t in tensors if not t[1]]
        self._stream = self._cuda.stream()
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        for name, _, shape, dtype in tensors:
            self._host[name] = self._cuda.host_array(shape, dtype)
            self._device[name] = self._cuda.device_alloc(self._host[name].nbytes)
        self._v3 = hasattr(self._context, "execute_async_v3")
        if self._v3:
            for name, ptr in self._device.items():
                self._context.set_tensor_address(name, ptr)
        else:  # TensorRT < 8.5: bindings in engine order
            self._bindings = [self._device[t[0]] for t in tensors]

    @property
    def input_dtype(self) -> np.dtype:
        return self._host[self.input_name].dtype

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs in output_names order, copied to fresh host arrays."""
        x = np.asarray(x)
        if tuple(x.shape) != tuple(self.input_shape):
            raise EdgeAdError(f"input shape {tuple(x.shape)} does not match the engine's {tuple(self.input_shape)}")
        host_in = self._host[self.input_name]
        np.copyto(host_in, x, casting="same_kind")
        stream = _stream_handle(self._stream)
        self._cuda.to_device(self._device[self.input_name], host_in, self._stream)
        if self._v3:
            ok = self._context.execute_async_v3(stream)
        else:
            ok = self._context.execute_async_v2(bindings=self._bindings, stream_handle=stream)
        if not ok:
            raise EdgeAdError(f"TensorRT inference failed: {' | '.join(self._logger.errors[-2:]) or 'no message'}")
        for name in self.output_names:
            self._cuda.to_host(self._host[name], self._device[name], self._stream)
        self._cuda.synchronize(self._stream)
        return [self._host[name].copy() for name in self.output_names]

    def gpu_memory(self) -> tuple[int, int]:
        """(free, total) bytes on the GPU, for benchmarks and the doctor."""
        return self._cuda.mem_info()

    def engine_memory_bytes(self) -> int | None:
        """Activation memory the engine needs beyond its weights, when TensorRT reports it."""
        engine = getattr(self, "_engine", None)
        for attr in ("device_memory_size_v2", "device_memory_size"):
            value = getattr(engine, attr, None)
            if value is not None:
                return int(value)
        return None

    def close(self) -> None:
        """Free GPU buffers; the session is unusable afterwards."""
        for attr in ("_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
        cuda = getattr(self, "_cuda", None)
        if cuda is not None:
            cuda.close()
            self._cuda = None

    def __enter__(self) -> TensorRTSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _io_tensors(trt, engine) -> list[tuple[str, bool, tuple, np.dtype]]:
    """(name, is_input, shape, numpy dtype) for every engine I/O tensor, in engine order."""
    out = []
    if hasattr(engine, "num_io_tensors"):
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            out.append((name, is_input, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name)))))
    else:
        for i in range(engine.num_bindings):
            shape = tuple(int(d) for d in engine.get_binding_shape(i))
            dtype = np.dtype(trt.nptype(engine.get_binding_dtype(i)))
            out.append((engine.get_binding_name(i), bool(engine.binding_is_input(i)), shape, dtype))
    return out
