"""Scoring a candidate pool with the objectives, cached per objective next to the pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steering.objectives.declared import ObjectiveSet
from steering.training.pool import Candidate


def score_pool(
    candidates: list[Candidate], objectives: ObjectiveSet, cache: Path | None
) -> dict[str, np.ndarray]:
    """Raw scores of every candidate, cached per scorer next to the pool (under each spec's
    `cache_key`, so a name declared anew with another model is scored anew)."""
    cached: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as stored:
            cached = {
                name: stored[name] for name in stored.files if len(stored[name]) == len(candidates)
            }
    keys = {spec.name: spec.cache_key for spec in objectives.specs}
    missing = [name for name, key in keys.items() if key not in cached]
    if missing:
        prompts = [c.prompt for c in candidates]
        texts = [c.text for c in candidates]
        scores = objectives.select(missing).score(prompts, texts)
        cached.update({keys[name]: values for name, values in scores.items()})
        if cache is not None:
            np.savez(cache, **cached)
    return {name: cached[key] for name, key in keys.items()}


def pool_scores_path(pool: Path) -> Path:
    return pool.with_suffix(".scores.npz")
