"""The reads the app, the dashboard, the exports and the trainer call: plain values in, frozen
dataclasses (storage.records) out, never ORM objects.

    points = frontier_points(engine, "Write a haiku.")   # every stored generation of a prompt
    win_rates(engine, by="method"); bradley_terry(engine); human_steerability(engine, "positivity")
"""

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from storage import bradley_terry as bt
from storage.engine import read_session
from storage.models import (
    MAX_PROMPT_CHARS,
    Comparison,
    Generation,
    Prompt,
    Rater,
    Rating,
    RatingObjective,
    Score,
    as_utc,
)
from storage.records import (
    Battle,
    FrontierPoint,
    MethodStrength,
    PreferenceRecord,
    RaterCount,
    Steerability,
    WinRate,
)
from storage.validation import LIKERT_CHOICE, check_name, check_text


@dataclass(frozen=True)
class _Side:
    generation_id: int
    prompt: str
    text: str
    method: str
    adapter_id: str
    objectives: tuple[str, ...]
    weights: tuple[float, ...]
    scores: dict[str, float]

    def weight(self, objective: str) -> float | None:
        return (
            self.weights[self.objectives.index(objective)] if objective in self.objectives else None
        )


@dataclass(frozen=True)
class _RatedPair:
    rating_id: int
    uuid: UUID
    created_at: datetime
    rater_id: int
    choice: str
    a: _Side
    b: _Side
    # objective -> "a" | "b" | "tie": the per-objective choice, or the one its Likert answer implies
    per_objective: dict[str, str]
    likert: dict[str, int]


def _scores(session: Session, generation_ids) -> dict[int, dict[str, float]]:
    by_generation: dict[int, dict[str, float]] = {}
    rows = session.execute(
        select(Score.generation_id, Score.objective, Score.normalised).where(
            Score.generation_id.in_(generation_ids)
        )
    )
    for generation_id, objective, normalised in rows:
        by_generation.setdefault(generation_id, {})[objective] = normalised
    return by_generation


def _sides(session: Session, generation_ids) -> dict[int, _Side]:
    scores = _scores(session, generation_ids)
    rows = session.execute(
        select(Generation, Prompt.text)
        .join(Prompt, Generation.prompt_id == Prompt.id)
        .where(Generation.id.in_(generation_ids))
        .order_by(Generation.id)
    )
    return {
        g.id: _Side(
            generation_id=g.id,
            prompt=prompt,
            text=g.text,
            method=g.method,
            adapter_id=g.adapter_id,
            objectives=tuple(g.objectives),
            weights=tuple(g.weights),
            scores=scores.get(g.id, {}),
        )
        for g, prompt in rows
    }


def _rated_pairs(engine: Engine) -> list[_RatedPair]:
    with read_session(engine) as session:
        # Subqueries rather than lists of ids: SQLite limits how many parameters a statement takes.
        compared = select(Comparison.generation_a_id).union(select(Comparison.generation_b_id))
        sides = _sides(session, compared)
        parts: dict[int, list[RatingObjective]] = {}
        for part in session.scalars(select(RatingObjective)):
            parts.setdefault(part.rating_id, []).append(part)
        rows = session.execute(
            select(Rating, Comparison.generation_a_id, Comparison.generation_b_id)
            .join(Comparison, Rating.comparison_id == Comparison.id)
            .order_by(Rating.id)
        )
        pairs = []
        for rating, a_id, b_id in rows:
            mine = parts.get(rating.id, [])
            pairs.append(
                _RatedPair(
                    rating_id=rating.id,
                    uuid=rating.uuid,
                    created_at=as_utc(rating.created_at),
                    rater_id=rating.rater_id,
                    choice=rating.choice,
                    a=sides[a_id],
                    b=sides[b_id],
                    per_objective={p.objective: p.choice or LIKERT_CHOICE[p.likert] for p in mine},
                    likert={p.objective: p.likert for p in mine if p.likert is not None},
                )
            )
        return pairs


