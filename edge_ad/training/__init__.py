"""Training half (imports torch): distillation loop, augmentations, pruning, demo data."""
