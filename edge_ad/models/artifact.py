"""The trained-model artifact (model.pt): save, load and torch inference, shared by training, pruning, export
and the torch runtime session.

model.pt holds tensors and plain data only and is read with `torch.load(weights_only=True)`, so opening an
untrusted file cannot run code. A pruned student's shape is rebuilt from its tensors' shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_ad.config import Config, ConfigError, config_from_dict, to_dict
from edge_ad.errors import EdgeAdError
from edge_ad.fileio import atomic_open
from edge_ad.models.gaussian import gaussian_from_state
from edge_ad.models.model import ADModel
from edge_ad.scoring import ScoringSpec

MODEL_FILE = "model.pt"
FORMAT = "edge_ad-model-2"  # -1: pruned students were pickled modules (not loadable without running code)
READABLE_FORMATS = (FORMAT, "edge_ad-model-1")


def save_model(model: ADModel, cfg: Config, spec: ScoringSpec, meta: dict, path: Path) -> None:
    """Tensors and plain data only; a pruned student's channel counts live in its tensors' shapes."""
    gauss = model.gaussian.state_dict() if model.gaussian is not None else None
    save_checkpoint({"format": FORMAT, "config": to_dict(cfg), "students": model.students.state_dict(),
                     "gaussian": gauss, "scoring": spec.to_dict(), "meta": meta}, path)


def save_checkpoint(obj: dict, path: Path) -> None:
    with atomic_open(path) as fh:
        torch.save(obj, fh)


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """A dict of tensors and plain data; anything else (pickled code, a corrupt file) is an EdgeAdError."""
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise EdgeAdError(f"{path}: not a readable edge_ad model file ({first})") from None
    if not isinstance(obj, dict):
        raise EdgeAdError(f"{path}: not an edge_ad model file")
    return obj


def resize_to_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Rebuild every conv / batch-norm whose saved tensors have other shapes (a pruned student) to those shapes."""
    for name, child in list(module.named_modules()):
        w = state.get(f"{name}.weight" if name else "weight")
        if w is None or child.weight.shape == w.shape:
            continue
        if isinstance(child, nn.ConvTranspose2d):
            new = nn.ConvTranspose2d(w.shape[0], w.shape[1] * child.groups, child.kernel_size, child.stride,
                                     child.padding, child.output_padding, child.groups, child.bias is not None)
        elif isinstance(child, nn.Conv2d):
            new = nn.Conv2d(w.shape[1] * child.groups, w.shape[0], child.kernel_size, child.stride, child.padding,
                            child.dilation, child.groups, child.bias is not None)
        elif isinstance(child, nn.BatchNorm2d):
            new = nn.BatchNorm2d(w.shape[0], child.eps, child.momentum)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, leaf, new)


def load_model(path: str | Path, device: str = "cpu") -> tuple[ADModel, Config, ScoringSpec, dict]:
    """Rebuild a trained model (teacher from its weight package, students and Gaussian from the file)."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise EdgeAdError(f"model file not found: {p}")
    ckpt = read_checkpoint(p, device)
    fmt = ckpt.get("format")
    if fmt not in READABLE_FORMATS:
        raise EdgeAdError(f"{p}: not an edge_ad model file (format {fmt!r}; this edge_ad reads {', '.join(READABLE_FORMATS)})")
    try:
        cfg = config_from_dict(ckpt["config"])
        spec = ScoringSpec.from_dict(ckpt["scoring"])
        meta = ckpt["meta"]
        threshold = float(meta["threshold"])
    except ConfigError as e:
        raise EdgeAdError(f"{p}: its stored config is invalid for this edge_ad ({e})") from None
    except EdgeAdError as e:  # its scoring section (ScoringSpec checks it)
        raise EdgeAdError(f"{p}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeAdError(f"{p}: incomplete edge_ad model file (missing or bad {e})") from None
    if not np.isfinite(threshold):
        raise EdgeAdError(f"{p}: its threshold is not a finite number")
    model = ADModel(cfg.model)
    try:
        resize_to_state(model.students, ckpt["students"])
        model.students.load_state_dict(ckpt["students"])
        if model.gaussian is not None:
            if ckpt.get("gaussian") is None:
                raise EdgeAdError(f"{p}: the config asks for a Gaussian map but the file has none (retrain it)")
            model.gaussian = gaussian_from_state(ckpt["gaussian"], cfg.model.gaussian_pool)
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise EdgeAdError(f"{p}: its weights do not fit its config (written by another edge_ad version?): {first}") from None
    model.to(device).eval()
    return model, cfg, spec, meta


@torch.no_grad()
def model_outputs(model: ADModel, batch: np.ndarray) -> list[np.ndarray]:
    """Torch forward with the same contract as every runtime session: NCHW float32 -> per-scale maps."""
    device = next(model.teacher.parameters()).device
    return [m.cpu().numpy() for m in model(torch.from_numpy(batch).to(device))]