def frontier_points(engine: Engine, prompt: str | None = None) -> list[FrontierPoint]:
    """Every generation of `prompt` (of all prompts if None) with its normalised scores, oldest
    first. The non-dominated subset is for the caller to pick (steering.evaluation.pareto)."""
    with read_session(engine) as session:
        generations = select(Generation.id)
        if prompt is not None:
            digest = hashlib.sha256(check_text(prompt, "the prompt", MAX_PROMPT_CHARS).encode())
            generations = generations.join(Prompt, Generation.prompt_id == Prompt.id).where(
                Prompt.sha256 == digest.hexdigest()
            )
        sides = _sides(session, generations)
    return [
        FrontierPoint(
            generation_id=side.generation_id,
            prompt=side.prompt,
            method=side.method,
            objectives=side.objectives,
            weights=side.weights,
            scores=side.scores,
            text=side.text,
        )
        for side in sides.values()
    ]


def weight_region(objectives: tuple[str, ...], weights: tuple[float, ...]) -> str:
    """The objective with the largest weight; several joined by "+" when they share it."""
    top = max(weights)
    return "+".join(o for o, w in zip(objectives, weights, strict=True) if top - w <= 1e-9)


def win_rates(engine: Engine, by: str = "method") -> list[WinRate]:
    """Win rates of each method (by="method") or weight region (by="region", see weight_region),
    from rated comparisons between two different keys, sorted by key."""
    if by not in ("method", "region"):
        raise ValueError(f"win rates are by 'method' or 'region'; got {by!r}.")

    def key(side: _Side) -> str:
        return side.method if by == "method" else weight_region(side.objectives, side.weights)

    tally: dict[str, Counter] = {}
    for pair in _rated_pairs(engine):
        a, b = key(pair.a), key(pair.b)
        if a == b:
            continue
        outcome_a, outcome_b = {
            "a": ("wins", "losses"),
            "b": ("losses", "wins"),
            "tie": ("ties", "ties"),
            "both_bad": ("both_bad", "both_bad"),
        }[pair.choice]
        tally.setdefault(a, Counter())[outcome_a] += 1
        tally.setdefault(b, Counter())[outcome_b] += 1
    rates = []
    for name in sorted(tally):
        count = tally[name]
        decided = count["wins"] + count["losses"] + count["ties"]
        rates.append(
            WinRate(
                key=name,
                wins=count["wins"],
                losses=count["losses"],
                ties=count["ties"],
                both_bad=count["both_bad"],
                rate=(count["wins"] + count["ties"] / 2) / decided if decided else None,
            )
        )
    return rates


def bradley_terry(
    engine: Engine, n_bootstrap: int = 200, prior: float = 0.01, seed: int = 0
) -> list[MethodStrength]:
    """Bradley-Terry strengths of the methods, strongest first, with 95% bootstrap intervals.

    Uses rated comparisons between two different methods; ties and both-bad count half a win to
    each side. See storage.bradley_terry for the model and the role of `prior`.
    """
    pairs = [p for p in _rated_pairs(engine) if p.a.method != p.b.method]
    if not pairs:
        return []
    methods = sorted({p.a.method for p in pairs} | {p.b.method for p in pairs})
    index = {method: i for i, method in enumerate(methods)}
    first = np.array([index[p.a.method] for p in pairs])
    second = np.array([index[p.b.method] for p in pairs])
    outcome = np.array([{"a": 1.0, "b": 0.0}.get(p.choice, 0.5) for p in pairs])
    strength = bt.fit(first, second, outcome, len(methods), prior)
    low, high = bt.bootstrap_interval(
        first, second, outcome, len(methods), prior, n_resamples=n_bootstrap, seed=seed
    )
    counts = Counter(np.concatenate([first, second]).tolist())
    return sorted(
        (
            MethodStrength(
                method=method,
                strength=float(strength[i]),
                low=float(low[i]),
                high=float(high[i]),
                comparisons=counts[i],
            )
            for method, i in index.items()
        ),
        key=lambda s: -s.strength,
    )


def rater_counts(engine: Engine) -> list[RaterCount]:
    """Ratings per rater, most active first (raters without ratings included)."""
    with read_session(engine) as session:
        rows = session.execute(
            select(Rater.id, Rater.anonymous_id, Rater.user_name, func.count(Rating.id))
            .outerjoin(Rating, Rating.rater_id == Rater.id)
            .group_by(Rater.id, Rater.anonymous_id, Rater.user_name)
            .order_by(func.count(Rating.id).desc(), Rater.id)
        )
        return [RaterCount(*row) for row in rows]


