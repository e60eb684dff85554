import pytest
import torch
from tiny_models import randomise
from torch import nn
from torch.testing import assert_close

from steering.errors import UserError
from steering.model.mixing import (
    AdapterMetadata,
    AdapterSpec,
    LoraBank,
    MixedLoraLinear,
    adapters_off,
    attach,
    bank_parameters,
    conditioned,
    load_bank,
    merged_copy,
    mixed_layers,
    save_bank,
)
from steering.model.policy import BaseModelIdentity

OBJECTIVES = ("positivity", "conciseness", "relevance")


@pytest.mark.parametrize("grad", [True, False], ids=["training path", "inference path"])
def test_layer_equals_explicitly_merged_matrix(grad):
    torch.manual_seed(0)
    base = nn.Linear(6, 5, bias=False)
    layer = MixedLoraLinear(base)
    spec = AdapterSpec(objectives=("a", "b", "c"), rank=2, alpha=4.0)
    model = nn.Sequential()
    model.add_module("layer", layer)
    layer.banks["clp"] = LoraBank(6, 5, spec)
    model._adapter_specs = {"clp": spec}
    randomise(model, "clp")
    bank = layer.banks["clp"]
    w = torch.tensor([0.5, 0.3, 0.2])
    # W(w) = W0 + sum_k w_k (alpha/r) B_k A_k, with A_k rows 2k:2k+2 of A and B_k columns 2k:2k+2
    # of B, and alpha/r = 4/2 = 2.
    expected_w = base.weight.detach().clone()
    for k in range(3):
        a_k = bank.A[2 * k : 2 * k + 2]
        b_k = bank.B[:, 2 * k : 2 * k + 2]
        expected_w += w[k] * 2.0 * (b_k @ a_k)
    x = torch.randn(1, 4, 6)  # (B, T, in)
    with torch.set_grad_enabled(grad), conditioned(model, "clp", w[None, :]):
        got = layer(x)
    assert_close(got, x @ expected_w.T)


def test_inference_copies_follow_new_weightings_and_parameter_updates(tiny_base):
    # the inference path caches A and the scaled B; a new weighting or an in-place update of
    # the parameters (what an optimizer step does) must never be served from a stale cache
    model = tiny_base.model
    attach(model, "clp", AdapterSpec(OBJECTIVES))
    randomise(model, "clp")
    ids = torch.randint(0, 1000, (2, 6))

    def logits(w, grad=False):
        with torch.set_grad_enabled(grad), conditioned(model, "clp", torch.tensor(w)):
            return model(ids).logits.detach()

    same = [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]
    other = [[0.6, 0.2, 0.2], [0.6, 0.2, 0.2]]
    mixed_rows = [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]
    for w in (same, other, mixed_rows, same):
        assert_close(logits(w), logits(w, grad=True))
    before = logits(same)
    with torch.no_grad():
        for p in bank_parameters(model, "clp"):
            p.mul_(1.5)
    after = logits(same)
    assert not torch.allclose(before, after)
    assert_close(after, logits(same, grad=True))


def test_zero_initialised_b_gives_base_logits(tiny_base):
    model = tiny_base.model
    ids = torch.randint(0, 1000, (2, 7))
    expected = model(ids).logits
    attach(model, "clp", AdapterSpec(OBJECTIVES))
    with conditioned(model, "clp", torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])):
        got = model(ids).logits
    assert torch.equal(got, expected)


@pytest.mark.parametrize("variant", ["attn", "full", "logit"])
def test_batched_rows_equal_row_by_row(tiny_base, variant):
    model = tiny_base.model
    attach(model, "clp", AdapterSpec(OBJECTIVES, variant=variant))
    randomise(model, "clp")
    ids = torch.randint(0, 1000, (3, 5))
    w = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
    with conditioned(model, "clp", w):
        batched = model(ids).logits
    for row in range(3):
        with conditioned(model, "clp", w[row : row + 1]):
            single = model(ids[row : row + 1]).logits
        assert_close(batched[row : row + 1], single, atol=1e-5, rtol=1e-5)
    with adapters_off(model):
        base = model(ids).logits
    assert not torch.allclose(batched, base)


