"""One weighting of an adapter bank exported as a standard PEFT LoRA: peft itself loads it onto a
fresh base model, which then computes the mixed model's logits."""

import json

import pytest
import torch
from gguf import GGUFReader
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file
from tiny_models import randomise, write_tiny_base_gguf
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from steering.__main__ import main
from steering.errors import UserError
from steering.model.mixing import AdapterMetadata, AdapterSpec, attach, conditioned, save_bank
from steering.model.peft_export import export_peft
from steering.model.policy import model_identity
from steering.weights import Weights

OBJECTIVES = ("positivity", "conciseness", "relevance")


def save_base(model, directory):
    """The tiny base model on disk, before any bank is attached; returns its directory."""
    model.save_pretrained(directory)
    return directory


def save_random_bank(model, base, directory, objectives=OBJECTIVES, variant="attn", seed=1):
    """A bank with random non-zero A and B on `model`, saved as trained on the base at `base`."""
    spec = AdapterSpec(objectives, variant, rank=2, alpha=4.0)
    attach(model, "bank", spec)
    randomise(model, "bank", seed)
    training = {"objectives": list(OBJECTIVES)}
    save_bank(model, "bank", directory, AdapterMetadata(spec, model_identity(base), training))
    return directory


def logits_at(model, ids, values):
    with torch.no_grad(), conditioned(model, "bank", torch.tensor([values])):
        return model(ids).logits


def peft_logits(base_dir, export_dir, ids):
    """(the fresh base model's logits, the logits with the export loaded by peft) and the model."""
    fresh = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        before = fresh(ids).logits
        model = PeftModel.from_pretrained(fresh, export_dir).eval()
        return before, model(ids).logits, model


@pytest.fixture
def ids():
    return torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", ["attn", "full", "logit"])
def test_peft_computes_the_mixed_model_at_the_exported_weighting(tmp_path, tiny_base, ids, variant):
    model = tiny_base.model
    base = save_base(model, tmp_path / "base")
    bank = save_random_bank(model, base, tmp_path / "bank", variant=variant)
    w = Weights.parse(OBJECTIVES, [5, 3, 2])
    mixed = logits_at(model, ids, w.values)
    mixed_elsewhere = logits_at(model, ids, [0.1, 0.1, 0.8])

    out = export_peft(bank, w, tmp_path / "peft", base)
    before, exported, peft_model = peft_logits(base, out, ids)

    assert_close(exported, mixed, rtol=1e-5, atol=1e-5)
    # the comparison can fail: the base model and another weighting give other logits
    assert not torch.allclose(exported, before, atol=1e-2)
    assert not torch.allclose(exported, mixed_elsewhere, atol=1e-2)
    # every tensor of the file went into a LoRA layer of peft's, and no LoRA layer was left empty
    assert set(load_file(out / "adapter_model.safetensors")) == set(
        get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    )
    config = peft_model.peft_config["default"]
    assert (config.r, config.lora_alpha) == (3 * 2, 3 * 2)  # rank K*r, PEFT's scaling 1


def test_the_export_says_what_it_is(tmp_path, tiny_base):
    base = save_base(tiny_base.model, tmp_path / "base")
    bank = save_random_bank(tiny_base.model, base, tmp_path / "bank")
    out = export_peft(bank, [5, 3, 2], tmp_path / "peft", base)  # normalised like any weighting

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert config["bias"] == "none" and config["base_model_name_or_path"] == str(base.resolve())
    record = json.loads((out / "weighting.json").read_text())
    assert record["weights"] == pytest.approx(
        {"positivity": 0.5, "conciseness": 0.3, "relevance": 0.2}
    )
    assert record["base_model"] == {"name": "base", "sha256": model_identity(base).sha256}
    card = (out / "README.md").read_text()
    assert "| conciseness | 0.3000 |" in card and "library_name: peft" in card


