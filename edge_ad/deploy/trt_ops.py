"""Which ONNX operators TensorRT's ONNX parser imports natively, so an export can be checked off-device.

The table comes from onnx/onnx-tensorrt docs/operators.md (TensorRT 8.5 and 10.15 tables) and its
Changelog (what 8.6 EA and each 9.x/10.x release added). Each op is keyed by the first TensorRT version
that lists it: "8.6" means JetPack 6.0's TensorRT and everything later (10.3 on JetPack 6.1/6.2).
CastLike, Gelu and Mish are in the 10.15 table with no changelog entry; they are given 10.15
(conservative: a model using them is flagged for 10.3). Besides op names, a few restrictions that
bite exported models are checked: Resize modes and symmetric INT8 Q/DQ (TensorRT wants zero point 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_ad.errors import EdgeAdError
from edge_ad.runtime.tensorrt import MIN_TENSORRT_VERSION

DEFAULT_TRT_VERSION = MIN_TENSORRT_VERSION  # graphs are checked against the oldest TensorRT edge_ad runs on

_OPS_BY_FIRST_VERSION = {
    "8.6": """
        Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
        Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
        DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
        Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
        Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Identity If
        ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual
        Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean
        MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
        ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
        RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
        ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
        ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu
        Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split
        Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample
        Where Xor
    """,
    "9.2": "Hardmax",
    "10.1": "DeformConv",
    "10.4": "BlackmanWindow HammingWindow HannWindow",
    "10.5": "STFT",
    "10.14": "Attention",
    "10.15": "CastLike Gelu Mish RMSNormalization RotaryEmbedding TensorScatter",
}

# Resize attributes the parser accepts (operators.md, same for 8.6 and 10.x).
ONNX_RESIZE_MODES = ("nearest", "linear")  # the ONNX Resize op modes the parser takes (not data.resize)
RESIZE_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
DEFAULT_DOMAINS = ("", "ai.onnx")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def parse_version(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3); only major.minor decide parser support."""
    try:
        parts = tuple(int(p) for p in str(version).split(".")[:2])
    except ValueError:
        raise EdgeAdError(f"not a TensorRT version: {version!r} (expected e.g. 8.6 or 10.3)") from None
    return parts + (0,) * (2 - len(parts))


def supported_ops(trt_version: str = DEFAULT_TRT_VERSION) -> frozenset[str]:
    """Op names (default ONNX domain) that this TensorRT version's parser imports natively."""
    want = parse_version(trt_version)
    ops: set[str] = set()
    for first, names in _OPS_BY_FIRST_VERSION.items():
        if parse_version(first) <= want:
            ops.update(names.split())
    return frozenset(ops)


def load_model(onnx_path_or_model: Any):
    """ModelProto from a path or a ModelProto; weights are not needed, so external data stays on disk."""
    import onnx

    if isinstance(onnx_path_or_model, onnx.ModelProto):
        return onnx_path_or_model
    path = Path(onnx_path_or_model)
    if not path.is_file():
        raise EdgeAdError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise EdgeAdError(f"cannot read ONNX model {path}: {exc}") from None


def has_qdq(onnx_path_or_model: Any) -> bool:
    """True when the graph carries its own INT8 scales (explicit quantization)."""
    model = load_model(onnx_path_or_model)
    return any(node.op_type in QDQ_OPS for node in _walk_nodes(model.graph))


def check_onnx_ops(onnx_path_or_model: Any, trt_version: str = DEFAULT_TRT_VERSION) -> list[str]:
    """What TensorRT `trt_version` cannot import: op names, 'domain:Op' for custom ops, 'Op(reason)' for restrictions.

    An empty list means every node is natively supported. Sorted, no duplicates.
    """
    model = load_model(onnx_path_or_model)
    ops = supported_ops(trt_version)
    inline_functions = parse_version(trt_version) >= (9, 0)  # local functions are imported from 9.0 on
    functions = {(f.domain, f.name): f for f in model.functions}
    constants = _constant_values(model.graph)
    problems: set[str] = set()
    for node in _walk_nodes(model.graph):
        key = (node.domain, node.op_type)
        if key in functions and inline_functions:
            for inner in functions[key].node:
                problems.update(_node_problems(inner, ops, constants))
            continue
        problems.update(_node_problems(node, ops, constants))
    return sorted(problems)


def _node_problems(node, ops: frozenset[str], constants: dict) -> list[str]:
    if node.domain not in DEFAULT_DOMAINS:
        return [f"{node.domain}:{node.op_type}"]
    if node.op_type not in ops:
        return [node.op_type]
    if node.op_type == "Resize":
        return _resize_problems(node)
    if node.op_type in QDQ_OPS:
        return _qdq_problems(node, constants)
    return []


def _resize_problems(node) -> list[str]:
    attrs = _attributes(node)
    problems = []
    mode = attrs.get("mode", "nearest")
    if mode not in ONNX_RESIZE_MODES:
        problems.append(f"Resize(mode={mode})")
    coord = attrs.get("coordinate_transformation_mode", "half_pixel")
    if coord not in RESIZE_COORDINATE_MODES:
        problems.append(f"Resize(coordinate_transformation_mode={coord})")
    if attrs.get("antialias", 0):
        problems.append("Resize(antialias=1)")
    return problems


def _qdq_problems(node, constants: dict) -> list[str]:
    """TensorRT quantizes symmetrically to signed INT8: zero point must be 0 and not uint8."""
    import numpy as np
    from onnx import TensorProto

    if len(node.input) < 3 or not node.input[2]:
        return []  # no zero point: the parser takes it as 0 and quantizes to INT8
    zero_point = constants.get(node.input[2])
    if zero_point is None:
        return [f"{node.op_type}(zero_point not constant)"]
    elem_type, values = zero_point
    problems = []
    if elem_type == TensorProto.UINT8:
        problems.append(f"{node.op_type}(uint8)")
    if values is not None and np.any(values != 0):
        problems.append(f"{node.op_type}(zero_point!=0)")
    return problems


def _constant_values(graph) -> dict:
    """name -> (element type, values or None) for initializers and Constant nodes, subgraphs included."""
    from onnx import numpy_helper

    out = {}

    def add(tensor, name):
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:  # external data not loaded: the type is still known
            values = None
        out[name] = (tensor.data_type, values)

    for g in _walk_graphs(graph):
        for init in g.initializer:
            add(init, init.name)
        for node in g.node:
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
                for attr in node.attribute:
                    if attr.name == "value" and node.output:
                        add(attr.t, node.output[0])
    return out


def _attributes(node) -> dict:
    from onnx import helper

    values = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _walk_graphs(graph):
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                yield from _walk_graphs(attr.g)
            elif attr.type == attr.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk_graphs(sub)


def _walk_nodes(graph):
    for g in _walk_graphs(graph):
        yield from g.node
