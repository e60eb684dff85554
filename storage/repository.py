"""The functions the app and the trainer call: plain values in, ids or frozen dataclasses out.

    upgrade(); engine = make_engine()          # storage.engine; DATABASE_URL picks the database
    gid = add_generation(engine, "Write a haiku.", text, "clp", "assets/adapters/clp",
                         weights, seed=0,     # weights: names + values (steering.weights.Weights)
                         decoding={"temperature": 0.7}, tokens=17, latency_s=0.42,
                         scores={"positivity": (0.93, 0.88), "brevity": (12.0, 0.61)})
    cid = add_comparison(engine, gid, other_gid)
    add_rating(engine, cid, ensure_rater(engine, "anon-42"), "a", rating_uuid=client_uuid)

Every write is one transaction (see storage.engine.run_write): it is stored whole or not at all.
Bad input raises one ValueError whose message can be shown to the user as it is: the checks of
the values run before the transaction, those against stored rows (unknown ids, a second vote)
inside it, which the error rolls back.
"""

import hashlib
import json
import math
import numbers
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from storage import bradley_terry as bt
from storage.engine import read_session, run_write
from storage.models import (
    CHOICES,
    MAX_ADAPTER_ID_CHARS,
    MAX_DECODING_JSON_CHARS,
    MAX_NAME_CHARS,
    MAX_OBJECTIVES,
    MAX_PROMPT_CHARS,
    MAX_RATER_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_USER_NAME_CHARS,
    OBJECTIVE_CHOICES,
    Comparison,
    Generation,
    Prompt,
    Rater,
    Rating,
    RatingObjective,
    Score,
)
from storage.records import (
    FrontierPoint,
    MethodStrength,
    NamedWeights,
    PreferenceRecord,
    RaterCount,
    Steerability,
    WinRate,
)

# Weights live on the simplex; float32 sliders summing to 1 can be off by a few ulps.
_SIMPLEX_TOLERANCE = 1e-5
_MAX_INT64 = 2**63 - 1
# Likert answers 1-2 say A is more <objective>, 3 the same, 4-5 B.
_LIKERT_CHOICE = {1: "a", 2: "a", 3: "tie", 4: "b", 5: "b"}


class DuplicateVoteError(ValueError):
    """The rater has already voted on this comparison (with a different rating UUID)."""


# --- validation -------------------------------------------------------------------------------


def _check_text(value: object, what: str, limit: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string; got {type(value).__name__}.")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} is empty.")
    if len(value) > limit:
        raise ValueError(f"{what} has {len(value)} characters; the limit is {limit}.")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character, which cannot be stored.")
    return value


def _check_name(value: object, what: str) -> str:
    name = _check_text(value, what, MAX_NAME_CHARS)
    if name != name.strip() or not name.isprintable():
        raise ValueError(f"{what} {name!r} has surrounding spaces or unprintable characters.")
    return name


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be an integer; got {value!r}.")
    if not minimum <= int(value) <= _MAX_INT64:
        raise ValueError(f"{what} must be between {minimum} and {_MAX_INT64}; got {value}.")
    return int(value)


def _check_id(value: object, what: str) -> int:
    return _check_int(value, f"{what} id", 1)


def _check_float(value: object, what: str, minimum: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number; got {value!r}.")
    number = float(value)
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"{what} must be a finite number >= {minimum}; got {value!r}.")
    return number


