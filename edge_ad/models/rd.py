"""Reverse-distillation student: one-class bottleneck (OCBE) + reversed decoder, built from the
teacher's description (channels, strides) rather than hard-coded numbers.

The decoder's `heads` are linear 1x1 convs to the teacher's channel counts: pruning must skip them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def up_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def stage_widths(n: int, width: int) -> list[int]:
    """Decoder width per scale, shallow to deep: doubling with depth, capped at 4x."""
    return [width * min(2**i, 4) for i in range(n)]


class Student(nn.Module):
    """OCBE + reversed decoder reproducing teacher features at `strides` (sorted shallow to deep)."""

    def __init__(self, channels: list[int], strides: list[int], width: int, bottleneck_blocks: int):
        super().__init__()
        self.channels, self.strides = list(channels), list(strides)
        widths = stage_widths(len(strides), width)
        deep = strides[-1]
        # OCBE: bring every scale to the deepest resolution with strided convs, fuse, compress one step further.
        self.fuse_in = nn.ModuleList()
        for c, s, w in zip(channels, strides, widths):
            steps = int(math.log2(deep // s))
            layers = [conv_bn_relu(c if i == 0 else w, w, 3, 2) for i in range(steps)] or [conv_bn_relu(c, w, 1)]
            self.fuse_in.append(nn.Sequential(*layers))
        emb = widths[-1]
        self.bottleneck = nn.Sequential(conv_bn_relu(sum(widths), emb, 3, 2), *[ResBlock(emb) for _ in range(bottleneck_blocks)])
        # Reversed decoder: upsample x2 per step from stride 2*deep down to the shallowest stride.
        self.ups = nn.ModuleList()
        self.heads = nn.ModuleList()
        prev, prev_stride = emb, deep * 2
        for c, s, w in reversed(list(zip(channels, strides, widths))):
            steps = int(math.log2(prev_stride // s))
            layers = []
            for i in range(steps):
                layers.append(up_bn_relu(prev if i == 0 else w, w))
            layers.append(conv_bn_relu(w, w))
            self.ups.append(nn.Sequential(*layers))
            self.heads.append(nn.Conv2d(w, c, 1))
            prev, prev_stride = w, s

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.bottleneck(torch.cat([f(t) for f, t in zip(self.fuse_in, feats)], dim=1))
        outs = []
        for up, head in zip(self.ups, self.heads):
            x = up(x)
            outs.append(head(x))
        return outs[::-1]  # shallow to deep, like the teacher


def cos_distance_maps(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-scale 1 - cos along channels, shaped (N, 1, h, w)."""
    return [1.0 - F.cosine_similarity(t, s, dim=1, eps=1e-8).unsqueeze(1) for t, s in zip(t_feats, s_feats)]


def distill_loss(t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]) -> torch.Tensor:
    """RD4AD loss: sum over scales of the mean per-position cosine distance."""
    return sum(m.mean() for m in cos_distance_maps(t_feats, s_feats))
