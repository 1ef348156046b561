"""Dual model KD (Thomine & Snoussi): a shallow pair on high-resolution texture stages and a deep pair
on low-resolution semantic stages, each with its own student; maps normalised on good images, then fused.

rd and rd_aug are the one-pair case, so every method shares ADModel and the scoring module.
"""

from __future__ import annotations

from edge_ad.config import ModelConfig
from edge_ad.methods import get_method


def pair_strides(cfg: ModelConfig) -> list[list[int]]:
    """Teacher strides of each teacher/student pair (the method registry says which stages each pair uses)."""
    return get_method(cfg.method).pair_strides(cfg)


def scale_groups(pairs: list[list[int]]) -> list[list[int]]:
    """Indices of each pair's maps in the model's flat output list."""
    groups, i = [], 0
    for p in pairs:
        groups.append(list(range(i, i + len(p))))
        i += len(p)
    return groups
