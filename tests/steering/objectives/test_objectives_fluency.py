"""`fluency` on the tiny random Llama from tests/conftest.py, and once on the shipped model."""

import numpy as np
import pytest
import torch

from steering.model.generate import response_logprobs
from steering.model.mixing import AdapterSpec, attach, bank_parameters, conditioned
from steering.objectives import fluency as fluency_module
from steering.objectives import score
from steering.objectives.fluency import LOGPROB_FLOOR, fluency_scores

PROMPTS = ["What is the capital of France?", "Say something kind.", "Count to three."]
RESPONSES = ["The capital of France is Paris.", "You are doing great!", "one two three"]


def test_fluency_is_the_mean_token_logprob(tiny_base):
    scores = fluency_scores(tiny_base, PROMPTS, RESPONSES)
    rows = response_logprobs(tiny_base.model, tiny_base.tokenizer, PROMPTS, RESPONSES)
    expected = [row.clamp(min=LOGPROB_FLOOR).mean().item() for row in rows]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    # A random 49k-token model is close to uniform: mean log p ~ -log(49152) ~ -10.8.
    assert np.all((scores > -13) & (scores < -9))


def test_fluency_ignores_active_adapters(tiny_base):
    base = fluency_scores(tiny_base, PROMPTS, RESPONSES)
    attach(tiny_base.model, "clp", AdapterSpec(("positivity", "conciseness"), rank=2))
    torch.manual_seed(1)
    for parameter in bank_parameters(tiny_base.model, "clp"):
        parameter.data.normal_(0, 0.5)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # a batch of 2 rows: scoring 3 must not see it
    with conditioned(tiny_base.model, "clp", weights):
        inside = fluency_scores(tiny_base, PROMPTS, RESPONSES)
        # The conditioning is still in place afterwards.
        assert tiny_base.model.model.layers[0].self_attn.q_proj.weights is weights
    np.testing.assert_allclose(inside, base, rtol=1e-6)


def test_registered_objective_uses_the_cached_base_model(tiny_base, monkeypatch):
    monkeypatch.setattr(fluency_module, "fluency_base", lambda: tiny_base)
    result = score(["fluency"], PROMPTS, RESPONSES)["fluency"]
    np.testing.assert_allclose(result, fluency_scores(tiny_base, PROMPTS, RESPONSES))


def test_bad_inputs_give_finite_scores_in_range(tiny_base, bad_responses):
    scores = fluency_scores(tiny_base, ["Prompt?"] * len(bad_responses), bad_responses)
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= LOGPROB_FLOOR) & (scores <= 0))


@pytest.mark.slow
def test_shipped_model_finds_english_more_fluent_than_word_salad():
    prompt = "What is the capital of France?"
    responses = [
        "The capital of France is Paris.",
        "Paris capital the France of is banana seventeen quickly.",
    ]
    fluency = score(["fluency"], [prompt] * 2, responses)["fluency"]
    assert fluency[0] > fluency[1] + 1.0
    assert fluency_module.fluency_base() is fluency_module.fluency_base()  # loaded once
