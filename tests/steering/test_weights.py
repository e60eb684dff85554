"""`Weights`: the one parse of a weighting at the border (slider, CLI, API)."""

import pytest

from steering.errors import UserError
from steering.weights import Weights

NAMES = ("positivity", "conciseness", "relevance")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.5, 0.5], "expected 3 weights"),
        ([0.5, float("nan"), 0.5], "finite"),
        ([0.5, float("inf"), 0.5], "finite"),
        ([0.5, -0.1, 0.6], "negative"),
        ([0.0, 0.0, 0.0], "all be zero"),
        (["a", 1, 1], "must be numbers"),
        ([None, 1, 1], "must be numbers"),
    ],
)
def test_bad_weights_raise_one_clear_sentence(weights, message):
    with pytest.raises(UserError, match=message):
        Weights.parse(NAMES, weights)


def test_weights_are_normalised_to_sum_one():
    # 2 + 1 + 1 = 4, so each value is divided by 4
    w = Weights.parse(NAMES, [2, 1, 1])
    assert w.values == (0.5, 0.25, 0.25)
    assert w.names == NAMES
    assert w.as_dict() == {"positivity": 0.5, "conciseness": 0.25, "relevance": 0.25}


def test_text_and_uniform_weights():
    assert Weights.parse_text(NAMES, "1,1,2").values == (0.25, 0.25, 0.5)
    with pytest.raises(UserError, match="not comma-separated numbers"):
        Weights.parse_text(NAMES, "a,b,c")
    assert Weights.uniform(NAMES[:2]).values == (0.5, 0.5)


def test_rows_are_parsed_each():
    rows = Weights.rows(NAMES, [[1, 0, 0], [0, 2, 2]])
    assert [r.values for r in rows] == [(1.0, 0.0, 0.0), (0.0, 0.5, 0.5)]
    with pytest.raises(UserError, match="negative"):
        Weights.rows(NAMES, [[1, 0, 0], [-1, 1, 1]])


def test_weights_are_frozen():
    w = Weights.uniform(NAMES)
    with pytest.raises(AttributeError):
        w.values = (1.0, 0.0, 0.0)
