"""What the algorithms train on, and the weightings they are drawn at.

- `SftExample`: rsf's record, a prompt, the candidate a weighting w selected and whether that
  candidate ended on its own (so its target ends with the end-of-turn token).
- `PreferencePair`: dpo's and online-dpo's record, the chosen (best for w) and rejected (worst
  for w) candidates.
- `SampleRequest`: what an rloo step or an online-dpo round asks the policy for, drawn by
  `sample_request` (the same draws on torch and on llama.cpp), and split by `split_request`
  when the DPO reference samples some of its rows; `PolicySamples`: the responses, with the
  weightings and token ids they were sampled with.
- `sample_weightings`: the one sampler of training weightings, for rloo steps, later rounds'
  pools and the selection of examples. It only ever consumes `rng` as the step it serves did
  before there was one sampler, so every seeded run and every resumed run draws the same w.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steering.evaluation.pareto import sample_dirichlet
from steering.model.generate import Conditioning, SampledBatch
from steering.training.config import TrainConfig


@dataclass(frozen=True)
class SftExample:
    """Finetune the policy conditioned on `weights` to answer `prompt` with `target`."""

    prompt: str
    target: str
    weights: tuple[float, ...]
    ended: bool  # False when the target was cut off by the token limit (no end-of-turn token)


@dataclass(frozen=True)
class PreferencePair:
    """The policy conditioned on `weights` should prefer `chosen` to `rejected` for `prompt`."""

    prompt: str
    chosen: str
    chosen_ended: bool
    rejected: str
    rejected_ended: bool
    weights: tuple[float, ...]


@dataclass(frozen=True)
class SampleRequest:
    """P prompts, each k times, every row at its prompt's weighting, and the sampling seed."""

    prompts: list[str]  # (P*k,) as the user wrote them (prompt conditioning adds w later)
    weights: np.ndarray  # (P*k, K)
    seed: int


def sample_request(
    config: TrainConfig, prompts: list[str], k: int, rng: np.random.Generator
) -> SampleRequest:
    """--prompts-per-step of the prompts, each with a weighting of the K objectives and repeated
    --samples times, and the seed of their sampling, all drawn from rng."""
    chosen = rng.choice(
        len(prompts), size=min(config.prompts_per_step, len(prompts)), replace=False
    )
    weights = sample_weightings(
        config.method, k, len(chosen), config.dirichlet_alpha, rng, corner_share=config.corner_share
    )
    return SampleRequest(
        [prompts[i] for i in chosen for _ in range(config.samples)],
        np.repeat(weights, config.samples, axis=0),
        int(rng.integers(2**31)),
    )


def reference_rows(count: int, k: int, n: int) -> np.ndarray:
    """(count,) which of P prompts' k rows each are the DPO reference's (--reference-samples n):
    the last n of every prompt's."""
    return np.arange(count) % k >= k - n


def split_request(
    request: SampleRequest, k: int, n: int
) -> tuple[SampleRequest, SampleRequest | None]:
    """A request of P prompts, k rows each, as two (--reference-samples n): the first k - n rows
    of each prompt for the policy, with the request's seed, and the last n for the DPO reference,
    with the next seed; all k for the policy (and None) when n is 0."""
    if not n:
        return request, None
    theirs = reference_rows(len(request.prompts), k, n)  # (P*k,)

    def rows(kept: np.ndarray, seed: int) -> SampleRequest:
        prompts = [p for p, keep in zip(request.prompts, kept, strict=True) if keep]
        return SampleRequest(prompts, request.weights[kept], seed)

    return rows(~theirs, request.seed), rows(theirs, request.seed + 1)


def rejoined(own: list, theirs: list, k: int, n: int) -> list:
    """The rows of `split_request`'s two halves in the request's order again: each prompt's
    k - n from the policy, then its n from the reference."""
    return [
        row
        for p in range(len(own) // (k - n))
        for row in own[p * (k - n) : (p + 1) * (k - n)] + theirs[p * n : (p + 1) * n]
    ]


@dataclass(frozen=True)
class PolicySamples:
    """Responses sampled from the policy: P prompts, k rows each, every row under its prompt's
    weighting."""

    prompts: list[str]  # (P*k,) as the user wrote them (prompt conditioning adds w later)
    weights: np.ndarray  # (P*k, K)
    conditioning: Conditioning  # what the model was run with
    batch: SampledBatch  # the token ids, for log-probs on the same responses
    texts: list[str]  # (P*k,)
    ended: list[bool]  # (P*k,) False where the token limit cut the response off


def weighting_count(method: str, k: int, n: int, distinct_corners: bool = False) -> int:
    """How many rows `sample_weightings(method, k, n, ..., distinct_corners)` returns: n, except
    that there are only K distinct corners."""
    if method == "soups" and distinct_corners:
        return min(n, k)
    return n


def sample_weightings(
    method: str,
    k: int,
    n: int,
    alpha: float,
    rng: np.random.Generator,
    distinct_corners: bool = False,
    corner_share: float = 0.0,
) -> np.ndarray:
    """(n, K) training weightings: Dirichlet(alpha) rows on the simplex for clp and prompt;
    corners w = e_k for soups, each adapter trained alone at its own.

    With `corner_share` (clp and prompt), each row is replaced with probability corner_share by a
    corner drawn uniformly, so every adapter also trains alone, as soups' do; the extra draws
    are made only when it is positive, so runs without it draw the weightings they always did.

    Soups corners are drawn with replacement (rloo steps, round pools), or, with
    `distinct_corners` (the selection of rsf and dpo examples), as n different corners in a
    random order, or all K in order (drawing nothing) when n >= K.
    """
    if method != "soups":
        rows = sample_dirichlet(k, n, alpha, rng)
        if corner_share > 0:
            at_corner = rng.random(n) < corner_share
            rows[at_corner] = np.eye(k)[rng.integers(0, k, size=int(at_corner.sum()))]
        return rows
    corners = np.eye(k)
    if not distinct_corners:
        return corners[rng.integers(0, k, size=n)]
    if n < k:
        return corners[rng.choice(k, n, replace=False)]
    return corners
