"""The methods: names, how each conditions the model, and where each finds its adapter."""

import pytest
import torch
from app_fixtures import OBJECTIVES

from steering.errors import UserError
from steering.model.methods import (
    ADAPTER_OF_METHOD,
    METHODS,
    adapter_dir_for,
    available_methods,
    check_method,
    default_adapter_dir,
    method_conditioning,
    shipped_objectives,
    weights_prompt,
)


def test_unknown_method_lists_the_known_ones():
    assert check_method("soups") == "soups"
    with pytest.raises(UserError, match="method 'magic' is unknown; choose one of clp, prompt"):
        check_method("magic")


def test_prompt_conditioning_writes_the_weighting_in_front():
    text = weights_prompt("Review a cafe.", [0.5, 0.25, 0.25], ("pos", "con", "rel"))
    assert text == "[weights: pos=0.50, con=0.25, rel=0.25]\nReview a cafe."


def test_each_method_conditions_the_model_its_own_way():
    w = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    prompts = ["a", "b"]
    texts, plain = method_conditioning("base", None, OBJECTIVES, prompts, w)
    assert texts == prompts and plain.bank is None and plain.weights is None
    texts, mixed = method_conditioning("clp", "clp", OBJECTIVES, prompts, w)
    assert texts == prompts and mixed.weights is w and not mixed.mix_logits
    _, logits = method_conditioning("logits", "soups", OBJECTIVES, prompts, w)
    assert logits.mix_logits and logits.weights is w
    texts, prompted = method_conditioning("prompt", "prompt", OBJECTIVES, prompts, w)
    # the one conditional adapter runs at full weight; w goes into the text
    assert texts[0].startswith("[weights: positivity=0.75, conciseness=0.25]")
    assert torch.equal(prompted.weights, torch.ones(2, 1))


def test_logit_mixing_uses_the_soups_experts():
    assert ADAPTER_OF_METHOD["logits"] == "soups"
    assert set(ADAPTER_OF_METHOD) | {"base"} == set(METHODS)


def test_adapter_directories_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_ADAPTERS", str(tmp_path))
    assert default_adapter_dir("logits") == tmp_path / "soups"
    with pytest.raises(UserError, match="does not exist; train it with .*--method soups"):
        adapter_dir_for("logits")
    (tmp_path / "clp").mkdir()
    assert adapter_dir_for("clp") == (tmp_path / "clp").resolve()
    assert adapter_dir_for("base") is None
    with pytest.raises(UserError, match="the base method takes no adapter"):
        adapter_dir_for("base", tmp_path / "clp")
    assert available_methods() == ["base"]  # no adapter file anywhere yet


def test_tiny_assets_name_their_objectives_and_methods(tiny_env):  # noqa: F811
    assert shipped_objectives() == OBJECTIVES
    assert available_methods() == list(METHODS)
