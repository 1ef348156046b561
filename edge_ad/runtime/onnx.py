"""ONNX Runtime session (CPU by default; CUDA / TensorRT execution providers when installed). No torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_ad.errors import EdgeAdError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def default_threads() -> int:
    """OMP_NUM_THREADS when the environment caps it (a unit or container sharing the cores sets it once for torch
    and ONNX Runtime alike), else 0: ONNX Runtime's own default, a spinning thread per core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


class OrtSession:
    """Runs the exported graph; batches larger than the graph's static batch are run image by image."""

    def __init__(self, model_path: str | Path, threads: int = 0, providers: list[str] | None = None):
        import onnxruntime as ort

        p = Path(model_path)
        if not p.is_file():
            raise EdgeAdError(f"ONNX model not found: {p}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads or default_threads()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        chosen = providers or [pv for pv in PREFERRED_PROVIDERS if pv in available]
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=chosen)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception zoo for bad files
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise EdgeAdError(f"{p}: not a loadable ONNX model ({first})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        want = self.input_shape
        if batch.ndim != 4 or any(isinstance(d, int) and d != b for d, b in zip(want[1:], batch.shape[1:])):
            raise EdgeAdError(f"input batch shape {batch.shape} does not match the model input {want}")
        if isinstance(want[0], int) and batch.shape[0] != want[0]:
            parts = [self.session.run(self.output_names, {self.input_name: batch[i:i + 1]}) for i in range(batch.shape[0])]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_names))]
        return self.session.run(self.output_names, {self.input_name: batch})
