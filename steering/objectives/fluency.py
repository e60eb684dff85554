"""The `fluency` objective: how natural the response is to the frozen base model.

fluency = mean over response tokens of max(log p(token | chat prompt, earlier tokens), -20)

computed by `steering.model.generate.response_logprobs` inside `steering.model.mixing.adapters_off`, so the
score is the base model's even while the shared model object carries trained adapters. Range
[-20, 0]. An empty response is scored as the end-of-sequence token alone (how likely the base
model is to say nothing); only the first FLUENCY_MAX_CHARS characters of a response are scored.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from steering.objectives.registry import register_objective

LOGPROB_FLOOR = -20.0
"""Per-token log-probabilities are clamped here (p ~ 2e-9) so one impossible token, or a -inf
from a low-precision forward pass, cannot dominate the mean or make it non-finite."""

FLUENCY_MAX_CHARS = 2000
"""Responses are cut to this many characters (about 500 tokens): a mean is not biased much by
truncation, and it bounds the memory of a batch padded to its longest response."""

FLUENCY_BATCH_SIZE = 8


def fluency_scores(base, prompts: list[str], responses: list[str]) -> np.ndarray:
    """Mean clamped token log-probability of each response under `base` (a BaseModel) with its
    adapters off."""
    import torch

    from steering.model.generate import response_logprobs
    from steering.model.mixing import adapters_off

    responses = [r[:FLUENCY_MAX_CHARS] for r in responses]
    scores = np.full(len(responses), LOGPROB_FLOOR, dtype=float)
    with adapters_off(base.model), torch.no_grad():
        for start in range(0, len(responses), FLUENCY_BATCH_SIZE):
            stop = start + FLUENCY_BATCH_SIZE
            rows = response_logprobs(
                base.model, base.tokenizer, prompts[start:stop], responses[start:stop]
            )
            for offset, logprobs in enumerate(rows):
                if logprobs.numel():
                    clamped = torch.nan_to_num(logprobs.float(), nan=LOGPROB_FLOOR)
                    scores[start + offset] = clamped.clamp(min=LOGPROB_FLOOR).mean().item()
    return scores


@register_objective(
    "fluency",
    description="Mean token log-probability of the response under the frozen base model, in [-20, 0].",
)
def fluency(prompts: list[str], responses: list[str]) -> np.ndarray:
    return fluency_scores(fluency_base(), prompts, responses)


@cache
def fluency_base():
    """The base model fluency is scored under, loaded once per process when fluency is first
    scored (imported here: the policy module pulls in transformers)."""
    from steering.model.policy import load_base

    return load_base()
