"""GGUF LoRA export of an adapter bank for llama.cpp (tiny model, no llama.cpp needed)."""

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH, GGUFReader, get_tensor_name_map
from tiny_models import randomise, write_tiny_base_gguf
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from steering.errors import UserError
from steering.model.mixing import (
    AdapterMetadata,
    AdapterSpec,
    attach,
    save_bank,
)
from steering.model.policy import model_identity
from steering.serve.gguf_export import export_gguf_adapters, gguf_rotary_rows

OBJECTIVES = ("positivity", "conciseness", "relevance")


@pytest.fixture
def tiny_export(tmp_path, tiny_base):
    """(model, base GGUF path, adapter dir) for a randomised attn bank on the tiny model."""
    base_path = tmp_path / "tiny.gguf"
    write_tiny_base_gguf(base_path, tiny_base.model)
    spec = AdapterSpec(OBJECTIVES, "attn", rank=2, alpha=4.0)
    attach(tiny_base.model, "clp", spec)
    randomise(tiny_base.model, "clp")
    adapter_dir = tmp_path / "clp"
    save_bank(tiny_base.model, "clp", adapter_dir, AdapterMetadata(spec, model_identity(base_path)))
    return tiny_base.model, base_path, adapter_dir


@pytest.mark.parametrize("heads, kv_heads", [(9, 9), (9, 3), (4, 2)])
def test_rotary_rows_are_undone_by_transformers_gguf_loader(heads, kv_heads):
    # transformers reverse-permutes q/k when loading a llama GGUF; our export must be its inverse
    head_dim = 8
    rows = np.random.default_rng(0).normal(size=(kv_heads * head_dim, 5)).astype(np.float32)
    exported = gguf_rotary_rows(rows, kv_heads)
    assert not np.array_equal(exported, rows)
    restored = LlamaTensorProcessor()._reverse_permute_weights(exported, heads, kv_heads)
    np.testing.assert_array_equal(restored, rows)


def test_export_writes_llama_cpp_lora_adapters(tiny_export):
    model, base_path, adapter_dir = tiny_export
    paths = export_gguf_adapters(adapter_dir, base_path)
    assert [p.name for p in paths] == [
        f"adapter-{k}-{name}.gguf" for k, name in enumerate(OBJECTIVES)
    ]
    assert paths[0].parent.parent == adapter_dir.resolve()  # cached next to the adapter
    readers = [GGUFReader(str(p)) for p in paths]
    fields = readers[0].fields
    assert fields["general.type"].contents() == "adapter"
    assert fields["general.architecture"].contents() == "llama"
    assert fields["adapter.type"].contents() == "lora"
    assert fields["adapter.lora.alpha"].contents() == pytest.approx(4.0)
    names = {t.name for t in readers[0].tensors}
    assert "blk.1.attn_q.weight.lora_a" in names and "blk.0.attn_output.weight.lora_b" in names
    assert len(names) == 2 * 4 * 2  # (a, b) x 4 projections x 2 layers

    # sum_k w_k (alpha/r) B_k A_k rebuilt from the files, mapped back by transformers' own
    # loader permutation, equals the torch bank's merged delta: the files mean the same mixing
    w = torch.tensor([0.5, 0.3, 0.2])
    names_map = get_tensor_name_map(MODEL_ARCH.LLAMA, 2)
    config = model.config
    for layer_name, module in model.named_modules():
        if not hasattr(module, "banks"):
            continue
        gguf_name = f"{names_map.get_name(layer_name)}.weight"
        delta = 0
        for k, reader in enumerate(readers):
            tensors = {t.name: np.array(t.data) for t in reader.tensors}
            a, b = tensors[f"{gguf_name}.lora_a"], tensors[f"{gguf_name}.lora_b"]
            assert a.shape == (2, module.in_features) and b.shape == (module.out_features, 2)
            delta = delta + float(w[k]) * (4.0 / 2) * (b @ a)
        if ".attn_q." in gguf_name or ".attn_k." in gguf_name:
            kv = (
                config.num_attention_heads
                if ".attn_q." in gguf_name
                else config.num_key_value_heads
            )
            delta = LlamaTensorProcessor()._reverse_permute_weights(
                delta, config.num_attention_heads, kv
            )
        expected = module.banks["clp"].merged_delta(w).detach().numpy()
        np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-6)


def test_export_runs_once_per_adapter_version(tiny_export):
    model, base_path, adapter_dir = tiny_export
    first = export_gguf_adapters(adapter_dir, base_path)
    stamp = first[0].stat().st_mtime_ns
    assert export_gguf_adapters(adapter_dir, base_path) == first
    assert first[0].stat().st_mtime_ns == stamp

    randomise(model, "clp", seed=2)  # retrained in place: a new version
    metadata = AdapterMetadata(AdapterSpec(OBJECTIVES, "attn", 2, 4.0), model_identity(base_path))
    save_bank(model, "clp", adapter_dir, metadata)
    second = export_gguf_adapters(adapter_dir, base_path)
    assert second[0].parent != first[0].parent
    assert all(p.is_file() for p in second) and not first[0].parent.exists()


def test_export_refuses_a_different_base_model(tiny_export, tmp_path, tiny_base):
    _, _, adapter_dir = tiny_export
    other = tmp_path / "other.gguf"
    write_tiny_base_gguf(other, tiny_base.model)
    with open(other, "ab") as handle:
        handle.write(b"\0")  # same shapes, different file: a different base model
    with pytest.raises(UserError, match=r"was trained on base model tiny \(\w+\), not on other"):
        export_gguf_adapters(adapter_dir, other)


def test_export_says_which_architectures_it_writes(tmp_path, tiny_base):
    """A GGUF of an architecture the export does not map is refused, naming those it does; the
    backend factory then serves the method on torch with this reason in the log."""
    base_path = tmp_path / "tiny-gemma.gguf"
    write_tiny_base_gguf(base_path, tiny_base.model, arch="gemma")
    spec = AdapterSpec(OBJECTIVES, "attn", rank=2, alpha=4.0)
    attach(tiny_base.model, "clp", spec)
    save_bank(
        tiny_base.model, "clp", tmp_path / "clp", AdapterMetadata(spec, model_identity(base_path))
    )
    with pytest.raises(
        UserError,
        match=r"adapters export to llama.cpp for llama, qwen2, qwen3 GGUF models, and "
        r"tiny-gemma.gguf is a gemma model",
    ):
        export_gguf_adapters(tmp_path / "clp", base_path)


def test_export_refuses_missing_and_corrupt_adapter_files(tiny_export):
    _, base_path, adapter_dir = tiny_export
    tensors = adapter_dir / "adapter.safetensors"
    tensors.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="is not a readable adapter file"):
        export_gguf_adapters(adapter_dir, base_path)
    tensors.unlink()
    with pytest.raises(UserError, match="is not an adapter directory"):
        export_gguf_adapters(adapter_dir, base_path)


def test_logit_variant_is_refused_when_the_output_layer_is_tied(tmp_path, tiny_base):
    base_path = tmp_path / "tiny.gguf"
    write_tiny_base_gguf(base_path, tiny_base.model)
    spec = AdapterSpec(OBJECTIVES, "logit", rank=2)
    attach(tiny_base.model, "logit", spec)
    save_bank(
        tiny_base.model,
        "logit",
        tmp_path / "logit",
        AdapterMetadata(spec, model_identity(base_path)),
    )
    with pytest.raises(UserError, match="ties its output layer"):
        export_gguf_adapters(tmp_path / "logit", base_path)
