"""`classifier` with tiny randomly initialised BERT classifiers the session builds and saves."""

import numpy as np
import pytest

from steering.errors import UserError
from steering.objectives import configure_classifier, score
from steering.objectives.classifier import LABEL_ENV, PATH_ENV, WITH_PROMPT_ENV

PROMPTS = ["hello", "hello", "hello world"]
RESPONSES = ["good great love", "awful hate idiot", "the a the"]


@pytest.fixture(autouse=True)
def no_configured_classifier(monkeypatch):
    monkeypatch.delenv(PATH_ENV, raising=False)
    monkeypatch.delenv(LABEL_ENV, raising=False)
    monkeypatch.delenv(WITH_PROMPT_ENV, raising=False)
    configure_classifier(None)
    yield
    configure_classifier(None)


def classify(prompts=PROMPTS, responses=RESPONSES) -> np.ndarray:
    return score(["classifier"], prompts, responses)["classifier"]


def test_label_probabilities_by_name_and_index_sum_to_one(tiny_classifier_dir):
    configure_classifier(tiny_classifier_dir, "positive")
    positive = classify()
    configure_classifier(tiny_classifier_dir, "0")  # index of "negative"
    negative = classify()
    assert np.all((positive > 0) & (positive < 1))
    np.testing.assert_allclose(positive + negative, 1.0, atol=1e-6)


def test_configured_by_environment(tiny_classifier_dir, monkeypatch):
    configure_classifier(tiny_classifier_dir, "positive")
    expected = classify()
    configure_classifier(None)
    monkeypatch.setenv(PATH_ENV, str(tiny_classifier_dir))
    monkeypatch.setenv(LABEL_ENV, "POSITIVE")  # label names match case-insensitively
    np.testing.assert_allclose(classify(), expected)


def test_with_prompt_classifies_the_pair(tiny_classifier_dir):
    configure_classifier(tiny_classifier_dir, "positive")
    alone = classify()
    configure_classifier(tiny_classifier_dir, "positive", with_prompt=True)
    paired = classify()
    assert np.all(np.isfinite(paired))
    assert not np.allclose(alone, paired)


def test_single_output_reward_model_scores_sigmoid_without_a_label(tiny_reward_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    configure_classifier(tiny_reward_model_dir)
    scores = classify()
    # By hand: sigmoid of the single logit, batch of one, no padding involved.
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model_dir)
    with torch.no_grad():
        logit = model(**tokenizer([RESPONSES[0]], return_tensors="pt")).logits[0, 0]
    assert scores[0] == pytest.approx(float(torch.sigmoid(logit)), abs=1e-5)


def test_unconfigured_missing_and_bad_labels_are_user_errors(tiny_classifier_dir, tmp_path):
    with pytest.raises(UserError, match=PATH_ENV):
        classify()
    with pytest.raises(UserError, match="not a model directory"):
        configure_classifier(tmp_path / "nowhere", "positive")
    configure_classifier(tiny_classifier_dir, "neutral")
    with pytest.raises(UserError, match="no label 'neutral'.*0=negative, 1=positive"):
        classify()
    configure_classifier(tiny_classifier_dir)
    with pytest.raises(UserError, match="has 2 labels"):
        classify()


def test_bad_inputs_give_finite_probabilities(tiny_classifier_dir, bad_responses):
    configure_classifier(tiny_classifier_dir, "positive", with_prompt=True)
    scores = classify(["Prompt?"] * len(bad_responses), bad_responses)
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= 0) & (scores <= 1))
