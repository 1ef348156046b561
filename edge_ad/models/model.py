"""The deployed network: frozen teacher + one student per pair -> per-scale 1-cos maps.

One graph for every method: image tensor in, a flat list of (N,1,h,w) maps out (pair by pair, then the
optional per-location Gaussian map, which scoring treats as one more group).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_ad.config import ModelConfig
from edge_ad.models.backbones import Teacher
from edge_ad.models.dual import pair_strides, scale_groups
from edge_ad.models.gaussian import LocationGaussian
from edge_ad.models.rd import Student, cos_distance_maps


class ADModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pairs = pair_strides(cfg)
        gauss = (cfg.gaussian_stages or [cfg.gaussian_stride]) if cfg.gaussian_stride else []
        all_strides = sorted({s for p in self.pairs for s in p} | set(gauss))
        self.teacher = Teacher(cfg.teacher, all_strides)
        self._index = [[all_strides.index(s) for s in p] for p in self.pairs]
        self.students = nn.ModuleList(
            Student([self.teacher.channels[i] for i in idx], p, cfg.width, cfg.bottleneck_blocks)
            for p, idx in zip(self.pairs, self._index)
        )
        self.gaussian_taps = [all_strides.index(s) for s in gauss]
        self._gaussian_pools = [cfg.gaussian_stride // s for s in gauss]
        channels = sum(self.teacher.channels[i] for i in self.gaussian_taps)
        self.gaussian = LocationGaussian(channels, pool=cfg.gaussian_pool) if gauss else None

    def gaussian_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The Gaussian's input: its stages, finer ones average-pooled onto the gaussian_stride grid, concatenated."""
        parts = [feats[i] if k == 1 else F.avg_pool2d(feats[i], k)
                 for i, k in zip(self.gaussian_taps, self._gaussian_pools)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    @property
    def groups(self) -> list[list[int]]:
        groups = scale_groups(self.pairs)
        if self.gaussian is not None:
            groups.append([sum(len(g) for g in groups)])
        return groups

    def pair_features(self, feats: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Split the teacher's feature list into each pair's inputs/targets."""
        return [[feats[i] for i in idx] for idx in self._index]

    def student_outputs(self, feats_in: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        return [s(f) for s, f in zip(self.students, self.pair_features(feats_in))]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = self.teacher(image)
        maps = []
        for t, s in zip(self.pair_features(feats), self.student_outputs(feats)):
            maps += cos_distance_maps(t, s)
        if self.gaussian is not None:
            maps.append(self.gaussian(self.gaussian_features(feats)))
        return maps
