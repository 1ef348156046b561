"""TensorRT build side (edge_ad.deploy.engine) and session side (edge_ad.runtime.tensorrt): pure parts everywhere
(cache key, build records, calibration cache, op checker, version gate, CLI exit codes, the session against a fake
tensorrt); engine build and inference only where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_ad.deploy import engine as trt_build
from edge_ad.deploy import trt_cache as calib_cache
from edge_ad.deploy.engine import build_engine, engine_cache_key, engine_file_name, network_flags
from edge_ad.deploy.trt_ops import check_onnx_ops, has_qdq, supported_ops
from edge_ad.cli import main as cli_main
from edge_ad.errors import EdgeAdError
from edge_ad.runtime import tensorrt as trt_backend
from edge_ad.runtime.tensorrt import (
    TensorRTSession,
    build_record_path,
    check_tensorrt_version,
    find_build_record,
    read_build_record,
    stale_reason,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
OPSET = 17
IR_VERSION = 8  # what opset 17 needs; newer onnx writes a newer IR that older onnxruntime (Jetson wheels) rejects
NEEDS_TRT = "TensorRT not installed: needs a Jetson or NVIDIA GPU"


def _trt_available() -> bool:
    if trt_backend.tensorrt_version() is None:
        return False
    try:
        trt_backend.gpu_name()
    except EdgeAdError:
        return False
    return True


requires_trt = pytest.mark.skipif(not _trt_available(), reason=NEEDS_TRT)


# ----------------------------------------------------------------------------- test graphs


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def distance_map_model(qdq: bool = False, resize_mode: str = "linear", zero_point: int = 0,
                       zp_type=np.int8) -> onnx.ModelProto:
    """image (1,3,H,W) -> two convs -> 1 - cos over channels -> Resize to input size -> map0, like export.py."""
    rng = np.random.default_rng(0)
    inits = [
        _init("w1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2),
        _init("b1", np.zeros(8, np.float32)),
        _init("w2", rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.2),
        _init("axes", np.array([1], np.int64)),
        _init("eps", np.array(1e-6, np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("scales", np.array([1, 1, 2, 2], np.float32)),
    ]
    nodes = []
    x = "image"
    if qdq:
        inits += [_init("q_scale", np.array(0.02, np.float32)), _init("q_zp", np.array(zero_point, zp_type))]
        nodes += [
            helper.make_node("QuantizeLinear", ["image", "q_scale", "q_zp"], ["image_q"]),
            helper.make_node("DequantizeLinear", ["image_q", "q_scale", "q_zp"], ["image_dq"]),
        ]
        x = "image_dq"
    nodes += [
        helper.make_node("Conv", [x, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["b"]),
        helper.make_node("Mul", ["a", "b"], ["ab"]),
        helper.make_node("ReduceSum", ["ab", "axes"], ["dot"], keepdims=1),
        helper.make_node("Mul", ["a", "a"], ["aa"]),
        helper.make_node("ReduceSum", ["aa", "axes"], ["na2"], keepdims=1),
        helper.make_node("Mul", ["b", "b"], ["bb"]),
        helper.make_node("ReduceSum", ["bb", "axes"], ["nb2"], keepdims=1),
        helper.make_node("Mul", ["na2", "nb2"], ["n2"]),
        helper.make_node("Sqrt", ["n2"], ["n"]),
        helper.make_node("Add", ["n", "eps"], ["n_eps"]),
        helper.make_node("Div", ["dot", "n_eps"], ["cos"]),
        helper.make_node("Sub", ["one", "cos"], ["dist"]),
        helper.make_node("Resize", ["dist", "", "scales"], ["map0"], mode=resize_mode),
    ]
    graph = helper.make_graph(
        nodes,
        "distance_map",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("map0", TensorProto.FLOAT, [1, 1, SIZE, SIZE])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def with_extra_node(model: onnx.ModelProto, node: onnx.NodeProto, opset: int | None = None) -> onnx.ModelProto:
    """Copy of `model` with one more node hanging off the image (its output unused)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.append(node)
    if opset is not None:
        out.opset_import[0].version = opset
    for domain in {node.domain} - {"", "ai.onnx"} - {o.domain for o in out.opset_import}:
        out.opset_import.append(helper.make_opsetid(domain, 1))
    return out


