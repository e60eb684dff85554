"""The writes the app and the trainer call: plain values in, ids out (reads: storage.queries).

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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from storage.engine import run_write
from storage.models import (
    CHOICES,
    MAX_ADAPTER_ID_CHARS,
    MAX_PROMPT_CHARS,
    MAX_RATER_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_USER_NAME_CHARS,
    Comparison,
    Generation,
    Prompt,
    Rater,
    Rating,
    RatingObjective,
    RatingUndo,
    Score,
    as_utc,
)
from storage.records import (
    NamedWeights,
)
from storage.validation import (
    MAX_INT64,
    check_decoding,
    check_float,
    check_id,
    check_int,
    check_name,
    check_objectives,
    check_rating_parts,
    check_scores,
    check_text,
    check_uuid,
    check_weights,
)


class DuplicateVoteError(ValueError):
    """The rater has already voted on this comparison (with a different rating UUID)."""


# --- writes ------------------------------------------------------------------------------------


def prompt_row_id(session: Session, text: str) -> int:
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
    text = check_text(text, "the prompt", MAX_PROMPT_CHARS)
    return run_write(engine, lambda session: prompt_row_id(session, text))


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
    prompt = check_text(prompt, "the prompt", MAX_PROMPT_CHARS)
    text = check_text(text, "the generated text", MAX_TEXT_CHARS, allow_empty=True)
    method = check_name(method, "method")
    adapter_id = check_text(adapter_id, "adapter_id", MAX_ADAPTER_ID_CHARS)
    if adapter_sha256 is not None and (
        not isinstance(adapter_sha256, str)
        or len(adapter_sha256) != 64
        or not all(c in "0123456789abcdef" for c in adapter_sha256)
    ):
        raise ValueError("adapter_sha256 must be 64 lowercase hex digits.")
    names = check_objectives(objectives)
    weight_values = check_weights(weights, names)
    seed = check_int(seed, "seed", -MAX_INT64)
    decoding = check_decoding({} if decoding is None else decoding)
    tokens = check_int(tokens, "tokens", 0)
    latency_s = check_float(latency_s, "latency_s", minimum=0.0)
    checked_scores = check_scores({} if scores is None else scores)

    def write(session: Session) -> int:
        generation = Generation(
            prompt_id=prompt_row_id(session, prompt),
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
    generation_id = check_id(generation_id, "generation")
    checked = check_scores(scores)

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
    a_id = check_id(generation_a_id, "generation A")
    b_id = check_id(generation_b_id, "generation B")
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
    anonymous_id = check_text(anonymous_id, "the anonymous rater id", MAX_RATER_ID_CHARS)
    if user_name is not None:
        user_name = check_text(user_name, "the user name", MAX_USER_NAME_CHARS)

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
    comparison_id = check_id(comparison_id, "comparison")
    rater_id = check_id(rater_id, "rater")
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}; got {choice!r}.")
    key = check_uuid(rating_uuid)
    parts = check_rating_parts(per_objective, likert)

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
        if session.scalar(select(RatingUndo.id).where(RatingUndo.uuid == key)) is not None:
            raise ValueError(
                f"the vote with rating UUID {key} was undone; send a new UUID to vote again."
            )
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


def delete_rating(session: Session, rating: Rating) -> None:
    """Remove a rating row with its per-objective answers (inside the caller's transaction)."""
    for part in rating.objectives:
        session.delete(part)
    session.delete(rating)


def retract_rating(session: Session, rating: Rating, undone_at: datetime) -> None:
    """Undo a rating inside the caller's transaction: a RatingUndo row keeps what it said and
    when, and the rating goes, so its rater may vote on the comparison again."""
    session.add(
        RatingUndo(
            uuid=rating.uuid,
            comparison_id=rating.comparison_id,
            rater_id=rating.rater_id,
            choice=rating.choice,
            per_objective={o: list(v) for o, v in _rating_parts(rating).items()},
            rated_at=rating.created_at,
            undone_at=undone_at,
        )
    )
    delete_rating(session, rating)


def undo_last_rating(engine: Engine, rater_id: int, within_s: float) -> UUID:
    """Take back the rater's most recent vote if it is at most `within_s` seconds old; return its
    UUID. The rating row goes (so the rater may vote on that comparison again) and a RatingUndo
    row keeps what it said, all in one transaction. ValueError when there is none to undo."""
    rater_id = check_id(rater_id, "rater")
    within_s = check_float(within_s, "within_s", minimum=0.0)

    def write(session: Session) -> UUID:
        newest = (Rating.created_at.desc(), Rating.id.desc())
        rating = session.scalars(
            select(Rating).where(Rating.rater_id == rater_id).order_by(*newest).limit(1)
        ).first()
        now = datetime.now(UTC)
        if rating is None or (now - as_utc(rating.created_at)).total_seconds() > within_s:
            raise ValueError(f"you have no vote from the last {within_s:g} seconds to undo.")
        retract_rating(session, rating, now)
        return rating.uuid

    return run_write(engine, write)


def discard_rating(engine: Engine, rating_uuid: str | UUID) -> bool:
    """Delete a rating that was stored but could not be acknowledged (its log append failed),
    so that the database holds nothing the rater was not told was kept; True if it was there."""
    key = check_uuid(rating_uuid)

    def write(session: Session) -> bool:
        rating = session.scalar(select(Rating).where(Rating.uuid == key))
        if rating is None:
            return False
        delete_rating(session, rating)
        return True

    return run_write(engine, write)
