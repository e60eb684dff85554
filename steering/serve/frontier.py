"""Stored generations as points in objective space: each method's front and hypervolume.

What the page plots and the `/frontier` endpoint returns; the plotting itself is the page's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from steering.evaluation.evaluate import DEFAULT_REFERENCE
from steering.evaluation.pareto import hypervolume, non_dominated
from steering.model.methods import METHODS

__all__ = ["DEFAULT_REFERENCE", "PlotPoint", "fronts_by_method", "hypervolumes", "methods_in"]


@dataclass(frozen=True)
class PlotPoint:
    """One scored generation, its normalised scores aligned with the plot's objectives."""

    generation_id: int
    method: str
    weights: tuple[float, ...]
    scores: tuple[float, ...]
    text: str


def methods_in(points: Sequence[PlotPoint]) -> list[str]:
    """Methods in the order the app lists them, unknown ones after."""
    present = {p.method for p in points}
    known = [m for m in METHODS if m in present]
    return known + sorted(present - set(known))


def score_matrix(points: Sequence[PlotPoint]) -> np.ndarray:
    return np.array([p.scores for p in points], dtype=np.float64).reshape(len(points), -1)


def fronts_by_method(points: Sequence[PlotPoint]) -> dict[str, np.ndarray]:
    """For each method, the indices (into `points`) of its own non-dominated points."""
    fronts = {}
    for method in methods_in(points):
        idx = np.array([i for i, p in enumerate(points) if p.method == method])
        fronts[method] = idx[non_dominated(score_matrix([points[i] for i in idx]))]
    return fronts


def hypervolumes(points: Sequence[PlotPoint], reference: float) -> dict[str, float]:
    """Hypervolume of each method's points above `reference` on every objective."""
    if not points:
        return {}
    ref = np.full(len(points[0].scores), reference)
    return {
        method: hypervolume(score_matrix([p for p in points if p.method == method]), ref)
        for method in methods_in(points)
    }
