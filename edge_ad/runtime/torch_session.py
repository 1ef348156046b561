"""Torch session: runs a trained .pt directly (the reference backend for parity checks; imports torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ad.runtime.manifest import ModelInfo


class TorchSession:
    def __init__(self, model_path: str | Path, threads: int = 0):
        import torch

        from edge_ad.models.artifact import load_model

        if threads:
            torch.set_num_threads(threads)
        self.model, cfg, spec, meta = load_model(model_path)
        self.info = ModelInfo(cfg.data, spec, float(meta["threshold"]), meta)
        self.output_names = [f"map{i}" for i in range(sum(len(g) for g in spec.groups))]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        from edge_ad.models.artifact import model_outputs

        return model_outputs(self.model, np.ascontiguousarray(batch, dtype=np.float32))
