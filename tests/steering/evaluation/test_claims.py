"""Tests for steering/evaluation/claims.py on a hand-made sweep; expected values in the comments.

Two objectives, the grid (0, 1), (0.5, 0.5), (1, 0), three prompts, one sample, rewards already
normalised (a calibration of mean 0 and std 1). Method "good" scores w + d_p at every weighting
w, where prompt p adds d_p in (-0.1, 0, 0.1) to both objectives; "bad" scores one less
everywhere. Reference point (-2, -2).
"""

import numpy as np
import pytest

from steering.evaluation.claims import add_claims, beats, format_claims
from steering.evaluation.pareto import simplex_grid
from steering.objectives import Calibration, ObjectiveStats

OBJECTIVES = ["a", "b"]
GRID = simplex_grid(2, 0.5)
OFFSETS = (-0.1, 0.0, 0.1)
REFERENCE = np.array([-2.0, -2.0])
LIMIT = 8


def rows(shift: float, texts: dict[int, str]) -> list[dict]:
    """One row per (point, prompt); prompt p answers texts.get(p, a finished sentence)."""
    return [
        {
            "point": g,
            "prompt": p,
            "sample": 0,
            "prompt_text": f"Describe the garden of house number {p}.",
            "text": texts.get(p, "A complete answer of six words."),
            "tokens": 5 + p,
            "fluency": -1.0 - p,
            "raw": {
                name: float(w) + offset + shift for name, w in zip(OBJECTIVES, weights, strict=True)
            },
        }
        for g, weights in enumerate(GRID)
        for p, offset in enumerate(OFFSETS)
    ]


@pytest.fixture(scope="module")
def results():
    identity = ObjectiveStats(mean=0.0, std=1.0, q05=0.0, q50=0.0, q95=0.0, count=1)
    calibration = Calibration({name: identity for name in OBJECTIVES})
    results = {"objectives": OBJECTIVES, "prompts": 3, "samples": 1, "max_new_tokens": LIMIT}
    results["methods"] = {"good": {}, "bad": {}}
    # prompt 0 of "good" answers with nothing: a degenerate answer at every weighting
    # prompt 2 of "bad" says the prompt again: an echo at every weighting
    echo = "Describe the garden of house number 2. Describe the garden of house number 2."
    by_method = {"good": rows(0.0, {0: ""}), "bad": rows(-1.0, {2: echo})}
    add_claims(results, by_method, GRID, calibration, REFERENCE, LIMIT, resamples=300, seed=0)
    return results


def test_hypervolumes_and_their_paired_difference(results):
    # A resample's mean offset o shifts every point of both methods by o. Relative to the
    # reference, good's points are (2+o, 3+o), (2.5+o, 2.5+o), (3+o, 2+o), whose union of boxes,
    # sliced along the first objective, is (2+o)(3+o) + 0.5 (2.5+o) + 0.5 (2+o)
    # = (2+o)(3+o) + 2.25 + o; bad's, one less on each, is (1+o)(2+o) + 1.25 + o.
    # At o = 0: 8.25 and 3.25. Their difference is 5 + 2o, with o in [-0.1, 0.1]: [4.8, 5.2].
    good, bad = results["methods"]["good"]["intervals"], results["methods"]["bad"]["intervals"]
    assert good["hypervolume"]["estimate"] == pytest.approx(8.25)
    assert bad["hypervolume"]["estimate"] == pytest.approx(3.25)
    (pair,) = results["hypervolume_differences"]
    assert (pair["a"], pair["b"], pair["winner"]) == ("good", "bad", "good")
    assert pair["estimate"] == pytest.approx(5.0)
    assert 4.8 - 1e-9 <= pair["lower"] <= pair["upper"] <= 5.2 + 1e-9
    assert beats(results, "good", "bad") and not beats(results, "bad", "good")


def test_statistics_that_no_resample_moves_have_zero_width(results):
    for method in ("good", "bad"):
        found = results["methods"][method]["intervals"]
        # w_k and reward k rise together at every resample: rho 1 for both objectives
        for name in OBJECTIVES:
            assert found["steerability"][name] == pytest.approx(
                {"estimate": 1.0, "lower": 1.0, "upper": 1.0}
            )
        assert found["unfinished"] == {"estimate": 0.0, "lower": 0.0, "upper": 0.0}
    # good's points are bad's plus one on both objectives: all of bad's are dominated, none of
    # good's, whatever the prompts
    assert results["dominance_intervals"]["bad"]["good"] == {
        "estimate": 1.0,
        "lower": 1.0,
        "upper": 1.0,
    }
    assert results["dominance_intervals"]["good"]["bad"]["upper"] == 0.0


def test_answer_means_over_the_grid(results):
    good = results["methods"]["good"]["intervals"]
    # prompts give 5, 6, 7 tokens and fluency -1, -2, -3; means 6 and -2
    assert good["tokens"]["estimate"] == pytest.approx(6.0)
    assert good["fluency"]["estimate"] == pytest.approx(-2.0)
    # one prompt of three is degenerate everywhere: 1/3, and a resample holds 0 to 3 copies of it
    assert good["degenerate"]["estimate"] == pytest.approx(1 / 3)
    assert 0.0 <= good["degenerate"]["lower"] <= 1 / 3 <= good["degenerate"]["upper"] <= 1.0
    assert good["tokens"]["lower"] >= 5.0 and good["tokens"]["upper"] <= 7.0
    assert good["echo"] == {"estimate": 0.0, "lower": 0.0, "upper": 0.0}
    assert results["methods"]["bad"]["intervals"]["echo"]["estimate"] == pytest.approx(1 / 3)
    # the echo has no word the prompt lacks: a restatement as well
    assert results["methods"]["bad"]["intervals"]["restatement"]["estimate"] == pytest.approx(1 / 3)
    assert good["restatement"] == {"estimate": 0.0, "lower": 0.0, "upper": 0.0}
    assert results["bootstrap"] == {
        "unit": "prompt",
        "resamples": 300,
        "seed": 0,
        "confidence": 0.95,
    }


def test_the_summary_states_the_intervals_and_the_verdict(results):
    summary = format_claims(results)
    assert "| good | 8.250 [" in summary
    assert "good - bad: 5.000 [" in summary and "good larger, supported" in summary


def test_beats_refuses_methods_it_did_not_compare(results):
    with pytest.raises(ValueError, match="no hypervolume difference between good and soups"):
        beats(results, "good", "soups")
