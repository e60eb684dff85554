"""Tests for steering/evaluation/intervals.py on hand-made data; expected values in the comments."""

import numpy as np
import pytest

from steering.evaluation.intervals import Interval, bootstrap, winner


def mean_of(scores):
    return lambda prompts: {"mean": float(scores[prompts].mean())}


def test_identical_prompts_give_a_zero_width_interval():
    # every resample of ten copies of 3.0 has mean 3.0
    found = bootstrap(mean_of(np.full(10, 3.0)), 10, resamples=200)
    assert found == {"mean": Interval(3.0, 3.0, 3.0)}


def test_two_prompts_span_both_of_their_values():
    # prompts scoring 0 and 1: a resample holds two 0s, one of each or two 1s, so its mean is 0,
    # 0.5 or 1 with probabilities 1/4, 1/2, 1/4; the 2.5th percentile falls in the quarter at 0
    # and the 97.5th in the quarter at 1. The estimate is the mean of both, 0.5.
    found = bootstrap(mean_of(np.array([0.0, 1.0])), 2, resamples=1000)
    assert found["mean"] == Interval(0.5, 0.0, 1.0)


def test_the_interval_of_a_mean_has_the_normal_width():
    # scores 0..99: mean 49.5, population sd sqrt((100^2 - 1) / 12) = 28.866, so the bootstrap
    # standard error is 28.866 / sqrt(100) = 2.887 and the 95% interval about
    # 49.5 -+ 1.96 * 2.887 = [43.84, 55.16]; 2000 resamples put each end within about 0.4.
    found = bootstrap(mean_of(np.arange(100.0)), 100, resamples=2000)["mean"]
    assert found.estimate == 49.5
    assert found.lower == pytest.approx(43.84, abs=0.8)
    assert found.upper == pytest.approx(55.16, abs=0.8)


def test_the_same_seed_draws_the_same_resamples():
    scores = np.random.default_rng(1).normal(size=20)
    assert bootstrap(mean_of(scores), 20, seed=7) == bootstrap(mean_of(scores), 20, seed=7)
    assert bootstrap(mean_of(scores), 20, seed=7) != bootstrap(mean_of(scores), 20, seed=8)


@pytest.mark.parametrize(("shift", "expected"), [(0.5, "a"), (-0.5, "b")])
def test_a_paired_difference_supports_the_better_method_either_way(shift, expected):
    # A scores B's prompts plus `shift`, and the prompts vary far more (sd 1) than the shift.
    # A - B is `shift` on every resample, so its paired interval is [shift, shift]; the two
    # means' own intervals (each about -+ 1.96 / sqrt(30) = -+ 0.36 wide) overlap.
    b = np.random.default_rng(0).normal(size=30)
    a = b + shift

    def statistics(prompts):
        return {"a": a[prompts].mean(), "b": b[prompts].mean(), "a-b": (a - b)[prompts].mean()}

    found = bootstrap(statistics, 30)
    assert found["a-b"].lower == pytest.approx(shift) and found["a-b"].upper == pytest.approx(shift)
    first, second = sorted([found["a"], found["b"]], key=lambda i: i.estimate)
    assert first.upper > second.lower  # unpaired, the intervals would not separate them
    assert winner("a", "b", found["a-b"]) == expected


@pytest.mark.parametrize(
    ("difference", "expected"),
    [
        (Interval(2.0, 0.5, 3.0), "a"),  # wholly above zero
        (Interval(-2.0, -3.0, -0.5), "b"),  # wholly below zero
        (Interval(1.0, -0.1, 2.0), None),  # zero inside: no order supported
        (Interval(1.0, 0.0, 2.0), None),  # zero on the bound is not "above zero"
    ],
)
def test_winner_needs_the_whole_interval_on_one_side_of_zero(difference, expected):
    assert winner("a", "b", difference) == expected


@pytest.mark.parametrize(
    ("n_prompts", "resamples", "confidence", "message"),
    [
        (0, 10, 0.95, "at least one prompt"),
        (5, 0, 0.95, "at least one resample"),
        (5, 10, 1.0, "confidence must be in"),
    ],
)
def test_bad_settings_are_refused(n_prompts, resamples, confidence, message):
    with pytest.raises(ValueError, match=message):
        bootstrap(mean_of(np.zeros(5)), n_prompts, resamples=resamples, confidence=confidence)
