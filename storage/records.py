"""What storage.repository takes and returns: plain values and frozen dataclasses, never ORM
objects."""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class NamedWeights(Protocol):
    """A weighting that names its objectives (steering's `Weights` is one; storage imports no
    steering, so it takes anything of this shape)."""

    names: tuple[str, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class FrontierPoint:
    """One generation as a point in objective space."""

    generation_id: int
    prompt: str
    method: str
    objectives: tuple[str, ...]
    weights: tuple[float, ...]
    scores: dict[str, float]  # normalised score per scored objective (may be empty)
    text: str


@dataclass(frozen=True)
class WinRate:
    """Outcomes of the rated comparisons in which `key` (a method or weight region) took part.

    rate = (wins + ties / 2) / (wins + losses + ties), None without such outcomes; both-bad verdicts
    are counted but say nothing about which side is better, so they stay out of the rate.
    """

    key: str
    wins: int
    losses: int
    ties: int
    both_bad: int
    rate: float | None


@dataclass(frozen=True)
class MethodStrength:
    """Bradley-Terry log-strength of a method, centred over methods, with a bootstrap interval."""

    method: str
    strength: float
    low: float
    high: float
    comparisons: int  # rated comparisons against another method


@dataclass(frozen=True)
class RaterCount:
    rater_id: int
    anonymous_id: str
    user_name: str | None
    ratings: int


@dataclass(frozen=True)
class Steerability:
    """Do people see the steering? Over rated comparisons whose two sides had different weights on
    `objective`, how often the rater judged the higher-weighted side stronger on it.

    rate = agree / (agree + disagree + ties), None when there is no such comparison.
    """

    objective: str
    agree: int
    disagree: int
    ties: int
    rate: float | None


@dataclass(frozen=True)
class PreferenceRecord:
    """One rating as a training pair; lists are aligned with `objectives`.

    criterion: "overall" when chosen/rejected follow the overall vote, else the objective whose
    per-objective vote they follow. per_objective holds "chosen", "rejected", "tie" or None (not
    asked); likert_margin is the Likert answer turned toward the chosen side, -2..2 (2 = chosen
    much more, 0 = about the same), or None.
    """

    rating_id: int
    rating_uuid: str
    created_at: datetime
    rater_id: int
    criterion: str
    prompt: str
    chosen: str
    rejected: str
    chosen_generation_id: int
    rejected_generation_id: int
    chosen_method: str
    rejected_method: str
    chosen_adapter_id: str
    rejected_adapter_id: str
    objectives: tuple[str, ...]
    chosen_weights: tuple[float, ...]
    rejected_weights: tuple[float, ...]
    chosen_scores: tuple[float | None, ...]  # normalised; None where not scored
    rejected_scores: tuple[float | None, ...]
    per_objective: tuple[str | None, ...]
    likert_margin: tuple[int | None, ...]


@dataclass(frozen=True)
class Battle:
    """One rated comparison as an arena battle: the methods are the models."""

    rating_uuid: str
    created_at: datetime
    rater_id: int
    prompt: str
    model_a: str
    model_b: str
    response_a: str
    response_b: str
    winner: str  # "model_a", "model_b", "tie" or "tie (bothbad)", as FastChat writes it