@pytest.fixture(scope="module")
def float_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "rd_small.onnx"
    onnx.save(distance_map_model(), str(path))
    return path


@pytest.fixture(scope="module")
def qdq_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "rd_small_qdq.onnx"
    onnx.save(distance_map_model(qdq=True), str(path))
    return path


def _ort_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})


# ----------------------------------------------------------------------------- engine cache key


def test_cache_key_is_stable_and_changes_with_every_input():
    base = dict(onnx_bytes=b"model", trt_version="8.6.2", gpu_name="Orin sm_87", precision="fp16", dla_core=None)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)
    assert len(key) == 64 and int(key, 16) >= 0
    variants = [
        {"onnx_bytes": b"model2"},
        {"trt_version": "10.3.0"},
        {"gpu_name": "NVIDIA H100 sm_90"},
        {"precision": "int8"},
        {"precision": "fp32"},
        {"dla_core": 0},
        {"dla_core": 1},
    ]
    keys = {key}
    for change in variants:
        keys.add(engine_cache_key(**{**base, **change}))
    keys.add(engine_cache_key(**base, extra=b"TRT-8602-EntropyCalibration2\n"))
    assert len(keys) == len(variants) + 2, "every input must change the key"


def test_cache_key_rejects_unknown_precision():
    with pytest.raises(EdgeAdError, match="precision"):
        engine_cache_key(b"m", "8.6", "gpu", "bf16", None)


def test_engine_file_name_and_stale_reason():
    key = "ab" * 32
    assert engine_file_name("rd", "int8", None, key) == f"rd.int8.{key[:16]}.engine"
    assert engine_file_name("rd", "fp16", 1, key) == f"rd.fp16.dla1.{key[:16]}.engine"
    meta = {"trt_version": "8.6.2", "gpu_name": "Orin sm_87 [AGX Orin]"}
    assert stale_reason(meta, "8.6.2", "Orin sm_87 [AGX Orin]") is None
    assert "TensorRT 8.6.2" in stale_reason(meta, "10.3.0", "Orin sm_87 [AGX Orin]")
    assert "Orin Nano" in stale_reason(meta, "8.6.2", "Orin sm_87 [Orin Nano]")
    assert stale_reason(None, "10.3.0", "x") is None


# ----------------------------------------------------------------------------- build record


def test_build_record_sits_beside_the_engine_and_never_is_the_manifest(tmp_path):
    assert build_record_path(tmp_path / "model.engine") == tmp_path / "model.build.json"
    assert build_record_path("e/model.fp16.ab12.engine") == Path("e/model.fp16.ab12.build.json")
    assert build_record_path("rd.int8.dla0.0123456789abcdef.engine").name == "rd.int8.dla0.0123456789abcdef.build.json"
    engine = tmp_path / "model.engine"
    assert read_build_record(engine) is None
    build_record_path(engine).write_text("{not json")
    assert read_build_record(engine) is None
    build_record_path(engine).write_text('["a list"]')
    assert read_build_record(engine) is None
    build_record_path(engine).write_text(json.dumps({"trt_version": "10.3.0", "gpu_name": "Orin"}))
    assert read_build_record(engine) == {"trt_version": "10.3.0", "gpu_name": "Orin"}


LEGACY = {"trt_version": "8.6.2", "gpu_name": "Orin sm_87", "precision": "int8"}
MANIFEST = {"data": {}, "scoring": {}, "threshold": 0.5}


def _legacy_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == trt_backend.__name__ and "legacy" in r.getMessage()]


def test_legacy_record_beside_a_key_named_engine(tmp_path, caplog):
    engine = tmp_path / "rd.fp16.ab12.engine"
    (tmp_path / "rd.fp16.ab12.json").write_text(json.dumps(LEGACY))
    (tmp_path / "model.json").write_text(json.dumps({**MANIFEST, "trt_version": "7.0"}))  # the first match wins
    with caplog.at_level(logging.INFO, logger=trt_backend.__name__):
        assert find_build_record(engine) == LEGACY
    (line,) = _legacy_lines(caplog)
    assert "rd.fp16.ab12.engine" in line and "rd.fp16.ab12.json" in line
    assert "rd.fp16.ab12.build.json" in line and "edge_ad export MODEL.onnx --format engine" in line


