"""The registry: lookup, errors, the scorer contract, and lazy loading."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from steering.errors import UserError
from steering.objectives import (
    Objective,
    available_objectives,
    get_objective,
    list_objectives_json,
    list_objectives_text,
    register_objective,
    score,
)

BUILT_INS = [
    "answer_relevance",
    "brevity",
    "brief",
    "classifier",
    "conciseness",
    "direct_brevity",
    "direct_relevance",
    "fluency",
    "harmlessness",
    "human",
    "passage_relevance",
    "positivity",
    "readability",
    "relevance",
]


def test_built_ins_are_registered_sorted_and_higher_is_better():
    assert available_objectives() == BUILT_INS
    for name in BUILT_INS:
        objective = get_objective(name)
        assert isinstance(objective, Objective)
        assert objective.name == name
        assert objective.higher_is_better
        assert objective.description


def test_unknown_objective_is_a_user_error_listing_the_available_ones():
    with pytest.raises(UserError, match="unknown objective 'politeness'") as error:
        get_objective("politeness")
    assert isinstance(error.value, ValueError)
    for name in BUILT_INS:
        assert name in str(error.value)


def test_score_resolves_every_name_before_scoring(restore_registry):
    calls = []

    @register_objective("counting", description="Counts calls.")
    def counting(prompts, responses):
        calls.append(len(responses))
        return [0.0] * len(responses)

    with pytest.raises(UserError, match="nope"):
        score(["counting", "nope"], ["p"], ["r"])
    assert calls == []


def test_register_and_score_a_custom_objective(restore_registry):
    @register_objective("shouting", higher_is_better=False)
    def shouting(prompts, responses):
        """Fraction of upper-case letters."""
        return [sum(c.isupper() for c in r) / max(1, len(r)) for r in responses]

    assert shouting(["p"], ["AB"]) == [1.0]  # the decorator returns the function unchanged
    objective = get_objective("shouting")
    assert objective.higher_is_better is False
    assert objective.description == "Fraction of upper-case letters."
    result = score("shouting", ["p", "p"], ["ABcd", ""])
    assert list(result) == ["shouting"]
    np.testing.assert_allclose(result["shouting"], [0.5, 0.0])
    assert result["shouting"].dtype == np.float64


def test_duplicate_and_malformed_names_are_rejected(restore_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_objective("positivity")(lambda p, r: [0.0] * len(r))
    with pytest.raises(ValueError, match="lower-case"):
        register_objective("Bad Name")


@pytest.mark.parametrize(
    "bad_output, message",
    [
        (lambda n: [0.0] * (n + 1), "shape"),
        (lambda n: [float("nan")] * n, "finite"),
        (lambda n: [float("inf")] * n, "finite"),
    ],
)
def test_scorer_contract_violations_raise_instead_of_leaking(restore_registry, bad_output, message):
    @register_objective("broken", description="Broken on purpose.")
    def broken(prompts, responses):
        return bad_output(len(responses))

    with pytest.raises(RuntimeError, match=message):
        score(["broken"], ["p", "q"], ["r", "s"])


def test_batch_validation():
    with pytest.raises(UserError, match="2 prompts but 1 responses"):
        score(["conciseness"], ["a", "b"], ["c"])
    with pytest.raises(UserError, match="lists of strings"):
        score(["conciseness"], "a prompt", "a response")
    with pytest.raises(UserError, match="must be strings"):
        score(["conciseness"], ["a"], [None])
    assert score(["conciseness"], [], [])["conciseness"].shape == (0,)


def test_listing_for_the_cli():
    rows = json.loads(list_objectives_json())
    assert [row["name"] for row in rows] == BUILT_INS
    assert set(rows[0]) == {"name", "higher_is_better", "description"}
    text = list_objectives_text().splitlines()
    assert len(text) == len(BUILT_INS)
    assert text[0].startswith("answer_relevance ")


def test_importing_the_package_loads_no_model_library():
    code = (
        "import sys, steering.objectives; "
        "heavy = ['torch', 'transformers', 'sentence_transformers', 'profanity_check', "
        "'vaderSentiment', 'textstat']; "
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.stdout.strip() == ""


def install_plugin(root, entry: str) -> None:
    """An installed distribution offering `entry` in the steering.objectives group."""
    (root / "shouting_rewards.py").write_text(
        "def shouting(prompts, responses):\n"
        "    return [sum(c.isupper() for c in r) / max(1, len(r)) for r in responses]\n"
    )
    info = root / "shouting_rewards-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shouting-rewards\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[steering.objectives]\n{entry}\n")


def test_an_installed_package_offers_objectives_by_entry_point(
    tmp_path, monkeypatch, restore_registry
):
    install_plugin(tmp_path, "shouting = shouting_rewards:shouting\nbroken = no_such_mod:f")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"shouting", "broken"} <= set(available_objectives())
    scores = score(["shouting"], ["Say hi."], ["HI there"])["shouting"]
    np.testing.assert_allclose(scores, [2 / 8])  # H and I of the 8 characters
    with pytest.raises(
        UserError,
        match=r"objective 'broken' from the installed entry point no_such_mod:f could not be loaded \(ModuleNotFoundError",
    ):
        get_objective("broken")
