"""TensorRT session side: run a prebuilt engine on the station, refusing one built for another TensorRT or GPU.

Building is deploy/engine.py's job, so the runtime never depends on deploy; TensorRT 8.6 / 10.x with
cuda-python, both imported lazily, and never torch.
"""

from __future__ import annotations

import ctypes
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_ad.errors import EdgeAdError

log = logging.getLogger(__name__)

# The TensorRT floor, defined here only (deploy/trt_ops.py checks graphs against it, the doctor reports it): the
# release JetPack 6.0 ships; JetPack 6.1/6.2 ship 10.3. Parsers and this check match on major.minor.
MIN_TENSORRT_VERSION = "8.6.1"
MIN_TENSORRT = tuple(int(p) for p in MIN_TENSORRT_VERSION.split(".")[:2])
JETSON_MODEL_FILE = Path("/proc/device-tree/model")
BUILD_RECORD_SUFFIX = ".build.json"  # model.engine -> model.build.json
LEGACY_RECORD_SUFFIX = ".json"  # edge_ad before the split wrote model.engine -> model.json (the manifest's name)
LEGACY_BUNDLE_MANIFEST = "model.json"  # ... and the calibrate stage merged the record into the bundle's manifest
LEGACY_RECORD_KEY = "trt_version"  # a legacy .json is a build record only when it has this key
BUILD_HINT = "rebuild it: edge_ad export MODEL.onnx --format engine --precision fp16|int8"

TRT_MISSING = (
    "TensorRT not installed: on a Jetson install JetPack's TensorRT Python bindings "
    "(sudo apt-get install python3-libnvinfer) and use a venv made with --system-site-packages; "
    "on a desktop NVIDIA GPU: pip install tensorrt"
)
CUDA_MISSING = "no CUDA Python bindings for the TensorRT buffers: pip install cuda-python (part of edge_ad[jetson])"
_OOM_MARKERS = ("out of memory", "outofmemory", "cudaerrormemoryallocation", "could not be allocated")
_NO_GPU_ERRORS = ("cudaErrorInsufficientDriver", "cudaErrorNoDevice")


# ----------------------------------------------------------------------------- versions and errors


def check_tensorrt_version(version: str) -> str:
    """`version` when edge_ad supports it (TensorRT 8.6 or newer), else EdgeAdError naming it."""
    match = re.match(r"(\d+)\.(\d+)", str(version))
    if match is None:
        raise EdgeAdError(f"cannot read the installed TensorRT version {version!r}")
    if (int(match.group(1)), int(match.group(2))) < MIN_TENSORRT:
        floor = ".".join(map(str, MIN_TENSORRT))
        raise EdgeAdError(
            f"TensorRT {version} is installed but edge_ad needs TensorRT {floor} or 10.x: flash JetPack 6 "
            "(TensorRT 8.6 / 10.3), or on a desktop GPU pip install tensorrt"
        )
    return str(version)


def import_tensorrt():
    """The tensorrt module, or EdgeAdError naming the package to install (or the too-old version found)."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: bindings present but libnvinfer missing
        raise EdgeAdError(f"{TRT_MISSING} ({exc})") from None
    check_tensorrt_version(trt.__version__)
    return trt


def tensorrt_version() -> str | None:
    """The installed TensorRT version when edge_ad can use it; None when it is absent or older than 8.6."""
    try:
        return import_tensorrt().__version__
    except EdgeAdError:
        return None


def make_logger(trt, verbose: bool = False):
    """A TensorRT logger that prints warnings (or everything) and keeps errors (`.errors`) for our messages."""
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


def is_oom(messages: list[str]) -> bool:
    """Whether TensorRT's error messages say it ran out of memory."""
    return any(marker in msg.lower() for msg in messages for marker in _OOM_MARKERS)


def oom_error(what: str) -> EdgeAdError:
    """The one out-of-GPU-memory message, with what to do about it."""
    return EdgeAdError(
        f"out of GPU memory while {what}: stop other GPU programs (e.g. a running edge_ad service), "
        "lower --workspace-mb, or use a smaller model / int8"
    )


# ----------------------------------------------------------------------------- build record


