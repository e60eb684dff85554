"""Bootstrap intervals over prompts: how far a statistic of the sweep moves with the prompt set.

The prompts are the sampled unit: a resample draws n of the n prompts with replacement (every
grid point and sample of a drawn prompt comes along), the statistic is computed again on it, and
the interval is the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of those values (the
percentile bootstrap). The estimate is the statistic on the prompts as they are.

`bootstrap` computes every statistic on the same resamples, so a difference between two methods'
statistics is a paired bootstrap: both are measured on the same prompts each time, and the
prompt-to-prompt variation they share cancels. A difference is supported when its whole interval
lies on one side of zero (`winner`).

    intervals = bootstrap(lambda prompts: {"mean": scores[prompts].mean()}, len(scores))
    intervals["mean"].lower, intervals["mean"].upper
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A statistic on all prompts and its bootstrap interval."""

    estimate: float
    lower: float
    upper: float

    def to_json(self) -> dict[str, float]:
        return {"estimate": self.estimate, "lower": self.lower, "upper": self.upper}


def bootstrap(
    statistics: Callable[[np.ndarray], Mapping[Hashable, float]],
    n_prompts: int,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[Hashable, Interval]:
    """Intervals for every statistic `statistics` returns, over `resamples` resamples of prompts.

    `statistics(prompts)` takes an int array of prompt indices (with repeats in a resample; all of
    range(n_prompts) in order for the estimate) and returns {key: value}, the same keys every time.
    The same `seed` draws the same resamples.

    Raises:
        ValueError: no prompts, fewer than one resample, or a confidence outside (0, 1).
    """
    if n_prompts < 1:
        raise ValueError("the bootstrap needs at least one prompt")
    if resamples < 1:
        raise ValueError(f"the bootstrap needs at least one resample, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"the confidence must be in (0, 1), got {confidence}")
    estimates = statistics(np.arange(n_prompts))
    rng = np.random.default_rng(seed)
    draws = {key: np.empty(resamples) for key in estimates}  # key -> (resamples,)
    for r in range(resamples):
        values = statistics(rng.integers(0, n_prompts, size=n_prompts))
        for key in estimates:
            draws[key][r] = values[key]
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for key, estimate in estimates.items():
        lower, upper = np.percentile(draws[key], [tail, 100 - tail])
        intervals[key] = Interval(float(estimate), float(lower), float(upper))
    return intervals


def winner(a: str, b: str, difference: Interval) -> str | None:
    """The one of A and B whose higher statistic the paired interval of A - B supports, else None.

    Supported means the whole interval is on one side of zero: A when lower > 0, B when upper < 0.
    """
    if difference.lower > 0:
        return a
    if difference.upper < 0:
        return b
    return None
