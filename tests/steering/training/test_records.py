import dataclasses

import numpy as np
import pytest

from steering.evaluation.pareto import sample_dirichlet
from steering.training.records import (
    PreferencePair,
    SampleRequest,
    SftExample,
    rejoined,
    sample_weightings,
    split_request,
    weighting_count,
)

CORNERS_3 = {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)}


def rows(weightings: np.ndarray) -> list[tuple[float, ...]]:
    return [tuple(float(x) for x in w) for w in weightings]


def test_training_weightings_stay_on_the_simplex():
    rng = np.random.default_rng(0)
    w = sample_weightings("clp", 3, 500, 1.0, rng)
    assert w.shape == (500, 3) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    corners = sample_weightings("soups", 3, 50, 1.0, rng)
    assert set(map(tuple, corners)) <= CORNERS_3


@pytest.mark.parametrize("method", ["clp", "prompt"])
@pytest.mark.parametrize("distinct_corners", [False, True])
def test_clp_and_prompt_draw_dirichlet_rows_whatever_the_corner_rule(method, distinct_corners):
    w = sample_weightings(method, 3, 200, 0.3, np.random.default_rng(4), distinct_corners)
    assert w.shape == (200, 3) and (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert len(set(rows(w)) - CORNERS_3) == 200  # points of the simplex, not corners
    # exactly the Dirichlet draws of the evaluation's sampler from the same generator
    np.testing.assert_array_equal(w, sample_dirichlet(3, 200, 0.3, np.random.default_rng(4)))


def test_soups_corners_are_drawn_with_replacement_by_default():
    w = sample_weightings("soups", 3, 40, 1.0, np.random.default_rng(1))
    assert w.shape == (40, 3) and set(rows(w)) == CORNERS_3
    assert len(rows(w)) > len(set(rows(w)))  # corners repeat
    # the corners the generator's integers pick, one draw of n
    picks = np.random.default_rng(1).integers(0, 3, size=40)
    np.testing.assert_array_equal(w, np.eye(3)[picks])


def test_soups_distinct_corners_are_a_random_subset_or_all():
    seen = set()
    for seed in range(20):
        w = sample_weightings("soups", 3, 2, 1.0, np.random.default_rng(seed), True)
        assert w.shape == (2, 3) and len(set(rows(w))) == 2 and set(rows(w)) <= CORNERS_3
        seen.add(tuple(rows(w)))
    assert len(seen) > 1  # which corners, and their order, depend on the seed
    for n in (3, 5):
        rng = np.random.default_rng(0)
        np.testing.assert_array_equal(sample_weightings("soups", 3, n, 1.0, rng, True), np.eye(3))
        # every corner once, in order, drawing nothing: the generator is untouched
        assert rng.random() == np.random.default_rng(0).random()


def test_weighting_count_is_the_number_of_rows_drawn():
    rng = np.random.default_rng(0)
    for method in ("clp", "prompt", "soups"):
        for n in (1, 2, 3, 5):
            for distinct in (False, True):
                w = sample_weightings(method, 3, n, 1.0, rng, distinct)
                assert weighting_count(method, 3, n, distinct) == len(w)
    assert weighting_count("soups", 3, 5, distinct_corners=True) == 3
    assert weighting_count("soups", 3, 5) == 5


@pytest.mark.parametrize(
    "method,distinct_corners", [("clp", False), ("soups", False), ("soups", True)]
)
def test_same_seed_same_draws_and_the_same_generator_state(method, distinct_corners):
    def draw(seed):
        rng = np.random.default_rng([seed, 7, 0])
        w = sample_weightings(method, 3, 2, 1.0, rng, distinct_corners)
        return w, rng.integers(2**31)  # what the caller draws next (a sampling seed)

    (first, after_first), (again, after_again) = draw(0), draw(0)
    np.testing.assert_array_equal(first, again)
    assert after_first == after_again
    others = [draw(seed) for seed in range(1, 8)]
    assert any(not np.array_equal(first, w) for w, _ in others)


def test_records_are_named_frozen_and_hashable():
    example = SftExample("p", "an answer", (0.25, 0.75), ended=True)
    pair = PreferencePair("p", "good", True, "bad", False, (0.25, 0.75))
    assert (example.prompt, example.target, example.weights, example.ended) == (
        "p",
        "an answer",
        (0.25, 0.75),
        True,
    )
    assert (pair.chosen, pair.chosen_ended, pair.rejected, pair.rejected_ended) == (
        "good",
        True,
        "bad",
        False,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.target = "changed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.weights = (1.0, 0.0)
    assert len({example, SftExample("p", "an answer", (0.25, 0.75), True)}) == 1


@pytest.mark.parametrize("method", ["clp", "prompt"])
def test_a_corner_share_replaces_that_share_of_dirichlet_rows_with_corners(method):
    def draw(share):
        return sample_weightings(method, 3, 4000, 0.5, np.random.default_rng(2), corner_share=share)

    plain = draw(0.0)
    # no share draws nothing more: the run's weightings are the Dirichlet rows they always were
    np.testing.assert_array_equal(plain, sample_dirichlet(3, 4000, 0.5, np.random.default_rng(2)))
    assert not set(rows(plain)) & CORNERS_3
    some = draw(0.25)
    at_corner = np.array([r in CORNERS_3 for r in rows(some)])
    assert 0.2 < at_corner.mean() < 0.3
    # the other rows are the same Dirichlet draws, and every corner is drawn, about equally
    np.testing.assert_array_equal(some[~at_corner], plain[~at_corner])
    counts = np.bincount(np.argmax(some[at_corner], axis=1), minlength=3)
    assert counts.min() > 0.25 * at_corner.sum()
    assert set(rows(draw(1.0))) == CORNERS_3  # corners only


def test_a_request_splits_each_prompts_last_rows_off_for_the_reference_and_rejoins():
    prompts = [p for p in "ab" for _ in range(4)]  # two prompts, k = 4 rows each
    weights = np.repeat(np.array([[0.2, 0.8], [1.0, 0.0]]), 4, axis=0)
    request = SampleRequest(prompts, weights, seed=7)
    assert split_request(request, 4, 0) == (request, None)  # nothing split off
    own, theirs = split_request(request, 4, 1)
    assert own.prompts == ["a"] * 3 + ["b"] * 3 and theirs.prompts == ["a", "b"]
    np.testing.assert_array_equal(theirs.weights, [[0.2, 0.8], [1.0, 0.0]])
    np.testing.assert_array_equal(own.weights, weights[[0, 1, 2, 4, 5, 6]])
    assert (own.seed, theirs.seed) == (7, 8)  # the reference samples with a seed of its own
    rows = list(range(8))
    kept, split = [r for r in rows if r % 4 < 3], [r for r in rows if r % 4 == 3]
    assert rejoined(kept, split, 4, 1) == rows
    two_each = split_request(request, 4, 2)
    assert two_each[0].prompts == two_each[1].prompts == ["a", "a", "b", "b"]
    assert rejoined([0, 1, 4, 5], [2, 3, 6, 7], 4, 2) == rows
