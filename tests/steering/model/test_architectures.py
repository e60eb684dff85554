"""Any transformers causal LM as the base: the attention projections are found by module, the
mixing stays exact, `--target-modules` overrides the choice, and the trainer runs on each."""

import json

import pytest
import torch
from tiny_models import ARCHITECTURES, build_tiny_causal_lm
from torch.testing import assert_close

from steering.errors import UserError
from steering.model.mixing import (
    AdapterSpec,
    attach,
    conditioned,
    conditioned_layer_names,
    merged_copy,
)
from steering.model.policy import BaseModel, BaseModelIdentity
from steering.training.config import TrainConfig
from steering.training.trainer import Trainer

# the leaf names of each architecture's attention projections, as transformers names them
ATTENTION = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "gemma": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "phi3": {"qkv_proj", "o_proj"},
}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_attention_projections_are_found_and_mixed_exactly(architecture, tokenizer):
    model = build_tiny_causal_lm(architecture, len(tokenizer))
    names = conditioned_layer_names(model, "attn")
    assert {n.rpartition(".")[2] for n in names} == ATTENTION[architecture]
    assert len(names) == 2 * len(ATTENTION[architecture])  # two blocks
    full = conditioned_layer_names(model, "full")
    assert set(names) < set(full) and not any(n.endswith("lm_head") for n in full)
    layers = attach(model, "clp", AdapterSpec(("a", "b"), rank=2, alpha=4.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in layers:
            layer.banks["clp"].B.normal_(std=0.5)
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    w = torch.tensor([[0.3, 0.7]])
    with torch.no_grad(), conditioned(model, "clp", w):
        mixed = model(ids).logits
    with torch.no_grad(), conditioned(model, None, None):
        plain = model(ids).logits
    folded = merged_copy(model, "clp", w[0])
    with torch.no_grad():
        assert_close(folded(ids).logits, mixed, atol=1e-5, rtol=1e-4)
    assert (mixed - plain).abs().max() > 1e-3  # the adapters change the output


def test_target_modules_override_the_variant(tokenizer):
    model = build_tiny_causal_lm("qwen2", len(tokenizer))
    names = conditioned_layer_names(model, "attn", ("q_proj", "v_proj"))
    assert {n.rpartition(".")[2] for n in names} == {"q_proj", "v_proj"}
    mlp = conditioned_layer_names(model, "attn", ("mlp.down_proj",))
    assert len(mlp) == 2 and all(n.endswith("mlp.down_proj") for n in mlp)
    with pytest.raises(
        UserError,
        match=r"no linear layer of this Qwen2ForCausalLM matches c_attn; its linear layers are called .*q_proj",
    ):
        conditioned_layer_names(model, "attn", ("c_attn",))


@pytest.mark.parametrize("architecture", ["qwen2", "gemma", "phi3"])
def test_the_trainer_trains_and_saves_on_other_architectures(architecture, tokenizer, tmp_path):
    model = build_tiny_causal_lm(architecture, len(tokenizer))
    base = BaseModel(model, tokenizer, BaseModelIdentity(f"tiny-{architecture}", "0" * 64))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Hi.", "Review a cafe."]))
    config = TrainConfig(
        objectives="positivity,conciseness",
        prompts=str(prompts),
        out=str(tmp_path / "run"),
        pool=str(tmp_path / "pool.jsonl"),
        pool_samples=2,
        algo="rloo",
        steps=1,
        prompts_per_step=2,
        samples=2,
        max_new_tokens=4,
        rank=2,
        dtype="float32",
        target_modules="o_proj",
    )
    trainer = Trainer(config, base)
    before = [p.detach().clone() for p in trainer.parameters]
    out = trainer.run()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.parameters, strict=True))
    metadata = json.loads((out / "adapter.json").read_text())
    assert metadata["spec"]["target_modules"] == ["o_proj"]
    assert [s["name"] for s in metadata["training"]["objective_specs"]] == [
        "positivity",
        "conciseness",
    ]
