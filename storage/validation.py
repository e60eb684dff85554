"""The checks every write runs on what its caller sent, before the transaction: storage trusts no
caller. Each failure is one ValueError whose message can be shown to the user as it is."""

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from uuid import UUID

from storage.models import (
    MAX_DECODING_JSON_CHARS,
    MAX_NAME_CHARS,
    MAX_OBJECTIVES,
    OBJECTIVE_CHOICES,
)

# Weights live on the simplex; float32 sliders summing to 1 can be off by a few ulps.
SIMPLEX_TOLERANCE = 1e-5
MAX_INT64 = 2**63 - 1
# Likert answers 1-2 say A is more <objective>, 3 the same, 4-5 B.
LIKERT_CHOICE = {1: "a", 2: "a", 3: "tie", 4: "b", 5: "b"}


def check_text(value: object, what: str, limit: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string; got {type(value).__name__}.")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} is empty.")
    if len(value) > limit:
        raise ValueError(f"{what} has {len(value)} characters; the limit is {limit}.")
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character, which cannot be stored.")
    return value


def check_name(value: object, what: str) -> str:
    name = check_text(value, what, MAX_NAME_CHARS)
    if name != name.strip() or not name.isprintable():
        raise ValueError(f"{what} {name!r} has surrounding spaces or unprintable characters.")
    return name


def check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be an integer; got {value!r}.")
    if not minimum <= int(value) <= MAX_INT64:
        raise ValueError(f"{what} must be between {minimum} and {MAX_INT64}; got {value}.")
    return int(value)


def check_id(value: object, what: str) -> int:
    return check_int(value, f"{what} id", 1)


def check_float(value: object, what: str, minimum: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number; got {value!r}.")
    number = float(value)
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"{what} must be a finite number >= {minimum}; got {value!r}.")
    return number


def check_objectives(objectives: object) -> tuple[str, ...]:
    if isinstance(objectives, str) or not isinstance(objectives, Iterable):
        raise ValueError("objectives must be a list of objective names.")
    names = tuple(check_name(name, "objective name") for name in objectives)
    if not 1 <= len(names) <= MAX_OBJECTIVES:
        raise ValueError(f"give between 1 and {MAX_OBJECTIVES} objectives; got {len(names)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"objectives {list(names)} name an objective twice.")
    return names


def check_weights(weights: object, objectives: tuple[str, ...]) -> tuple[float, ...]:
    if isinstance(weights, str) or not isinstance(weights, Iterable):
        raise ValueError("weights must be a list of numbers, one per objective.")
    values = tuple(check_float(w, "each weight", minimum=0.0) for w in weights)
    if len(values) != len(objectives):
        raise ValueError(
            f"got {len(values)} weights for {len(objectives)} objectives {list(objectives)}."
        )
    if abs(sum(values) - 1.0) > SIMPLEX_TOLERANCE:
        raise ValueError(f"weights must sum to 1; {list(values)} sum to {sum(values):.6g}.")
    return values


def check_scores(scores: object) -> dict[str, tuple[float, float]]:
    if not isinstance(scores, Mapping):
        raise ValueError("scores must map objective name to a (raw, normalised) pair.")
    checked = {}
    for objective, pair in scores.items():
        name = check_name(objective, "score objective")
        values = () if isinstance(pair, str) or not isinstance(pair, Iterable) else tuple(pair)
        if len(values) != 2:
            raise ValueError(f"the score for {name!r} must be a (raw, normalised) pair.")
        checked[name] = (
            check_float(values[0], f"raw score for {name!r}"),
            check_float(values[1], f"normalised score for {name!r}"),
        )
    return checked


def check_decoding(decoding: object) -> dict[str, object]:
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


def check_uuid(value: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ValueError(f"rating_uuid must be a UUID; got {shown}.")


def check_rating_parts(
    per_objective: object, likert: object
) -> dict[str, tuple[str | None, int | None]]:
    """Merge per-objective choices and Likert answers into {objective: (choice, likert)}."""
    per_objective = {} if per_objective is None else per_objective
    likert = {} if likert is None else likert
    if not isinstance(per_objective, Mapping) or not isinstance(likert, Mapping):
        raise ValueError("per_objective and likert must map objective names to answers.")
    parts: dict[str, tuple[str | None, int | None]] = {}
    for objective, choice in per_objective.items():
        name = check_name(objective, "per-objective objective")
        if choice not in OBJECTIVE_CHOICES:
            raise ValueError(
                f"the choice for {name!r} must be one of {', '.join(OBJECTIVE_CHOICES)}; "
                f"got {choice!r}."
            )
        parts[name] = (choice, None)
    for objective, value in likert.items():
        name = check_name(objective, "Likert objective")
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not 1 <= value <= 5
        ):
            raise ValueError(
                f"the Likert value for {name!r} must be an integer 1-5; got {value!r}."
            )
        choice = parts.get(name, (None, None))[0]
        if choice is not None and choice != LIKERT_CHOICE[int(value)]:
            raise ValueError(
                f"for {name!r} the choice {choice!r} contradicts the Likert value {value} "
                "(1-2 mean A, 3 the same, 4-5 B)."
            )
        parts[name] = (choice, int(value))
    return parts