def test_variants_condition_the_documented_layers(tiny_base):
    model = tiny_base.model
    attach(model, "a", AdapterSpec(OBJECTIVES, variant="attn"))
    attn = {n for n, m in model.named_modules() if isinstance(m, MixedLoraLinear)}
    assert len(attn) == 2 * 4 and all(n.split(".")[-1].endswith("_proj") for n in attn)
    attach(model, "f", AdapterSpec(OBJECTIVES, variant="full"))
    assert sum("f" in layer.banks for layer in mixed_layers(model)) == 2 * 7
    attach(model, "l", AdapterSpec(OBJECTIVES, variant="logit"))
    assert [
        n for n, m in model.named_modules() if isinstance(m, MixedLoraLinear) and "l" in m.banks
    ] == ["lm_head"]


def test_corner_weight_equals_that_adapter_alone(tiny_base):
    model = tiny_base.model
    attach(model, "clp", AdapterSpec(OBJECTIVES, rank=4))
    randomise(model, "clp")
    # a one-adapter bank holding only adapter k=1 of the three-adapter bank
    attach(model, "single", AdapterSpec(("conciseness",), rank=4))
    with torch.no_grad():
        for layer in mixed_layers(model):
            three, one = layer.banks["clp"], layer.banks["single"]
            one.A.copy_(three.A[4:8])
            one.B.copy_(three.B[:, 4:8])
    ids = torch.randint(0, 1000, (1, 6))
    with conditioned(model, "clp", torch.tensor([[0.0, 1.0, 0.0]])):
        corner = model(ids).logits
    with conditioned(model, "single", torch.tensor([[1.0]])):
        alone = model(ids).logits
    assert_close(corner, alone)


def test_merged_copy_matches_unmerged_path(tiny_base):
    model = tiny_base.model
    attach(model, "clp", AdapterSpec(OBJECTIVES, variant="full"))
    randomise(model, "clp")
    ids = torch.randint(0, 1000, (2, 6))
    w = torch.tensor([0.6, 0.1, 0.3])
    with conditioned(model, "clp", w.expand(2, 3)):
        unmerged = model(ids).logits
    merged = merged_copy(model, "clp", w)
    assert not mixed_layers(merged)
    assert_close(merged(ids).logits, unmerged, atol=1e-4, rtol=1e-4)
    # within bf16 tolerance when both run in bfloat16
    model_bf16 = model.to(torch.bfloat16)
    with conditioned(model_bf16, "clp", w.expand(2, 3)):
        unmerged_bf16 = model_bf16(ids).logits.float()
    merged_bf16 = merged_copy(model_bf16, "clp", w)(ids).logits.float()
    assert_close(merged_bf16, unmerged_bf16, atol=0.1, rtol=0.05)


def test_save_load_round_trip_and_refusals(tiny_base, tmp_path, make_tiny):
    model = tiny_base.model
    spec = AdapterSpec(OBJECTIVES, rank=4, alpha=8.0)
    attach(model, "clp", spec)
    randomise(model, "clp")
    meta = AdapterMetadata(spec, tiny_base.identity, training={"seed": 3})
    save_bank(model, "clp", tmp_path / "clp", meta)
    ids = torch.randint(0, 1000, (1, 5))
    w = torch.tensor([[0.3, 0.3, 0.4]])
    with conditioned(model, "clp", w):
        before = model(ids).logits

    fresh = make_tiny()
    loaded = load_bank(fresh, "clp", tmp_path / "clp", tiny_base.identity, OBJECTIVES)
    assert loaded == meta
    with conditioned(fresh, "clp", w):
        assert torch.equal(fresh(ids).logits, before)

    other = BaseModelIdentity("other-model", "f" * 64)
    with pytest.raises(UserError, match="trained on base model tiny-llama"):
        load_bank(make_tiny(), "clp", tmp_path / "clp", other)
    with pytest.raises(UserError, match="trained for objectives"):
        load_bank(make_tiny(), "clp", tmp_path / "clp", tiny_base.identity, ("a", "b", "c"))
    with pytest.raises(UserError, match="not an adapter directory"):
        load_bank(make_tiny(), "clp", tmp_path / "missing", tiny_base.identity)


def test_unknown_variant_is_refused():
    with pytest.raises(UserError, match="variant 'mlp' is unknown"):
        AdapterSpec(OBJECTIVES, variant="mlp")
