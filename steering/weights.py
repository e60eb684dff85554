"""A weighting over the objectives: the one representation of `w` from the border to the layers.

A slider, a CLI flag or an API call gives K numbers; `Weights.parse` checks them once (finite,
not negative, not all zero, one per objective) and normalises them onto the simplex. Everything
behind the border (the service, the backends, the mixed layers, `storage.add_generation`) takes
a `Weights` as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from steering.errors import UserError


@dataclass(frozen=True)
class Weights:
    """Objective names and the weight on each, normalised to sum 1."""

    names: tuple[str, ...]
    values: tuple[float, ...]

    @classmethod
    def parse(cls, names: Sequence[str], values: Iterable) -> Weights:
        """Check K user-given numbers for K objectives and normalise them; UserError otherwise."""
        names = tuple(names)
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            raise UserError("weights must be numbers") from None
        if len(numbers) != len(names):
            raise UserError(
                f"expected {len(names)} weights (one per objective), got {len(numbers)}"
            )
        if not all(math.isfinite(v) for v in numbers):
            raise UserError("weights must be finite numbers (no NaN or infinity)")
        if any(v < 0 for v in numbers):
            raise UserError("weights must not be negative")
        total = sum(numbers)
        if total <= 0:
            raise UserError("weights must not all be zero")
        return cls(names, tuple(v / total for v in numbers))

    @classmethod
    def parse_text(cls, names: Sequence[str], text: str) -> Weights:
        """Comma-separated numbers, as the CLI takes them."""
        try:
            numbers = [float(x) for x in text.split(",")]
        except ValueError:
            raise UserError(f"weights {text!r} are not comma-separated numbers") from None
        return cls.parse(names, numbers)

    @classmethod
    def uniform(cls, names: Sequence[str]) -> Weights:
        names = tuple(names)
        return cls(names, (1.0 / len(names),) * len(names))

    @classmethod
    def rows(cls, names: Sequence[str], rows: Iterable[Sequence[float]]) -> list[Weights]:
        """Internal rows already on the simplex (a grid, a Dirichlet draw), parsed all the same."""
        return [cls.parse(names, row) for row in rows]

    def __len__(self) -> int:
        return len(self.values)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values, strict=True))


def per_row(
    weights: Weights | Sequence[Weights], names: tuple[str, ...], rows: int
) -> list[Weights]:
    """One weighting per row of a batch: a single `Weights` serves every row. Weights are trusted
    (parsed at the border); only that they weigh these objectives, and their count, is checked."""
    given = [weights] if isinstance(weights, Weights) else list(weights)
    for w in given:
        if w.names != tuple(names):
            raise UserError(
                f"the weights are for {', '.join(w.names)}, but this method steers "
                f"{', '.join(names)}"
            )
    if len(given) == 1 and rows > 1:
        given = given * rows
    if len(given) != rows:
        raise UserError(f"{rows} prompts but {len(given)} weightings")
    return given
