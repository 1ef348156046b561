"""TensorRT backend: pure parts everywhere (cache key, calibration cache, op checker, CLI exit codes);
engine build and inference only where TensorRT and a GPU exist."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_ad.deploy import trt_cache as calib_cache
from edge_ad.errors import EdgeAdError
from edge_ad.runtime import tensorrt as trt_backend
from edge_ad.runtime.tensorrt import TensorRTSession, build_engine, engine_cache_key, stale_reason
from edge_ad.deploy.trt_ops import check_onnx_ops, has_qdq, supported_ops

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
    assert trt_backend.engine_file_name("rd", "int8", None, key) == f"rd.int8.{key[:16]}.engine"
    assert trt_backend.engine_file_name("rd", "fp16", 1, key) == f"rd.fp16.dla1.{key[:16]}.engine"
    meta = {"trt_version": "8.6.2", "gpu_name": "Orin sm_87 [AGX Orin]"}
    assert stale_reason(meta, "8.6.2", "Orin sm_87 [AGX Orin]") is None
    assert "TensorRT 8.6.2" in stale_reason(meta, "10.3.0", "Orin sm_87 [AGX Orin]")
    assert "Orin Nano" in stale_reason(meta, "8.6.2", "Orin sm_87 [Orin Nano]")
    assert stale_reason(None, "10.3.0", "x") is None


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
def test_tools_exit_2_without_tensorrt(tmp_path, float_onnx):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for tool, arg in (("build_engine.py", float_onnx), ("bench_engine.py", tmp_path / "x.engine")):
        proc = subprocess.run([sys.executable, str(ROOT / "tools" / tool), str(arg)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "TensorRT not installed" in proc.stderr


def test_build_tool_check_only_works_without_tensorrt(float_onnx, tmp_path):
    path = tmp_path / "cubic.onnx"
    onnx.save(distance_map_model(resize_mode="cubic"), str(path))
    tool = str(ROOT / "tools" / "build_engine.py")
    ok = subprocess.run([sys.executable, tool, str(float_onnx), "--check-only", "--trt-version", "8.6"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "supported by TensorRT 8.6" in ok.stdout
    bad = subprocess.run([sys.executable, tool, str(path), "--check-only", "--trt-version", "10.3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "Resize(mode=cubic)" in bad.stderr


def test_bench_summary():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from bench_engine import summarize
    finally:
        sys.path.remove(str(ROOT / "tools"))
    stats = summarize([2.0] * 98 + [10.0, 12.0])
    assert stats["ms_median"] == 2.0 and stats["fps"] == 500.0
    assert 9.9 < stats["ms_p99"] <= 12.0 and stats["ms_max"] == 12.0
    with pytest.raises(ValueError):
        summarize([])


# ----------------------------------------------------------------------------- with TensorRT and a GPU


@requires_trt
def test_fp16_engine_matches_onnxruntime_and_is_cached(float_onnx, tmp_path):
    engine = build_engine(float_onnx, tmp_path, precision="fp16")
    assert engine.is_file() and trt_backend.read_engine_meta(engine)["precision"] == "fp16"
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
    meta_path = trt_backend.engine_meta_path(engine)
    meta = trt_backend.read_engine_meta(engine)
    meta_path.write_text(__import__("json").dumps({**meta, "trt_version": "7.0.0"}))
    with pytest.raises(EdgeAdError, match="stale"):
        TensorRTSession(engine)
