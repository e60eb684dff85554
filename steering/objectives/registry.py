"""The objective registry: a name -> scorer map filled by `@register_objective`.

A scorer takes a batch of prompts and the responses to them (two equal-length lists of str) and
returns one finite float per pair. `Objective.__call__` checks that contract, so a scorer bug
surfaces as an error naming the objective instead of a NaN inside a training run.

    @register_objective("shouting", description="Fraction of upper-case letters.")
    def shouting(prompts, responses):
        return [sum(c.isupper() for c in r) / max(1, len(r)) for r in responses]

Installed packages add objectives without being imported first, through the entry-point group
`steering.objectives` (name = "package.module:scorer"); each loads when it is first asked for.

    [project.entry-points."steering.objectives"]
    shouting = "mypackage.rewards:shouting"
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

import numpy as np

from steering.errors import UserError

Scorer = Callable[[list[str], list[str]], "Sequence[float] | np.ndarray"]
ENTRY_POINT_GROUP = "steering.objectives"


@dataclass(frozen=True)
class Objective:
    """One reward objective.

    `higher_is_better` tells the Pareto code which direction dominates; every built-in objective
    is higher-is-better. `fn` is the raw scorer; call the objective itself to get the checks.
    """

    name: str
    higher_is_better: bool
    description: str
    fn: Scorer

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        prompts, responses = _check_batch(prompts, responses)
        if not responses:
            return np.zeros(0, dtype=np.float64)
        scores = np.asarray(self.fn(prompts, responses), dtype=np.float64)
        if scores.shape != (len(responses),):
            raise RuntimeError(
                f"objective {self.name!r} returned shape {scores.shape} for "
                f"{len(responses)} responses; a scorer must return one float per pair"
            )
        if not np.all(np.isfinite(scores)):
            bad = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise RuntimeError(
                f"objective {self.name!r} returned {scores[bad]} for response {bad} "
                f"({responses[bad][:60]!r}); scorers must return finite floats"
            )
        return scores


_REGISTRY: dict[str, Objective] = {}


def register_objective(
    name: str, *, higher_is_better: bool = True, description: str = ""
) -> Callable[[Scorer], Scorer]:
    """Decorator registering `fn(prompts, responses) -> scores` under `name`.

    Returns the function unchanged so it stays directly callable (and testable) without the
    registry's checks.
    """
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"objective name {name!r} must be lower-case letters, digits and '_'")

    def decorator(fn: Scorer) -> Scorer:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} is already registered")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = Objective(
            name=name, higher_is_better=higher_is_better, description=doc, fn=fn
        )
        return fn

    return decorator


def available_objectives() -> list[str]:
    """Registered names and those installed packages offer, sorted."""
    return sorted(set(_REGISTRY) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def get_objective(name: str) -> Objective:
    """The objective called `name`; an unknown name is a UserError listing the known ones."""
    if name not in _REGISTRY:
        _load_entry_point(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown objective {name!r}; available objectives: {', '.join(available_objectives())}"
        ) from None


def _load_entry_point(name: str) -> None:
    """Register the scorer an installed package offers under `name`, if one does."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        return
    entry = next(iter(found))
    try:
        scorer = entry.load()
    except Exception as error:  # a plugin's import can fail in any way; name it and go on
        raise UserError(
            f"objective {name!r} from the installed entry point {entry.value} could not be "
            f"loaded ({type(error).__name__}: {error})"
        ) from None
    if isinstance(scorer, Objective):
        scorer = scorer.fn
    if not callable(scorer):
        raise UserError(f"the entry point {entry.value} of objective {name!r} is not callable")
    register_objective(name)(scorer)


def score(
    names: str | Iterable[str], prompts: Sequence[str], responses: Sequence[str]
) -> dict[str, np.ndarray]:
    """Score every (prompt, response) pair with each named objective.

    All names are resolved before any scorer runs, so a typo fails fast instead of after a slow
    model-based objective. Returns {name: float64 array of len(responses)} in the order given.
    """
    names = [names] if isinstance(names, str) else list(names)
    objectives = [get_objective(name) for name in names]
    prompts, responses = _check_batch(prompts, responses)
    return {objective.name: objective(prompts, responses) for objective in objectives}


def list_objectives_json() -> str:
    """The registry as JSON, for `python -m steering objectives --json`."""
    rows = [
        {"name": o.name, "higher_is_better": o.higher_is_better, "description": o.description}
        for o in map(get_objective, available_objectives())
    ]
    return json.dumps(rows, indent=2)


def list_objectives_text() -> str:
    """The registry as an aligned plain-text table, for `python -m steering objectives`."""
    width = max((len(name) for name in available_objectives()), default=0)
    lines = []
    for o in map(get_objective, available_objectives()):
        direction = "higher" if o.higher_is_better else "lower"
        lines.append(f"{o.name:<{width}}  {direction:<6}  {o.description}")
    return "\n".join(lines)


def _check_batch(prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[str], list[str]]:
    # A bare string is a sequence of characters: scoring it would silently score each letter.
    if isinstance(prompts, str) or isinstance(responses, str):
        raise UserError("prompts and responses must be lists of strings, not a single string")
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise UserError(
            f"got {len(prompts)} prompts but {len(responses)} responses; score pairs one to one"
        )
    for text in (*prompts, *responses):
        if not isinstance(text, str):
            raise UserError(f"prompts and responses must be strings, got {type(text).__name__}")
    return prompts, responses
