"""The learned human reward on synthetic ratings: polite responses are chosen over rude ones."""

import itertools
import json

import numpy as np
import pytest

from steering.errors import UserError
from steering.objectives import (
    MIN_PAIRS,
    PreferenceRecord,
    configure_human_reward,
    load_human_reward,
    score,
    train_human_reward,
)
from steering.objectives.human import CONFIG_FILE, PATH_ENV, WEIGHTS_FILE

PROMPTS = [
    "How do I boil an egg?",
    "What is the capital of France?",
    "Can you recommend a good book?",
    "How do I fix a flat bicycle tyre?",
    "Why is the sky blue?",
    "What should I cook for dinner?",
    "How do I learn to play guitar?",
    "What is a prime number?",
]
ANSWERS = [
    "Put it in boiling water for about eight minutes.",
    "It is Paris.",
    "Try a classic novel by a favourite author.",
    "Remove the tube, patch the hole and pump it up again.",
    "Air scatters blue light more than red light.",
    "A simple pasta with vegetables is quick.",
    "Practise a few chords every day.",
    "A number divisible only by one and itself.",
]
POLITE = [
    "Thank you for asking! {} I hope this helps, have a lovely day.",
    "Great question, happy to help. {} Please let me know if you need anything else.",
    "Of course, with pleasure. {} Kind regards and good luck!",
]
RUDE = [
    "Ugh, what a stupid question. {} Figure it out yourself, idiot.",
    "Seriously? Everyone knows this. {} Stop wasting my time.",
    "Whatever. {} Don't bother me again with this nonsense.",
]


def synthetic_records(n: int, ties: int = 0, likert: bool = True) -> list[PreferenceRecord]:
    """n decided pairs (chosen polite, rejected rude) plus `ties` polite-polite ties; about
    half the decided pairs carry politeness ratings (4-5 chosen, 1-2 rejected)."""
    combos = itertools.cycle(
        itertools.product(range(len(PROMPTS)), range(len(POLITE)), range(len(RUDE)))
    )
    records = []
    for k in range(n):
        q, p, r = next(combos)
        rated = likert and k % 2 == 0
        records.append(
            PreferenceRecord(
                prompt=PROMPTS[q],
                chosen=POLITE[p].format(ANSWERS[q]),
                rejected=RUDE[r].format(ANSWERS[q]),
                likert_chosen={"politeness": 4 + k % 2 + (k // 2) % 2} if rated else {},
                likert_rejected={"politeness": 1 + (k // 2) % 2} if rated else {},
            )
        )
    for k in range(ties):
        q = k % len(PROMPTS)
        records.append(
            PreferenceRecord(
                prompt=PROMPTS[q],
                chosen=POLITE[0].format(ANSWERS[q]),
                rejected=POLITE[1].format(ANSWERS[q]),
                tie=True,
            )
        )
    return records


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("human_reward")
    report = train_human_reward(synthetic_records(40, ties=5), out, seed=0)
    return out, report


@pytest.fixture(autouse=True)
def no_configured_reward(monkeypatch):
    monkeypatch.delenv(PATH_ENV, raising=False)
    configure_human_reward(None)
    yield
    configure_human_reward(None)


def test_training_reaches_high_heldout_accuracy(trained):
    out, report = trained
    assert report.pairs == 45 and report.ties == 5
    assert report.heldout_pairs == 9  # round(0.2 * 40) decided + round(0.2 * 5) tie
    assert report.train_pairs + report.heldout_pairs == 45
    assert report.heldout_accuracy >= 0.85  # chance is 0.5
    assert report.train_accuracy >= 0.95
    assert report.likert_objectives == ("politeness",)
    assert report.heldout_likert_mae["politeness"] < 1.5
    assert (out / WEIGHTS_FILE).is_file()
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["report"]["heldout_accuracy"] == report.heldout_accuracy
    assert (out / WEIGHTS_FILE).stat().st_size < 1_000_000  # small: a 64-unit head


def test_human_objective_prefers_unseen_polite_answers(trained, monkeypatch):
    out, _ = trained
    monkeypatch.setenv(PATH_ENV, str(out))
    prompt = "How do I water a cactus?"
    answer = "Water it sparingly, about once a month."
    responses = [
        f"Thanks for the lovely question! {answer} Wishing you a wonderful day.",
        f"What a dumb thing to ask. {answer} Leave me alone, moron.",
    ]
    human = score(["human"], [prompt] * 2, responses)["human"]
    assert human[0] > human[1]
    likert = load_human_reward(out).likert([prompt] * 2, responses)["politeness"]
    assert likert[0] > likert[1]
    assert np.all((likert >= 1) & (likert <= 5))


def test_same_seed_same_model(trained, tmp_path):
    _, report = trained
    again = train_human_reward(synthetic_records(40, ties=5), tmp_path, seed=0)
    assert again.heldout_accuracy == report.heldout_accuracy
    assert again.heldout_likert_mae == report.heldout_likert_mae


def test_too_few_ratings_refuse_with_one_sentence(tmp_path):
    records = synthetic_records(MIN_PAIRS - 1, ties=10)
    with pytest.raises(UserError, match=f"at least {MIN_PAIRS} rated pairs with a winner, got 19"):
        train_human_reward(records, tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError):
        train_human_reward([], tmp_path)


def test_unconfigured_or_empty_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=PATH_ENV):
        score(["human"], ["p"], ["r"])
    configure_human_reward(tmp_path)
    with pytest.raises(UserError, match="holds no trained human reward"):
        score(["human"], ["p"], ["r"])


def test_likert_ratings_outside_the_scale_are_refused():
    with pytest.raises(UserError, match="outside 1-5"):
        PreferenceRecord("p", "a", "b", likert_chosen={"politeness": 7})


def test_bad_inputs_give_finite_scores(trained, bad_responses):
    out, _ = trained
    configure_human_reward(out)
    human = score(["human"], ["Prompt?"] * len(bad_responses), bad_responses)["human"]
    assert np.all(np.isfinite(human))