def human_steerability(engine: Engine, objective: str) -> Steerability:
    """How often raters judged the side with the higher weight on `objective` stronger on it."""
    objective = check_name(objective, "objective")
    outcome: Counter = Counter()
    for pair in _rated_pairs(engine):
        verdict = pair.per_objective.get(objective)
        weight_a, weight_b = pair.a.weight(objective), pair.b.weight(objective)
        if verdict is None or weight_a is None or weight_b is None or weight_a == weight_b:
            continue
        higher = "a" if weight_a > weight_b else "b"
        outcome["ties" if verdict == "tie" else "agree" if verdict == higher else "disagree"] += 1
    total = sum(outcome.values())
    return Steerability(
        objective=objective,
        agree=outcome["agree"],
        disagree=outcome["disagree"],
        ties=outcome["ties"],
        rate=outcome["agree"] / total if total else None,
    )


def preference_records(engine: Engine, objective: str | None = None) -> list[PreferenceRecord]:
    """Ratings as (prompt, chosen, rejected) pairs for DPO or reward-model training, oldest first.

    objective=None follows the overall vote and leaves out ties and both-bad votes; an objective
    name follows the per-objective vote on it instead (a Likert answer counts as the vote it
    implies) and leaves out ratings without a decisive one.
    """
    criterion = "overall" if objective is None else check_name(objective, "objective")
    records = []
    for pair in _rated_pairs(engine):
        winner = pair.choice if objective is None else pair.per_objective.get(objective)
        if winner not in ("a", "b"):
            continue
        chosen, rejected = (pair.a, pair.b) if winner == "a" else (pair.b, pair.a)
        turned = {winner: "chosen", "tie": "tie"}
        objectives = chosen.objectives
        records.append(
            PreferenceRecord(
                rating_id=pair.rating_id,
                rating_uuid=str(pair.uuid),
                created_at=pair.created_at,
                rater_id=pair.rater_id,
                criterion=criterion,
                prompt=chosen.prompt,
                chosen=chosen.text,
                rejected=rejected.text,
                chosen_generation_id=chosen.generation_id,
                rejected_generation_id=rejected.generation_id,
                chosen_method=chosen.method,
                rejected_method=rejected.method,
                chosen_adapter_id=chosen.adapter_id,
                rejected_adapter_id=rejected.adapter_id,
                objectives=objectives,
                chosen_weights=chosen.weights,
                rejected_weights=rejected.weights,
                chosen_scores=tuple(chosen.scores.get(o) for o in objectives),
                rejected_scores=tuple(rejected.scores.get(o) for o in objectives),
                per_objective=tuple(
                    turned.get(pair.per_objective[o], "rejected")
                    if o in pair.per_objective
                    else None
                    for o in objectives
                ),
                likert_margin=tuple(
                    (3 - pair.likert[o]) * (1 if winner == "a" else -1)
                    if o in pair.likert
                    else None
                    for o in objectives
                ),
            )
        )
    return records


def stats(engine: Engine) -> dict[str, int]:
    """Counts only, safe to show anyone: generations, ratings, and raters who have rated."""
    with read_session(engine) as session:
        return {
            "generations": session.scalar(select(func.count(Generation.id))) or 0,
            "ratings": session.scalar(select(func.count(Rating.id))) or 0,
            "raters": session.scalar(select(func.count(func.distinct(Rating.rater_id)))) or 0,
        }


_WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}


def battles(engine: Engine) -> list[Battle]:
    """Every rating, ties and both-bad verdicts included, as a battle between the two methods."""
    return [
        Battle(
            rating_uuid=str(p.uuid),
            created_at=as_utc(p.created_at),
            rater_id=p.rater_id,
            prompt=p.a.prompt,
            model_a=p.a.method,
            model_b=p.b.method,
            response_a=p.a.text,
            response_b=p.b.text,
            winner=_WINNER[p.choice],
        )
        for p in _rated_pairs(engine)
    ]


def comparison_texts(engine: Engine, comparison_id: int) -> tuple[str, str] | None:
    """The texts of a comparison's two sides (A, B), or None when there is no such comparison."""
    with read_session(engine) as session:
        comparison = session.get(Comparison, int(comparison_id))
        if comparison is None:
            return None
        a = session.get(Generation, comparison.generation_a_id)
        b = session.get(Generation, comparison.generation_b_id)
        return a.text, b.text