def test_the_prompt_bank_is_exported_at_weight_1(tmp_path, tiny_base, ids):
    model = tiny_base.model
    base = save_base(model, tmp_path / "base")
    bank = save_random_bank(model, base, tmp_path / "prompt", objectives=("prompt",))
    with pytest.raises(UserError, match="takes its weighting in the prompt"):
        export_peft(bank, [5, 3, 2], tmp_path / "peft", base)

    out = export_peft(bank, None, tmp_path / "peft", base)
    _, exported, _ = peft_logits(base, out, ids)
    assert_close(exported, logits_at(model, ids, [1.0]), rtol=1e-5, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "[weights: positivity=0.33, conciseness=0.33, relevance=0.33]" in card


def test_bad_input_is_refused_in_one_sentence(tmp_path, tiny_base, make_tiny):
    base = save_base(tiny_base.model, tmp_path / "base")
    bank = save_random_bank(tiny_base.model, base, tmp_path / "bank")
    out = tmp_path / "peft"
    with pytest.raises(UserError, match="expected 3 weights"):
        export_peft(bank, [0.5, 0.5], out, base)
    with pytest.raises(UserError, match="give one weight each"):
        export_peft(bank, None, out, base)
    with pytest.raises(UserError, match="the weights are for a, b, c"):
        export_peft(bank, Weights.parse(("a", "b", "c"), [1, 1, 1]), out, base)
    with pytest.raises(UserError, match="is not an adapter directory"):
        export_peft(tmp_path / "missing", [1, 1, 1], out, base)
    other = save_base(make_tiny(seed=1), tmp_path / "other")
    with pytest.raises(UserError, match="was trained on base model base"):
        export_peft(bank, [1, 1, 1], out, other)
    assert not out.exists()


def test_cli_exports_peft(tiny_env, tmp_path, capsys):
    out = tmp_path / "peft"
    adapter = tiny_env / "adapters" / "clp"
    code = main(["export", "--weights", "3,1", "--adapter", str(adapter), "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"PEFT LoRA adapter written to {out}"
    record = json.loads((out / "weighting.json").read_text())
    assert record["weights"] == {"positivity": 0.75, "conciseness": 0.25}
    config = json.loads((out / "adapter_config.json").read_text())
    # the default base model is STEERING_BASE_MODEL, which the tiny environment points here
    assert config["base_model_name_or_path"] == str((tiny_env / "tiny-base").resolve())
    assert config["r"] == 2 * 2


def test_cli_exports_gguf_per_objective(tmp_path, tiny_base, capsys):
    base = tmp_path / "tiny.gguf"
    write_tiny_base_gguf(base, tiny_base.model)
    bank = save_random_bank(tiny_base.model, base, tmp_path / "bank")
    out = tmp_path / "gguf"
    args = [
        "--format",
        "gguf",
        "--adapter",
        str(bank),
        "--base-model",
        str(base),
        "--out",
        str(out),
    ]
    code = main(["export", *args])
    assert code == 0
    names = [f"adapter-{k}-{o}.gguf" for k, o in enumerate(OBJECTIVES)]
    assert capsys.readouterr().out.split() == [str(out / n) for n in names]
    for name in names:
        assert GGUFReader(str(out / name)).fields["adapter.type"].contents() == "lora"


@pytest.mark.parametrize(
    ("adapter", "args", "message"),
    [
        ("clp", ["--weights", "1,2,3"], "expected 2 weights"),
        ("clp", ["--weights", "a,b"], "not comma-separated numbers"),
        ("clp", ["--weights", "1,-1"], "must not be negative"),
        ("clp", [], "give one weight each"),
        ("prompt", ["--weights", "1,1"], "takes its weighting in the prompt"),
        ("missing", ["--weights", "1,1"], "not an adapter directory"),
        ("clp", ["--format", "gguf"], "needs a .gguf base model"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tiny_env, tmp_path, capsys, adapter, args, message):
    out = tmp_path / "out"
    argv = ["export", *args, "--adapter", str(tiny_env / "adapters" / adapter), "--out", str(out)]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()
