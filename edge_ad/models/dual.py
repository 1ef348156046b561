"""Dual model KD (Thomine & Snoussi): a shallow pair on high-resolution texture stages and a deep pair
on low-resolution semantic stages, each with its own student; maps normalised on good images, then fused.

rd and rd_aug are the one-pair case, so every method shares ADModel and the scoring module.
"""

from __future__ import annotations

from edge_ad.config import ModelConfig


def pair_strides(cfg: ModelConfig) -> list[list[int]]:
    """Teacher strides of each teacher/student pair."""
    if cfg.method == "dual":
        return [list(cfg.shallow_strides), list(cfg.deep_strides)]
    if cfg.method == "gauss":
        return []
    return [list(cfg.strides)]


def scale_groups(pairs: list[list[int]]) -> list[list[int]]:
    """Indices of each pair's maps in the model's flat output list."""
    groups, i = [], 0
    for p in pairs:
        groups.append(list(range(i, i + len(p))))
        i += len(p)
    return groups
