"""Queries the app needs, checked against values worked out by hand in the comments."""

import math
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import bradley_terry as bt
from storage.queries import (
    bradley_terry,
    frontier_points,
    human_steerability,
    preference_records,
    rater_counts,
    weight_region,
    win_rates,
)
from storage.repository import add_rating


def test_win_rates_by_method(rated):
    engine, _, _ = rated
    # clp:   beats soups twice, loses once; ties base once, both-bad once -> (2 + 1/2) / 4
    # soups: beats clp once, loses to clp twice and to base once       -> 1 / 4
    # base:  beats soups once, ties clp once, both-bad once            -> (1 + 1/2) / 2
    # clp vs clp (g1 vs g4) says nothing about methods and is left out.
    assert [(w.key, w.wins, w.losses, w.ties, w.both_bad, w.rate) for w in win_rates(engine)] == [
        ("base", 1, 0, 1, 1, 0.75),
        ("clp", 2, 1, 1, 1, 0.625),
        ("soups", 1, 3, 0, 0, 0.25),
    ]


def test_win_rates_by_weight_region(rated):
    engine, _, _ = rated
    # Regions rename the methods here (g1 and g4 share "positivity", so g1 vs g4 is left out).
    rates = {w.key: (w.wins, w.losses, w.ties, w.both_bad) for w in win_rates(engine, "region")}
    assert rates == {
        "positivity": (2, 1, 1, 1),
        "brevity": (1, 3, 0, 0),
        "positivity+brevity": (1, 0, 1, 1),
    }
    with pytest.raises(ValueError, match="by 'method' or 'region'"):
        win_rates(engine, "rater")


def test_weight_region_names_the_heaviest_objectives():
    assert weight_region(("a", "b", "c"), (0.2, 0.5, 0.3)) == "b"
    assert weight_region(("a", "b", "c"), (0.4, 0.2, 0.4)) == "a+c"


def test_human_steerability(rated):
    engine, _, _ = rated
    # positivity, higher weight on: g1 in (1,2), g1 in (1,3), g3 in (2,3), g1 in (1,4).
    # (1,2) r1 "a" agree; (1,2) r2 "b" disagree; (1,2) r3 Likert 3 = tie; (1,3) r1 "a" agree;
    # (2,3) r1 Likert 5 = "b" agree; (1,4) r1 "a" agree -> 4 agree, 1 disagree, 1 tie.
    s = human_steerability(engine, "positivity")
    assert (s.agree, s.disagree, s.ties) == (4, 1, 1)
    assert s.rate == pytest.approx(4 / 6)
    nobody = human_steerability(engine, "brevity")
    assert (nobody.agree, nobody.disagree, nobody.ties, nobody.rate) == (0, 0, 0, None)


def test_rater_counts(rated):
    engine, _, r = rated
    assert [(c.rater_id, c.anonymous_id, c.ratings) for c in rater_counts(engine)] == [
        (r[1], "anon-1", 4),
        (r[2], "anon-2", 2),
        (r[3], "anon-3", 1),
    ]


def test_overall_preference_records(rated):
    engine, g, r = rated
    records = preference_records(engine)
    # Decisive overall votes only: (1,2) r1 a, r2 a, r3 b; (2,3) r1 b; (1,4) r1 a.
    assert [(x.chosen, x.rejected) for x in records] == [
        ("one", "two"),
        ("one", "two"),
        ("two", "one"),
        ("three", "two"),
        ("one", "four"),
    ]
    third = records[2]
    assert third.criterion == "overall"
    assert (third.prompt, third.rater_id) == ("Say something.", r[3])
    assert (third.chosen_generation_id, third.rejected_generation_id) == (g[2], g[1])
    assert (third.chosen_method, third.rejected_method) == ("soups", "clp")
    assert third.objectives == ("positivity", "brevity")
    assert (third.chosen_weights, third.rejected_weights) == ((0.2, 0.8), (0.8, 0.2))
    assert (third.chosen_scores, third.rejected_scores) == ((0.1, None), (0.9, 0.2))
    # Likert 3 on positivity: a tie, margin 0; brevity was not asked.
    assert (third.per_objective, third.likert_margin) == (("tie", None), (0, None))
    # (2,3) r1: B chosen, Likert 5 = "B much more positive" -> the chosen side, margin +2.
    assert (records[3].per_objective, records[3].likert_margin) == (("chosen", None), (2, None))


