"""The cheap text objectives: hand-worked values, orderings, and bad input (with hypothesis)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.objectives import score
from steering.objectives.text import (
    CONCISENESS_MAX_TOKENS,
    approx_token_count,
    flesch_reading_ease,
)

CHEAP = ["positivity", "harmlessness", "conciseness", "readability"]
RANGES = {
    "positivity": (-1.0, 1.0),
    "harmlessness": (0.0, 1.0),
    "conciseness": (0.0, 1.0),
    "readability": (0.0, 1.0),
}


def one(name: str, response: str, prompt: str = "Tell me something.") -> float:
    return float(score([name], [prompt], [response])[name][0])


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("", 0),
        ("one two three", 3),
        ("Hello, world!", 4),  # Hello , world !
        ("internationalisation", 4),  # 20 characters -> ceil(20 / 6)
        ("😀😀", 2),  # each symbol is a token
        ("一二三四五六七", 2),  # one 7-character word run -> ceil(7 / 6)
    ],
)
def test_approx_token_count(text, tokens):
    assert approx_token_count(text) == tokens


def test_conciseness_by_hand():
    assert one("conciseness", "") == 1.0
    assert one("conciseness", "one two three") == pytest.approx(1 - 3 / CONCISENESS_MAX_TOKENS)
    assert one("conciseness", "word " * CONCISENESS_MAX_TOKENS) == 0.0
    assert one("conciseness", "word " * 1000) == 0.0


def test_positivity_orders_sentiment():
    assert one("positivity", "I love this, it is wonderful and kind!") > 0.5
    assert one("positivity", "I hate this, it is awful and cruel.") < -0.5
    assert one("positivity", "") == 0.0


def test_harmlessness_flags_offensive_language():
    polite = one("harmlessness", "Thank you so much, that was very helpful.")
    rude = one("harmlessness", "Shut up, you stupid fucking idiot.")
    assert polite > 0.9
    assert rude < 0.1


def test_readability_matches_the_flesch_formula_by_hand():
    # "The cat sat on the mat." 6 words, 1 sentence, 6 syllables:
    # 206.835 - 1.015 * 6 - 84.6 * 1.0 = 116.145, clipped to 100 -> 1.0
    assert flesch_reading_ease("The cat sat on the mat.") == pytest.approx(116.145, abs=0.01)
    assert one("readability", "The cat sat on the mat.") == 1.0
    hard = "Notwithstanding institutional considerations, organisational accountability remains paramount."
    assert flesch_reading_ease(hard) < 0
    assert one("readability", hard) == 0.0
    medium = "The committee will review the proposal and announce its decision next week."
    assert 0.0 < one("readability", medium) < 1.0
    assert one("readability", "") == 0.0
    assert one("readability", "😀😀") == 0.0


def test_readability_stays_offline():
    # textstat's English default would fetch NLTK's cmudict; ours must never try.
    import nltk

    before = nltk.download
    try:
        nltk.download = lambda *a, **k: pytest.fail("readability tried to download NLTK data")
        one("readability", "A fresh sentence with unusual vocabulary: zyzzyva quokka.")
    finally:
        nltk.download = before


def test_bad_inputs_give_finite_scores_in_range(bad_responses):
    result = score(CHEAP, ["Prompt?"] * len(bad_responses), bad_responses)
    for name, values in result.items():
        low, high = RANGES[name]
        assert np.all(np.isfinite(values)), name
        assert np.all((values >= low) & (values <= high)), name
    # The documented empty and whitespace values.
    for i in (0, 1):
        assert result["positivity"][i] == 0.0
        assert result["conciseness"][i] == 1.0
        assert result["readability"][i] == 0.0
        assert result["harmlessness"][i] == pytest.approx(0.96, abs=0.01)
    assert result["conciseness"][6] == 0.0  # 10,000 characters is far past the limit


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts_and_responses=st.lists(
        st.tuples(st.text(max_size=200), st.text(max_size=400)), min_size=1, max_size=4
    )
)
def test_cheap_objectives_are_finite_and_bounded_for_any_text(prompts_and_responses):
    prompts = [p for p, _ in prompts_and_responses]
    responses = [r for _, r in prompts_and_responses]
    result = score(CHEAP, prompts, responses)
    for name, values in result.items():
        low, high = RANGES[name]
        assert values.shape == (len(responses),)
        assert np.all(np.isfinite(values)), name
        assert np.all((values >= low) & (values <= high)), name