def _check_objectives(objectives: object) -> tuple[str, ...]:
    if isinstance(objectives, str) or not isinstance(objectives, Iterable):
        raise ValueError("objectives must be a list of objective names.")
    names = tuple(_check_name(name, "objective name") for name in objectives)
    if not 1 <= len(names) <= MAX_OBJECTIVES:
        raise ValueError(f"give between 1 and {MAX_OBJECTIVES} objectives; got {len(names)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"objectives {list(names)} name an objective twice.")
    return names


def _check_weights(weights: object, objectives: tuple[str, ...]) -> tuple[float, ...]:
    if isinstance(weights, str) or not isinstance(weights, Iterable):
        raise ValueError("weights must be a list of numbers, one per objective.")
    values = tuple(_check_float(w, "each weight", minimum=0.0) for w in weights)
    if len(values) != len(objectives):
        raise ValueError(
            f"got {len(values)} weights for {len(objectives)} objectives {list(objectives)}."
        )
    if abs(sum(values) - 1.0) > _SIMPLEX_TOLERANCE:
        raise ValueError(f"weights must sum to 1; {list(values)} sum to {sum(values):.6g}.")
    return values


def _check_scores(scores: object) -> dict[str, tuple[float, float]]:
    if not isinstance(scores, Mapping):
        raise ValueError("scores must map objective name to a (raw, normalised) pair.")
    checked = {}
    for objective, pair in scores.items():
        name = _check_name(objective, "score objective")
        values = () if isinstance(pair, str) or not isinstance(pair, Iterable) else tuple(pair)
        if len(values) != 2:
            raise ValueError(f"the score for {name!r} must be a (raw, normalised) pair.")
        checked[name] = (
            _check_float(values[0], f"raw score for {name!r}"),
            _check_float(values[1], f"normalised score for {name!r}"),
        )
    return checked


def _check_decoding(decoding: object) -> dict[str, object]:
    if not isinstance(decoding, Mapping) or not all(isinstance(k, str) for k in decoding):
        raise ValueError("decoding must map parameter names to values.")
    try:
        encoded = json.dumps(dict(decoding), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError):
        raise ValueError(
            "decoding parameters must be finite numbers, strings, booleans, lists or None."
        ) from None
    if len(encoded) > MAX_DECODING_JSON_CHARS:
        raise ValueError(
            f"decoding parameters take {len(encoded)} characters as JSON; "
            f"the limit is {MAX_DECODING_JSON_CHARS}."
        )
    return json.loads(encoded)


def _check_uuid(value: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise ValueError(f"rating_uuid must be a UUID; got {value!r}.")


def _check_rating_parts(
    per_objective: object, likert: object
) -> dict[str, tuple[str | None, int | None]]:
    """Merge per-objective choices and Likert answers into {objective: (choice, likert)}."""
    per_objective = {} if per_objective is None else per_objective
    likert = {} if likert is None else likert
    if not isinstance(per_objective, Mapping) or not isinstance(likert, Mapping):
        raise ValueError("per_objective and likert must map objective names to answers.")
    parts: dict[str, tuple[str | None, int | None]] = {}
    for objective, choice in per_objective.items():
        name = _check_name(objective, "per-objective objective")
        if choice not in OBJECTIVE_CHOICES:
            raise ValueError(
                f"the choice for {name!r} must be one of {', '.join(OBJECTIVE_CHOICES)}; "
                f"got {choice!r}."
            )
        parts[name] = (choice, None)
    for objective, value in likert.items():
        name = _check_name(objective, "Likert objective")
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not 1 <= value <= 5
        ):
            raise ValueError(
                f"the Likert value for {name!r} must be an integer 1-5; got {value!r}."
            )
        choice = parts.get(name, (None, None))[0]
        if choice is not None and choice != _LIKERT_CHOICE[int(value)]:
            raise ValueError(
                f"for {name!r} the choice {choice!r} contradicts the Likert value {value} "
                "(1-2 mean A, 3 the same, 4-5 B)."
            )
        parts[name] = (choice, int(value))
    return parts


# --- writes ------------------------------------------------------------------------------------


def _prompt_id(session: Session, text: str) -> int:
    digest = hashlib.sha256(text.encode()).hexdigest()
    found = session.scalar(select(Prompt.id).where(Prompt.sha256 == digest))
    if found is not None:
        return found
    prompt = Prompt(sha256=digest, text=text)
    session.add(prompt)
    session.flush()
    return prompt.id


def add_prompt(engine: Engine, text: str) -> int:
    """Id of the prompt with exactly this text, stored first if new."""
    text = _check_text(text, "the prompt", MAX_PROMPT_CHARS)
    return run_write(engine, lambda session: _prompt_id(session, text))


def add_generation(
    engine: Engine,
    prompt: str,
    text: str,
    method: str,
    adapter_id: str,
    weights: NamedWeights | Iterable[float],
    objectives: Iterable[str] | None = None,
    seed: int = 0,
    decoding: Mapping[str, object] | None = None,
    tokens: int = 0,
    latency_s: float = 0.0,
    *,
    adapter_sha256: str | None = None,
    scores: Mapping[str, tuple[float, float]] | None = None,
) -> int:
    """Store a generation (and, in the same transaction, its scores); return its id.

    `weights` names its objectives (`weights.names`, `weights.values`: a steering `Weights`),
    or is a list of numbers with `objectives` beside it; weights[k] is the weight on objectives[k]
    and the weights lie on the simplex. Either way they are checked again here: the database
    trusts no caller. `scores` maps an objective to its (raw, normalised) score. The prompt is
    stored too if it is new.
    """
    if isinstance(weights, NamedWeights):
        if objectives is not None:
            raise ValueError("weights that name their objectives take no separate objectives.")
        weights, objectives = weights.values, weights.names
    elif objectives is None:
        raise ValueError("objectives must be a list of objective names.")
    prompt = _check_text(prompt, "the prompt", MAX_PROMPT_CHARS)
    text = _check_text(text, "the generated text", MAX_TEXT_CHARS, allow_empty=True)
    method = _check_name(method, "method")
    adapter_id = _check_text(adapter_id, "adapter_id", MAX_ADAPTER_ID_CHARS)
    if adapter_sha256 is not None and (
        not isinstance(adapter_sha256, str)
        or len(adapter_sha256) != 64
        or not all(c in "0123456789abcdef" for c in adapter_sha256)
    ):
        raise ValueError("adapter_sha256 must be 64 lowercase hex digits.")
    names = _check_objectives(objectives)
    weight_values = _check_weights(weights, names)
    seed = _check_int(seed, "seed", -_MAX_INT64)
    decoding = _check_decoding({} if decoding is None else decoding)
    tokens = _check_int(tokens, "tokens", 0)
    latency_s = _check_float(latency_s, "latency_s", minimum=0.0)
    checked_scores = _check_scores({} if scores is None else scores)

    def write(session: Session) -> int:
        generation = Generation(
            prompt_id=_prompt_id(session, prompt),
            text=text,
            method=method,
            adapter_id=adapter_id,
            adapter_sha256=adapter_sha256,
            objectives=list(names),
            weights=list(weight_values),
            seed=seed,
            decoding=decoding,
            tokens=tokens,
            latency_s=latency_s,
            scores=[
                Score(objective=objective, raw=raw, normalised=normalised)
                for objective, (raw, normalised) in checked_scores.items()
            ],
        )
        session.add(generation)
        session.flush()
        return generation.id

    return run_write(engine, write)


def add_scores(
    engine: Engine, generation_id: int, scores: Mapping[str, tuple[float, float]]
) -> None:
    """Store (raw, normalised) scores for objectives the generation has no score for yet."""
    generation_id = _check_id(generation_id, "generation")
    checked = _check_scores(scores)

    def write(session: Session) -> None:
        if session.get(Generation, generation_id) is None:
            raise ValueError(f"there is no generation with id {generation_id}.")
        existing = set(
            session.scalars(
                select(Score.objective).where(
                    Score.generation_id == generation_id, Score.objective.in_(list(checked))
                )
            )
        )
        if existing:
            raise ValueError(
                f"generation {generation_id} already has scores for {sorted(existing)}."
            )
        session.add_all(
            Score(generation_id=generation_id, objective=o, raw=raw, normalised=normalised)
            for o, (raw, normalised) in checked.items()
        )

    run_write(engine, write)


def add_comparison(engine: Engine, generation_a_id: int, generation_b_id: int) -> int:
    """Record that two generations of the same prompt were shown side by side (A left, B right)."""
    a_id = _check_id(generation_a_id, "generation A")
    b_id = _check_id(generation_b_id, "generation B")
    if a_id == b_id:
        raise ValueError("a comparison needs two different generations.")

    def write(session: Session) -> int:
        a, b = session.get(Generation, a_id), session.get(Generation, b_id)
        for generation_id, generation in ((a_id, a), (b_id, b)):
            if generation is None:
                raise ValueError(f"there is no generation with id {generation_id}.")
        if a.prompt_id != b.prompt_id:
            raise ValueError(f"generations {a_id} and {b_id} answer different prompts.")
        if a.objectives != b.objectives:
            raise ValueError(
                f"generations {a_id} and {b_id} are steered on different objectives "
                f"({a.objectives} and {b.objectives})."
            )
        comparison = Comparison(prompt_id=a.prompt_id, generation_a_id=a_id, generation_b_id=b_id)
        session.add(comparison)
        session.flush()
        return comparison.id

    return run_write(engine, write)


def ensure_rater(engine: Engine, anonymous_id: str, user_name: str | None = None) -> int:
    """Id of the rater with this anonymous id, created if new; records `user_name` when given."""
    anonymous_id = _check_text(anonymous_id, "the anonymous rater id", MAX_RATER_ID_CHARS)
    if user_name is not None:
        user_name = _check_text(user_name, "the user name", MAX_USER_NAME_CHARS)

    def write(session: Session) -> int:
        rater = session.scalar(select(Rater).where(Rater.anonymous_id == anonymous_id))
        if rater is None:
            rater = Rater(anonymous_id=anonymous_id, user_name=user_name)
            session.add(rater)
            session.flush()
        elif user_name is not None and rater.user_name != user_name:
            rater.user_name = user_name
        return rater.id

    return run_write(engine, write)


def _rating_parts(rating: Rating) -> dict[str, tuple[str | None, int | None]]:
    return {part.objective: (part.choice, part.likert) for part in rating.objectives}


def add_rating(
    engine: Engine,
    comparison_id: int,
    rater_id: int,
    choice: str,
    rating_uuid: str | UUID,
    per_objective: Mapping[str, str] | None = None,
    likert: Mapping[str, int] | None = None,
) -> int:
    """Store a vote on a comparison and return its id.

    choice: "a", "b", "tie" or "both_bad". per_objective: objective -> "a", "b" or "tie" (which
    side is more <objective>). likert: objective -> 1..5 (1 = A much more, 3 = about the same,
    5 = B much more); where both are given for an objective they must agree.

    Idempotent: resubmitting the same rating with the same `rating_uuid` returns the stored id and
    stores nothing new. Raises DuplicateVoteError (a ValueError) when the rater has already voted
    on this comparison under another UUID, and ValueError when the UUID belongs to another vote.
    """
    comparison_id = _check_id(comparison_id, "comparison")
    rater_id = _check_id(rater_id, "rater")
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}; got {choice!r}.")
    key = _check_uuid(rating_uuid)
    parts = _check_rating_parts(per_objective, likert)

    def write(session: Session) -> int:
        # One statement, hence one snapshot, for both checks: under PostgreSQL's READ COMMITTED a
        # concurrent resubmission committing between two separate queries would look like a
        # second vote. A row committed after this query makes the insert fail and run_write rerun.
        earlier = session.scalars(
            select(Rating).where(
                (Rating.uuid == key)
                | ((Rating.comparison_id == comparison_id) & (Rating.rater_id == rater_id))
            )
        ).all()
        for stored in earlier:
            if stored.uuid != key:
                continue
            if (stored.comparison_id, stored.rater_id, stored.choice, _rating_parts(stored)) != (
                comparison_id,
                rater_id,
                choice,
                parts,
            ):
                raise ValueError(
                    f"rating UUID {key} was already used for a different vote; "
                    "send a new UUID with each new vote."
                )
            return stored.id
        if earlier:
            raise DuplicateVoteError(
                f"rater {rater_id} has already voted on comparison {comparison_id}; "
                "each rater gets one vote per comparison."
            )
        comparison = session.get(Comparison, comparison_id)
        if comparison is None:
            raise ValueError(f"there is no comparison with id {comparison_id}.")
        if session.get(Rater, rater_id) is None:
            raise ValueError(f"there is no rater with id {rater_id}.")
        objectives = session.get(Generation, comparison.generation_a_id).objectives
        unknown = sorted(set(parts) - set(objectives))
        if unknown:
            raise ValueError(
                f"comparison {comparison_id} is steered on {objectives}, not on {unknown}."
            )
        rating = Rating(
            uuid=key,
            comparison_id=comparison_id,
            rater_id=rater_id,
            choice=choice,
            objectives=[
                RatingObjective(objective=o, choice=c, likert=v) for o, (c, v) in parts.items()
            ],
        )
        session.add(rating)
        session.flush()
        return rating.id

    return run_write(engine, write)


# --- reads -------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
                    created_at=_utc(rating.created_at),
                    rater_id=rating.rater_id,
                    choice=rating.choice,
                    a=sides[a_id],
                    b=sides[b_id],
                    per_objective={p.objective: p.choice or _LIKERT_CHOICE[p.likert] for p in mine},
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
            digest = hashlib.sha256(_check_text(prompt, "the prompt", MAX_PROMPT_CHARS).encode())
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
    objective = _check_name(objective, "objective")
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
    criterion = "overall" if objective is None else _check_name(objective, "objective")
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
