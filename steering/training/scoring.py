"""Scoring a candidate pool with the objectives, cached per objective next to the pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steering.objectives import score
from steering.training.pool import Candidate


def score_pool(
    candidates: list[Candidate], objectives: tuple[str, ...], cache: Path | None
) -> dict[str, np.ndarray]:
    """Raw scores of every candidate, cached per objective next to the pool."""
    cached: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as stored:
            cached = {
                name: stored[name] for name in stored.files if len(stored[name]) == len(candidates)
            }
    missing = [name for name in objectives if name not in cached]
    if missing:
        prompts = [c.prompt for c in candidates]
        texts = [c.text for c in candidates]
        cached.update(score(missing, prompts, texts))
        if cache is not None:
            np.savez(cache, **cached)
    return {name: cached[name] for name in objectives}


def pool_scores_path(pool: Path) -> Path:
    return pool.with_suffix(".scores.npz")