def test_legacy_record_merged_into_the_bundle_manifest(tmp_path, caplog):
    # What the calibrate stage wrote before the split: model.json = manifest + trt_version/gpu_name + "engine".
    engine = tmp_path / "model.engine"
    (tmp_path / "model.json").write_text(json.dumps({**MANIFEST, "trt_version": "8.6.2", "gpu_name": "Orin sm_87",
                                                     "engine": LEGACY}))
    with caplog.at_level(logging.INFO, logger=trt_backend.__name__):
        assert find_build_record(engine) == LEGACY
    assert len(_legacy_lines(caplog)) == 1
    # Merged top-level keys without the nested record still count.
    (tmp_path / "model.json").write_text(json.dumps({**MANIFEST, "trt_version": "8.6.2"}))
    assert find_build_record(engine)["trt_version"] == "8.6.2"
    # A key-named engine falls back to model.json in its folder.
    assert find_build_record(tmp_path / "model.fp16.ab12.engine")["trt_version"] == "8.6.2"


def test_plain_manifest_is_not_a_build_record(tmp_path, caplog):
    engine = tmp_path / "model.engine"
    (tmp_path / "model.json").write_text(json.dumps(MANIFEST))
    with caplog.at_level(logging.INFO, logger=trt_backend.__name__):
        assert find_build_record(engine) is None
        build_record_path(engine).write_text(json.dumps(LEGACY))
        (tmp_path / "model.json").write_text(json.dumps({**MANIFEST, "trt_version": "7.0"}))
        assert find_build_record(engine) == LEGACY  # the new record wins, silently
    assert _legacy_lines(caplog) == []


# ----------------------------------------------------------------------------- versions and imports


def _fake_tensorrt(version: str) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    return trt


def test_tensorrt_older_than_8_6_is_refused_by_name(monkeypatch):
    for ok in ("8.6.1", "8.6.2.3", "10.0.1", "10.3.0.30"):
        assert check_tensorrt_version(ok) == ok
    for old in ("8.5.2.2", "8.4.1", "7.1.3"):
        with pytest.raises(EdgeAdError, match=rf"TensorRT {old} is installed.*8\.6 or 10\.x"):
            check_tensorrt_version(old)
    with pytest.raises(EdgeAdError, match="cannot read"):
        check_tensorrt_version("unknown")
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("8.5.2.2"))
    with pytest.raises(EdgeAdError, match="TensorRT 8.5.2.2 is installed"):
        trt_backend.import_tensorrt()
    assert trt_backend.tensorrt_version() is None
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.3.0"))
    assert trt_backend.tensorrt_version() == "10.3.0"


def test_doctor_flags_an_old_tensorrt(monkeypatch):
    from edge_ad.station import doctor

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("8.5.2.2"))
    check = doctor.check_tensorrt()
    assert not check.ok and check.optional and "8.5.2.2" in check.detail and "JetPack 6" in check.fix
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.3.0"))
    assert doctor.check_tensorrt().ok


def test_network_flags_per_tensorrt_major():
    flag_enum = types.SimpleNamespace(EXPLICIT_BATCH=0)
    assert network_flags(types.SimpleNamespace(__version__="10.3.0", NetworkDefinitionCreationFlag=flag_enum)) == 0
    assert network_flags(types.SimpleNamespace(__version__="10.0.1")) == 0  # no flag needed, none read
    assert network_flags(types.SimpleNamespace(__version__="8.6.2", NetworkDefinitionCreationFlag=flag_enum)) == 1


