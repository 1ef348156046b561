"""Prune stage: structural pruning + recovery distillation of the chosen student (skipped without a student)."""

from __future__ import annotations

from edge_ad.calibrate.job import Hook, Job, PruneResult, State
from edge_ad.methods import get_method


def stage_prune(job: Job, state: State, hook: Hook | None) -> PruneResult:
    """Structural pruning + recovery distillation with the prune settings of the model config."""
    model = state.get("train").model
    if not job.recipe.prune:
        return PruneResult(model=model, skipped="prune.enabled is false in the recipe")
    method = state.get("train").method
    if not get_method(method).has_student:
        return PruneResult(model=model, skipped=f"method {method} has no student to prune")
    from edge_ad.training.prune import prune_model

    path = prune_model(model, out_dir=job.stage_dir("prune"), data_root=state.get("split").root)
    return PruneResult(model=str(path))