def build_record_path(engine_path: str | Path) -> Path:
    """The build record beside an engine: model.engine -> model.build.json (never the manifest model.json)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.stem + BUILD_RECORD_SUFFIX)


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_build_record(engine_path: str | Path) -> dict | None:
    """The record the engine build (deploy/engine.py) wrote beside the engine; None when absent or unreadable."""
    return _read_json(build_record_path(engine_path))


def legacy_build_record(engine_path: str | Path) -> tuple[dict, Path] | None:
    """(record, file) from an older edge_ad: <engine>.json, else model.json beside it, if it has trt_version."""
    engine_path = Path(engine_path)
    candidates = [engine_path.with_suffix(LEGACY_RECORD_SUFFIX), engine_path.parent / LEGACY_BUNDLE_MANIFEST]
    for path in dict.fromkeys(candidates):  # model.engine: both are model.json
        doc = _read_json(path)
        if doc is None or LEGACY_RECORD_KEY not in doc:
            continue
        nested = doc.get("engine")  # the calibrate stage kept the full record under "engine"
        if isinstance(nested, dict) and LEGACY_RECORD_KEY in nested:
            return nested, path
        return doc, path
    return None


def find_build_record(engine_path: str | Path) -> dict | None:
    """The engine's build record; falls back to a legacy one (logging one INFO line), else None."""
    record = read_build_record(engine_path)
    if record is not None:
        return record
    legacy = legacy_build_record(engine_path)
    if legacy is None:
        return None
    record, path = legacy
    name = Path(engine_path).name
    log.info("TensorRT engine %s has a legacy build record in %s (written by an older edge_ad); %s --force "
             "(or rerun calibrate) to get %s", name, path.name, BUILD_HINT, build_record_path(engine_path).name)
    return record


def stale_reason(record: dict | None, trt_version: str, gpu_name: str) -> str | None:
    """Why an engine built as `record` says cannot run here, or None when it should."""
    if not record:
        return None
    built_trt, built_gpu = record.get("trt_version"), record.get("gpu_name")
    if built_trt and built_trt != trt_version:
        return f"it was built with TensorRT {built_trt} and this is TensorRT {trt_version}"
    if built_gpu and gpu_name and built_gpu != gpu_name:
        return f"it was built on {built_gpu} and this GPU is {gpu_name}"
    return None


# ----------------------------------------------------------------------------- CUDA memory


class CudaRuntime:
    """CUDA runtime calls through cuda-python (cuda.bindings.runtime; `from cuda import cudart` before 12.6)."""

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
                raise oom_error(what)
            if name in _NO_GPU_ERRORS:
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
        count = int(np.prod(shape))
        nbytes = max(count * dtype.itemsize, 1)
        ptr = int(self._call(self.rt.cudaMallocHost(nbytes), "allocating pinned host memory"))
        self._host.append(ptr)
        buf = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)

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
        """(free, total) bytes on the current GPU."""
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


def open_cuda() -> CudaRuntime:
    """cuda-python's runtime API, or EdgeAdError naming the package to install."""
    try:
        return CudaRuntime()
    except ImportError:
        raise EdgeAdError(CUDA_MISSING) from None


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


# ----------------------------------------------------------------------------- run


class TensorRTSession:
    """One deserialized engine with its buffers; run() takes NCHW float32 and returns host copies of the outputs."""

    def __init__(self, engine_path: str | Path, verbose: bool = False):
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise EdgeAdError(f"TensorRT engine not found: {self.engine_path}; {BUILD_HINT}")
        trt = import_tensorrt()
        self._cuda = open_cuda()
        self.build_record: dict = find_build_record(self.engine_path) or {}
        try:
            self._load(trt, verbose)
        except BaseException:
            self.close()
            raise

    def _load(self, trt, verbose: bool) -> None:
        reason = stale_reason(self.build_record, trt.__version__, gpu_name())
        if reason:
            raise EdgeAdError(f"TensorRT engine {self.engine_path.name} is stale: {reason}; {BUILD_HINT}")
        self._logger = make_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            if is_oom(self._logger.errors):
                raise oom_error(f"loading {self.engine_path.name}")
            said = " | ".join(self._logger.errors[-2:]) or "no message"
            raise EdgeAdError(
                f"cannot load TensorRT engine {self.engine_path.name}: built by another TensorRT version or "
                f"GPU, or corrupt (TensorRT: {said}); {BUILD_HINT}"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise oom_error(f"creating an execution context for {self.engine_path.name}")
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
            self._context.set_tensor_address(name, self._device[name])

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
        self._cuda.to_device(self._device[self.input_name], host_in, self._stream)
        if not self._context.execute_async_v3(self._stream):
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
        for attr in ("device_memory_size_v2", "device_memory_size"):  # _v2 from TensorRT 10.1
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
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        out.append((name, is_input, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name)))))
    return out
