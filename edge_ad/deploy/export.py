"""ONNX export: one graph per trained model, image tensor -> per-scale 1-cos maps (or the fused map).

The manifest written next to the graph (model.json) carries preprocessing, scoring spec and
threshold, so the runtime never needs torch or the training config.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_write
from edge_ad.runtime.manifest import ModelInfo
from edge_ad.scoring import BLUR_TRUNCATE, ScoringSpec

OPSET = 17
IR_VERSION = 8  # the oldest IR that carries opset 17
PARITY_TOLERANCE = 1e-4  # max |ORT - torch| relative to the map range


def _fused_head(spec: ScoringSpec):
    """torch module doing upsample + normalise + fuse + separable Gaussian blur inside the graph."""
    import torch
    import torch.nn.functional as F

    sigma = spec.blur_sigma
    k = 2 * int(BLUR_TRUNCATE * sigma + 0.5) + 1 if sigma > 0 else 1
    x = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-x**2 / (2 * sigma**2)) if sigma > 0 else torch.ones(1)
    g = g / g.sum()

    class FusedHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("gx", g.view(1, 1, 1, k))
            self.register_buffer("gy", g.view(1, 1, k, 1))

        def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
            pairs = []
            for grp, scale in zip(spec.groups, spec.group_scales):
                up = [F.interpolate(maps[i], size=spec.out_size, mode="bilinear", align_corners=False) for i in grp]
                pairs.append(sum(up) / scale)
            out = pairs[0]
            for p in pairs[1:]:
                out = out * p if spec.fusion == "product" else out + p
            if k > 1:
                pad = k // 2
                out = F.conv2d(F.pad(out, (pad, pad, 0, 0), mode="reflect"), self.gx)
                out = F.conv2d(F.pad(out, (0, 0, pad, pad), mode="reflect"), self.gy)
            return out

    return FusedHead()


def fused_spec(spec: ScoringSpec) -> ScoringSpec:
    """Scoring spec for a graph that already upsamples, fuses and blurs: only the image score is left."""
    return dataclasses.replace(spec, groups=[[0]], group_scales=[1.0], fusion="sum", blur_sigma=0.0)


def export_onnx(model_path: str | Path, out_path: str | Path, fused: bool = False, opset: int = OPSET,
                check_parity: bool = True) -> Path:
    """Export a trained .pt to ONNX (+ manifest); verify with onnx.checker and an ORT-vs-torch parity run."""
    import io

    import onnx
    import torch

    from edge_ad.models.artifact import load_model

    model, cfg, spec, meta = load_model(model_path)
    h, w = cfg.data.input_size
    out_path = Path(out_path)
    names = ["map"] if fused else [f"map{i}" for i in range(sum(len(g) for g in spec.groups))]

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.head = _fused_head(spec) if fused else None

        def forward(self, image):
            maps = self.model(image)
            return self.head(maps) if self.head is not None else tuple(maps)

    graph = Graph().eval()
    example = torch.zeros(1, 3, h, w)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Constant folding")  # the teacher's static pads; harmless
        torch.onnx.export(graph, (example,), buf, input_names=["image"], output_names=names, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = min(proto.ir_version, IR_VERSION)  # JetPack's older onnxruntime/TensorRT parsers
    onnx.checker.check_model(proto, full_check=True)
    proto = onnx.shape_inference.infer_shapes(proto)
    info = ModelInfo(cfg.data, fused_spec(spec) if fused else spec, float(meta["threshold"]),
                     {**meta, "source_model": str(Path(model_path)), "graph": "fused" if fused else "per_scale",
                      "opset": opset, "method": cfg.model.method, "teacher": cfg.model.teacher})
    if check_parity:
        info.meta["parity_max_abs_diff"] = _parity(graph, proto.SerializeToString(), info, (h, w))
    atomic_write(out_path, proto.SerializeToString())
    info.save(out_path)
    return out_path


def _parity(graph, onnx_bytes: bytes, info: ModelInfo, hw: tuple[int, int]) -> float:
    """Max |ORT - torch| of the final anomaly map on a random input, relative to the map's range."""
    import onnxruntime as ort
    import torch

    from edge_ad.scoring import score_outputs

    x = np.random.default_rng(0).normal(size=(1, 3, *hw)).astype(np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    ort_maps, _ = score_outputs(sess.run(None, {"image": x}), info.scoring)
    with torch.no_grad():
        out = graph(torch.from_numpy(x))
    torch_maps, _ = score_outputs([o.numpy() for o in (out if isinstance(out, tuple) else (out,))], info.scoring)
    a, b = ort_maps[0], torch_maps[0]
    rel = float(np.abs(a - b).max() / max(float(b.max() - b.min()), 1e-12))
    if rel > PARITY_TOLERANCE:
        raise EdgeAdError(f"exported graph disagrees with torch: max diff {rel:.2e} of the map range (limit {PARITY_TOLERANCE:.0e})")
    return rel
