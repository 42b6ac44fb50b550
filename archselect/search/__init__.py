"""Optuna search: spaces from YAML, the objective, the study (storage, sampler, pruner, resume)."""