def test_per_objective_preference_records(rated):
    engine, _, _ = rated
    records = preference_records(engine, "positivity")
    # Decisive positivity votes: (1,2) r1 a, r2 b; (1,3) r1 a; (2,3) r1 b (Likert 5); (1,4) r1 a.
    assert [(x.criterion, x.chosen, x.rejected) for x in records] == [
        ("positivity", "one", "two"),
        ("positivity", "two", "one"),
        ("positivity", "one", "three"),
        ("positivity", "three", "two"),
        ("positivity", "one", "four"),
    ]
    assert all(x.per_objective[0] == "chosen" for x in records)


def test_frontier_points_for_one_prompt_or_all(build):
    first = build.generation("Prompt one.", scores={"positivity": (0.5, 0.4)})
    second = build.generation("Prompt two.", method="soups", weights=[1.0, 0.0])
    assert [p.generation_id for p in frontier_points(build.engine)] == [first, second]
    (point,) = frontier_points(build.engine, "Prompt two.")
    assert (point.generation_id, point.method, point.weights, point.scores) == (
        second,
        "soups",
        (1.0, 0.0),
        {},
    )
    assert frontier_points(build.engine, "Never asked.") == []


def test_bradley_terry_two_methods_by_hand(build):
    # clp vs soups: clp wins 2, loses 1, one both-bad (half a win each): clp has 2.5 of 4 wins.
    # The MLE matches P(clp > soups) = sigmoid(s_clp - s_soups) = 2.5 / 4, so the difference is
    # log(2.5 / 1.5) = log(5/3), split symmetrically around 0.
    cid = [
        build.comparison({"method": "clp"}, {"method": "soups", "text": f"s{i}"}) for i in range(4)
    ]
    for i, choice in enumerate(["a", "a", "both_bad", "b"]):
        add_rating(build.engine, cid[i], build.rater(f"r{i}"), choice, uuid.uuid4())
    clp, soups = bradley_terry(build.engine, n_bootstrap=20, prior=0.0)
    assert (clp.method, soups.method) == ("clp", "soups")
    assert clp.strength == pytest.approx(math.log(5 / 3) / 2, abs=1e-8)
    assert soups.strength == pytest.approx(-math.log(5 / 3) / 2, abs=1e-8)
    assert (clp.comparisons, soups.comparisons) == (4, 4)
    for s in (clp, soups):
        assert s.low <= s.strength <= s.high


def test_bradley_terry_with_prior_on_the_fixture(rated):
    engine, _, _ = rated
    strengths = bradley_terry(engine, n_bootstrap=50)
    # clp 2.5 of 4, base 1.5 of 2, soups 1 of 4 (ties and both-bad half each):
    # soups is clearly weakest; the centred strengths sum to 0.
    assert strengths[-1].method == "soups"
    assert sum(s.strength for s in strengths) == pytest.approx(0.0, abs=1e-9)
    assert all(s.low <= s.strength <= s.high for s in strengths)
    assert bradley_terry(engine, n_bootstrap=50) == strengths  # seeded: reproducible


def test_bradley_terry_without_ratings_is_empty(build):
    assert bradley_terry(build.engine) == []


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 2), st.sampled_from([0.0, 0.5, 1.0])),
        min_size=1,
        max_size=30,
    )
)
def test_bradley_terry_fit_solves_the_likelihood_equations(extra):
    """At the MLE each item's expected wins equal its observed wins (the score equations).

    A tie in every pair keeps the MLE finite whatever else hypothesis draws."""
    ties = [(0, 1, 0.5), (1, 2, 0.5), (0, 2, 0.5)]
    rows = ties + [(i, (i + step) % 3, y) for i, step, y in extra]
    first, second, outcome = (np.array(column) for column in zip(*rows, strict=True))
    s = bt.fit(first, second, outcome, 3, prior=0.0)
    p = 1 / (1 + np.exp(-(s[first] - s[second])))
    observed, expected = np.zeros(3), np.zeros(3)
    np.add.at(observed, first, outcome)
    np.add.at(observed, second, 1 - outcome)
    np.add.at(expected, first, p)
    np.add.at(expected, second, 1 - p)
    np.testing.assert_allclose(expected, observed, atol=1e-7)
    assert abs(s.mean()) < 1e-12