def test_cuda_python_missing_names_the_package(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail
    with pytest.raises(EdgeAdError, match="pip install cuda-python") as info:
        trt_backend.open_cuda()
    assert "pycuda" not in str(info.value)


def test_session_module_does_not_import_deploy_torch_or_tensorrt():
    code = ("import sys, edge_ad.runtime.tensorrt; print(sorted(m for m in sys.modules"
            " if m.startswith('edge_ad.deploy') or m.split('.')[0] in ('torch', 'tensorrt', 'cuda', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- build_engine without a GPU


@pytest.fixture
def fake_builder(monkeypatch):
    """build_engine with TensorRT, the GPU and the TensorRT build replaced: counts the builds it would run."""
    builds = []

    def build(trt, logger, onnx_path, precision, explicit_int8, cache_text, algorithm, workspace_mb, dla_core):
        builds.append((precision, explicit_int8, cache_text))
        return b"serialized engine"

    monkeypatch.setattr(trt_build, "import_tensorrt", lambda: _fake_tensorrt("10.3.0"))
    monkeypatch.setattr(trt_build, "gpu_name", lambda: "Fake GPU sm_87")
    monkeypatch.setattr(trt_build, "make_logger", lambda trt, verbose=False: None)
    monkeypatch.setattr(trt_build, "_build_serialized", build)
    return builds


def test_build_writes_engine_and_build_record_and_reuses_them(float_onnx, tmp_path, fake_builder):
    engine = build_engine(float_onnx, tmp_path, precision="fp16")
    assert engine.parent == tmp_path and engine.name.startswith("rd_small.fp16.") and engine.suffix == ".engine"
    assert engine.read_bytes() == b"serialized engine"
    record = read_build_record(engine)
    assert build_record_path(engine).name == engine.stem + ".build.json"
    assert not engine.with_suffix(".json").exists(), "the build record must not take the manifest's name"
    assert record["trt_version"] == "10.3.0" and record["gpu_name"] == "Fake GPU sm_87"
    assert record["precision"] == "fp16" and record["onnx"] == float_onnx.name and record["engine"] == engine.name
    assert record["key"].startswith(engine.name.split(".")[2]) and record["int8_mode"] is None
    assert len(fake_builder) == 1
    assert build_engine(float_onnx, tmp_path, precision="fp16") == engine and len(fake_builder) == 1
    build_record_path(engine).unlink()  # an interrupted build: the engine without its record is not trusted
    assert build_engine(float_onnx, tmp_path, precision="fp16") == engine and len(fake_builder) == 2
    assert read_build_record(engine)["precision"] == "fp16"
    assert build_engine(float_onnx, tmp_path, precision="fp16", force=True) == engine and len(fake_builder) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([engine.name, build_record_path(engine).name])


def test_build_int8_from_cache_retags_it_and_records_the_mode(float_onnx, qdq_onnx, tmp_path, fake_builder):
    cache = calib_cache.write_cache(tmp_path / "calib.cache", {"image": 0.05}, trt_version="8.6.1")
    engine = build_engine(float_onnx, tmp_path / "out", precision="int8", calib_cache=cache)
    (_, explicit, cache_text), = fake_builder
    assert not explicit and cache_text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert read_build_record(engine)["int8_mode"] == "calibration cache"
    explicit_engine = build_engine(qdq_onnx, tmp_path / "out", precision="int8")
    assert fake_builder[-1][1] and read_build_record(explicit_engine)["int8_mode"] == "explicit"


# ----------------------------------------------------------------------------- TensorRTSession against a fake TensorRT


FAKE_ENGINE = b"fake engine"
FAKE_GPU = "Fake GPU sm_87"
IN_SHAPE, OUT_SHAPE = (1, 3, 4, 4), (1, 1, 4, 4)


class _FakeCuda:
    """CudaRuntime stand-in: 'device' pointers index host byte buffers."""

    def __init__(self):
        self.buffers: dict[int, np.ndarray] = {}
        self.closed = False

    def stream(self) -> int:
        return 1

    def host_array(self, shape, dtype):
        return np.zeros(shape, dtype)

    def device_alloc(self, nbytes: int) -> int:
        ptr = len(self.buffers) + 1
        self.buffers[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def to_device(self, dptr, host, stream):
        self.buffers[dptr][:] = host.reshape(-1).view(np.uint8)

    def to_host(self, host, dptr, stream):
        host.reshape(-1).view(np.uint8)[:] = self.buffers[dptr]

    def synchronize(self, stream):
        pass

    def mem_info(self):
        return 1, 2

    def close(self):
        self.closed = True


def _session_tensorrt(version: str, cuda: _FakeCuda) -> types.ModuleType:
    """Just the TensorRT surface TensorRTSession may use: the name-based tensor API and execute_async_v3."""
    trt = _fake_tensorrt(version)

    class ILogger:
        Severity = types.SimpleNamespace(VERBOSE=4, INFO=3, WARNING=2, ERROR=1, INTERNAL_ERROR=0)

        def __init__(self):
            pass

    class Context:  # no execute_async_v2, no bindings: the session must not need them
        def __init__(self):
            self.addresses: dict[str, int] = {}

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            x = cuda.buffers[self.addresses["image"]].view(np.float32).reshape(IN_SHAPE)
            cuda.buffers[self.addresses["map0"]][:] = x.sum(axis=1, keepdims=True).reshape(-1).view(np.uint8)
            return True

    class Engine:  # no num_bindings
        num_io_tensors = 2
        device_memory_size = 1024

        def get_tensor_name(self, i):
            return ["image", "map0"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return IN_SHAPE if name == "image" else OUT_SHAPE

        def get_tensor_dtype(self, name):
            return np.float32

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            if data == FAKE_ENGINE:
                return Engine()
            self.logger.log(ILogger.Severity.ERROR, "magic tag does not match")
            return None

    trt.ILogger, trt.Runtime = ILogger, Runtime
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = np.dtype
    return trt


@pytest.fixture
def fake_session_env(monkeypatch):
    cuda = _FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", _session_tensorrt("10.3.0", cuda))
    monkeypatch.setattr(trt_backend, "open_cuda", lambda: cuda)
    monkeypatch.setattr(trt_backend, "gpu_name", lambda: FAKE_GPU)
    return cuda


def test_session_runs_with_the_name_based_api(tmp_path, fake_session_env):
    engine = tmp_path / "model.engine"
    engine.write_bytes(FAKE_ENGINE)
    record = {"trt_version": "10.3.0", "gpu_name": FAKE_GPU, "precision": "fp16"}
    build_record_path(engine).write_text(json.dumps(record))
    x = np.random.default_rng(4).standard_normal(IN_SHAPE).astype(np.float32)
    with TensorRTSession(engine) as session:
        assert session.input_name == "image" and session.output_names == ["map0"]
        assert session.input_shape == IN_SHAPE and session.input_dtype == np.float32
        assert session.build_record["precision"] == "fp16"
        (out,) = session.run(x)
        np.testing.assert_allclose(out, x.sum(axis=1, keepdims=True), rtol=1e-6)
        assert session.engine_memory_bytes() == 1024 and session.gpu_memory() == (1, 2)
        with pytest.raises(EdgeAdError, match="input shape"):
            session.run(x[:, :, :2])
    assert fake_session_env.closed


def test_session_refuses_stale_and_corrupt_engines(tmp_path, fake_session_env, caplog):
    engine = tmp_path / "model.engine"
    engine.write_bytes(FAKE_ENGINE)
    build_record_path(engine).write_text(json.dumps({"trt_version": "8.6.2", "gpu_name": FAKE_GPU}))
    with pytest.raises(EdgeAdError, match=r"stale: it was built with TensorRT 8\.6\.2 and this is TensorRT 10\.3\.0"):
        TensorRTSession(engine)
    assert fake_session_env.closed
    build_record_path(engine).unlink()  # an older edge_ad's bundle: the record merged into model.json
    (tmp_path / "model.json").write_text(json.dumps({**MANIFEST, "trt_version": "10.3.0", "gpu_name": "Orin sm_87"}))
    with caplog.at_level(logging.INFO, logger=trt_backend.__name__):
        with pytest.raises(EdgeAdError, match="stale: it was built on Orin sm_87"):
            TensorRTSession(engine)
    assert len(_legacy_lines(caplog)) == 1
    (tmp_path / "model.json").write_text(json.dumps(MANIFEST))
    engine.write_bytes(b"garbage")
    with pytest.raises(EdgeAdError, match="cannot load TensorRT engine model.engine.*magic tag"):
        TensorRTSession(engine)


def test_session_refuses_tensorrt_older_than_8_6(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("8.5.2.2"))
    engine = tmp_path / "model.engine"
    engine.write_bytes(FAKE_ENGINE)
    with pytest.raises(EdgeAdError, match="TensorRT 8.5.2.2 is installed"):
        TensorRTSession(engine)


# ----------------------------------------------------------------------------- calibration cache


def test_version_tag_matches_tensorrt_headers():
    assert calib_cache.version_tag("8.6.1") == "8601"
    assert calib_cache.version_tag("8.5.2.2") == "8502"
    assert calib_cache.version_tag("8.6.2.3") == "8602"
    assert calib_cache.version_tag("10.3.0") == "100300"
    assert calib_cache.version_tag("10.3.0.30") == "100300"
    with pytest.raises(EdgeAdError):
        calib_cache.version_tag("tensorrt")


def test_calibration_cache_round_trip(tmp_path):
    scales = {"image": 0.0157, "/encoder/conv1/Conv_output_0": 0.5, "map0": 1e-4, "tiny": 0.0}
    path = calib_cache.write_cache(tmp_path / "calib.cache", scales, trt_version="8.6.1")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == f"image: {struct.pack('>f', 0.0157).hex()}"
    assert all(len(line.rsplit(": ", 1)[1]) == 8 for line in lines[1:])
    back = calib_cache.read_cache(path)
    assert back.version_tag == "8601" and back.algorithm == "EntropyCalibration2"
    assert list(back.scales) == list(scales)
    for name, value in scales.items():
        assert back.scales[name] == float(np.float32(value))
    assert back.amax()["/encoder/conv1/Conv_output_0"] == pytest.approx(0.5 * 127)


def test_parses_a_cache_written_by_tensorrt():
    # Lines as TensorRT writes them (header, unnamed-layer tensor names, unpadded parse is fine too).
    text = (
        "TRT-7103-EntropyCalibration2\n"
        "data_0: 4000889d\n"
        "(Unnamed Layer* 4) [Fully Connected]_output: 3d65992f\n"
        "prob: 3c083ffd\n"
    )
    cache = calib_cache.parse_cache(text)
    assert cache.version_tag == "7103"
    assert cache.scales["data_0"] == pytest.approx(2.00833, rel=1e-5)
    assert "(Unnamed Layer* 4) [Fully Connected]_output" in cache.scales
    assert calib_cache.hex_to_scale("3f800000") == 1.0
    assert calib_cache.scale_to_hex(1.0) == "3f800000"


def test_retag_rewrites_only_the_header():
    text = calib_cache.format_cache(calib_cache.CalibrationCache("8601", scales={"a": 0.25, "b": 2.0}))
    retagged = calib_cache.retag(text, "10.3.0")
    assert retagged.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert retagged.splitlines()[1:] == text.splitlines()[1:]


def test_scales_from_amax_and_errors(tmp_path):
    assert calib_cache.scales_from_amax({"x": -12.7}) == {"x": pytest.approx(0.1)}
    with pytest.raises(EdgeAdError, match="not finite"):
        calib_cache.scales_from_amax({"x": float("nan")})
    with pytest.raises(EdgeAdError, match="header"):
        calib_cache.parse_cache("calibration\nx: 3f800000\n")
    with pytest.raises(EdgeAdError, match="line 3"):
        calib_cache.parse_cache("TRT-8601-EntropyCalibration2\nx: 3f800000\ny = 2\n")
    with pytest.raises(EdgeAdError, match="not found"):
        calib_cache.read_cache(tmp_path / "missing.cache")
    with pytest.raises(EdgeAdError, match="algorithm"):
        calib_cache.write_cache(tmp_path / "c", {"x": 1.0}, algorithm="Percentile")


# ----------------------------------------------------------------------------- op checker


def test_supported_op_lists_grow_with_versions():
    v86, v103 = supported_ops("8.6"), supported_ops("10.3")
    assert v86 < v103 <= supported_ops("10.15")
    assert {"Conv", "Relu", "Resize", "ReduceSum", "Div", "Sqrt", "QuantizeLinear", "DequantizeLinear"} <= v86
    assert "LayerNormalization" in v86 and "Hardmax" not in v86 and "Hardmax" in v103


def test_distance_map_graph_is_fully_supported(float_onnx, qdq_onnx):
    x = np.random.default_rng(1).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    (out,) = _ort_run(float_onnx, x)  # the test graph is real ONNX
    assert out.shape == (1, 1, SIZE, SIZE) and np.isfinite(out).all()
    for version in ("8.6", "10.3"):
        assert check_onnx_ops(float_onnx, version) == []
        assert check_onnx_ops(qdq_onnx, version) == []
    assert check_onnx_ops(onnx.load(str(float_onnx))) == []  # a ModelProto works too
    assert not has_qdq(float_onnx) and has_qdq(qdq_onnx)
    _ort_run(qdq_onnx, x)


def test_unsupported_ops_are_listed():
    model = distance_map_model()
    unique = with_extra_node(model, helper.make_node("Unique", ["image"], ["u"]))
    assert check_onnx_ops(unique) == ["Unique"]
    custom = with_extra_node(unique, helper.make_node("FusedConv", ["image"], ["f"], domain="com.microsoft"))
    assert check_onnx_ops(custom) == ["Unique", "com.microsoft:FusedConv"]
    gelu = with_extra_node(model, helper.make_node("Gelu", ["image"], ["g"]), opset=20)
    onnx.checker.check_model(gelu)
    assert check_onnx_ops(gelu, "8.6") == ["Gelu"]
    assert check_onnx_ops(gelu, "10.15") == []


def test_restrictions_resize_and_qdq():
    assert check_onnx_ops(distance_map_model(resize_mode="cubic")) == ["Resize(mode=cubic)"]
    asym = distance_map_model(qdq=True, zero_point=128, zp_type=np.uint8)
    assert check_onnx_ops(asym) == [
        "DequantizeLinear(uint8)", "DequantizeLinear(zero_point!=0)",
        "QuantizeLinear(uint8)", "QuantizeLinear(zero_point!=0)",
    ]
    assert check_onnx_ops(distance_map_model(qdq=True, zero_point=3)) == [
        "DequantizeLinear(zero_point!=0)", "QuantizeLinear(zero_point!=0)",
    ]


def test_ops_inside_subgraphs_are_checked():
    model = distance_map_model()
    branch = helper.make_graph(
        [helper.make_node("Unique", ["image"], ["y"])], "branch", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["z"])], "other", [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    model.graph.initializer.append(_init("cond", np.array(True)))
    model = with_extra_node(model, helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=other))
    assert check_onnx_ops(model) == ["Unique"]


def test_check_missing_onnx_raises(tmp_path):
    with pytest.raises(EdgeAdError, match="not found"):
        check_onnx_ops(tmp_path / "nope.onnx")


# ----------------------------------------------------------------------------- without TensorRT


def test_errors_before_tensorrt_is_needed(tmp_path, float_onnx, qdq_onnx):
    with pytest.raises(EdgeAdError, match="engine not found"):
        TensorRTSession(tmp_path / "missing.engine")
    with pytest.raises(EdgeAdError, match="ONNX model not found"):
        build_engine(tmp_path / "missing.onnx", tmp_path)
    with pytest.raises(EdgeAdError, match="precision"):
        build_engine(float_onnx, tmp_path, precision="int4")
    with pytest.raises(EdgeAdError, match="--precision int8"):
        build_engine(qdq_onnx, tmp_path, precision="fp16")
    with pytest.raises(EdgeAdError, match="calibration cache"):
        build_engine(float_onnx, tmp_path, precision="int8")
    with pytest.raises(EdgeAdError, match="DLA"):
        build_engine(float_onnx, tmp_path, precision="fp32", dla_core=0)


@pytest.mark.skipif(trt_backend.tensorrt_version() is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_names_the_package(tmp_path, float_onnx):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"not an engine")
    for call in (lambda: TensorRTSession(engine), lambda: build_engine(float_onnx, tmp_path)):
        with pytest.raises(EdgeAdError) as info:
            call()
        assert "python3-libnvinfer" in str(info.value) and "pip install tensorrt" in str(info.value)


@pytest.mark.skipif(trt_backend.tensorrt_version() is not None, reason="TensorRT is installed here")
def test_engine_verb_and_benchmark_exit_2_without_tensorrt(tmp_path, float_onnx, capsys):
    assert cli_main(["export", str(float_onnx), "--format", "engine", "--engine-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "TensorRT not installed" in err and "--check-only" in err and not list(tmp_path.iterdir())
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine.py"), str(tmp_path / "x.engine")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "TensorRT not installed" in proc.stderr, proc.stderr


def test_export_check_only_works_without_tensorrt(float_onnx, tmp_path, capsys):
    path = tmp_path / "cubic.onnx"
    onnx.save(distance_map_model(resize_mode="cubic"), str(path))
    assert cli_main(["export", str(float_onnx), "--check-only", "--trt-version", "8.6"]) == 0
    assert "supported by TensorRT 8.6" in capsys.readouterr().out
    assert cli_main(["export", str(path), "--check-only", "--trt-version", "10.3"]) == 1
    assert "Resize(mode=cubic)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cubic.onnx"]  # a check writes nothing


def test_bench_summary():
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "benchmarks" / "engine.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    summarize = bench.summarize
    stats = summarize([2.0] * 98 + [10.0, 12.0])
    assert stats["ms_median"] == 2.0 and stats["fps"] == 500.0
    assert 9.9 < stats["ms_p99"] <= 12.0 and stats["ms_max"] == 12.0
    with pytest.raises(ValueError):
        summarize([])


# ----------------------------------------------------------------------------- with TensorRT and a GPU


@requires_trt
def test_fp16_engine_matches_onnxruntime_and_is_cached(float_onnx, tmp_path):
    engine = build_engine(float_onnx, tmp_path, precision="fp16")
    assert engine.is_file() and read_build_record(engine)["precision"] == "fp16"
    mtime = engine.stat().st_mtime_ns
    assert build_engine(float_onnx, tmp_path, precision="fp16") == engine
    assert engine.stat().st_mtime_ns == mtime, "a matching engine must be reused, not rebuilt"
    x = np.random.default_rng(2).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    with TensorRTSession(engine) as session:
        assert session.input_shape == (1, 3, SIZE, SIZE) and session.output_names == ["map0"]
        (out,) = session.run(x)
        (ref,) = _ort_run(float_onnx, x)
        np.testing.assert_allclose(out, ref, atol=2e-2)
        with pytest.raises(EdgeAdError, match="input shape"):
            session.run(x[:, :, :8])


@requires_trt
def test_int8_engines_explicit_and_from_cache(float_onnx, qdq_onnx, tmp_path):
    x = np.random.default_rng(3).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    explicit = build_engine(qdq_onnx, tmp_path, precision="int8")
    with TensorRTSession(explicit) as session:
        (out,) = session.run(x)
    assert np.isfinite(out).all()
    # A cache tagged for another TensorRT version still builds: the header is rewritten for this one.
    names = [n.output[0] for n in onnx.load(str(float_onnx)).graph.node] + ["image"]
    cache = calib_cache.write_cache(tmp_path / "calib.cache", {n: 0.05 for n in names}, trt_version="8.5.2")
    implicit = build_engine(float_onnx, tmp_path, precision="int8", calib_cache=cache)
    with TensorRTSession(implicit) as session:
        (out,) = session.run(x)
    assert out.shape == (1, 1, SIZE, SIZE) and np.isfinite(out).all()


@requires_trt
def test_stale_engine_is_refused(float_onnx, tmp_path):
    engine = build_engine(float_onnx, tmp_path, precision="fp16")
    record = read_build_record(engine)
    build_record_path(engine).write_text(json.dumps({**record, "trt_version": "7.0.0"}))
    with pytest.raises(EdgeAdError, match="stale"):
        TensorRTSession(engine)
