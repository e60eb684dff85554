"""The llama.cpp backend: GGUF LoRA export (fast, tiny model) and serving (slow, real model)."""

import logging
import threading

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH, GGUFReader, GGUFValueType, GGUFWriter, get_tensor_name_map
from gguf.quants import dequantize
from torch import nn
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from steering import llamacpp
from steering.errors import UserError
from steering.mixing import (
    AdapterMetadata,
    AdapterSpec,
    attach,
    bank_parameters,
    save_bank,
)
from steering.policy import model_identity, resolve_base_model_path

OBJECTIVES = ("positivity", "conciseness", "relevance")


# --- export (tiny model, no llama.cpp needed) -------------------------------------------------


def write_tiny_base_gguf(path, model) -> None:
    """A llama GGUF with the tiny model's linear shapes and, like SmolLM2, no output.weight."""
    config = model.config
    writer = GGUFWriter(str(path), arch="llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".layers." in name:
            hf_name = name.removesuffix(".base")  # a layer already wrapped by attach()
            writer.add_tensor(
                f"{names.get_name(hf_name)}.weight", np.zeros(module.weight.shape, np.float32)
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def randomise(model, name, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bank_parameters(model, name):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


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
    exported = llamacpp.gguf_rotary_rows(rows, kv_heads)
    assert not np.array_equal(exported, rows)
    restored = LlamaTensorProcessor()._reverse_permute_weights(exported, heads, kv_heads)
    np.testing.assert_array_equal(restored, rows)


def test_export_writes_llama_cpp_lora_adapters(tiny_export):
    model, base_path, adapter_dir = tiny_export
    paths = llamacpp.export_gguf_adapters(adapter_dir, base_path)
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
    first = llamacpp.export_gguf_adapters(adapter_dir, base_path)
    stamp = first[0].stat().st_mtime_ns
    assert llamacpp.export_gguf_adapters(adapter_dir, base_path) == first
    assert first[0].stat().st_mtime_ns == stamp

    randomise(model, "clp", seed=2)  # retrained in place: a new version
    metadata = AdapterMetadata(AdapterSpec(OBJECTIVES, "attn", 2, 4.0), model_identity(base_path))
    save_bank(model, "clp", adapter_dir, metadata)
    second = llamacpp.export_gguf_adapters(adapter_dir, base_path)
    assert second[0].parent != first[0].parent
    assert all(p.is_file() for p in second) and not first[0].parent.exists()


def test_export_refuses_a_different_base_model(tiny_export, tmp_path, tiny_base):
    _, _, adapter_dir = tiny_export
    other = tmp_path / "other.gguf"
    write_tiny_base_gguf(other, tiny_base.model)
    with open(other, "ab") as handle:
        handle.write(b"\0")  # same shapes, different file: a different base model
    with pytest.raises(UserError, match=r"was trained on base model tiny \(\w+\), not on other"):
        llamacpp.export_gguf_adapters(adapter_dir, other)


def test_export_refuses_missing_and_corrupt_adapter_files(tiny_export):
    _, base_path, adapter_dir = tiny_export
    tensors = adapter_dir / "adapter.safetensors"
    tensors.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="is not a readable adapter file"):
        llamacpp.export_gguf_adapters(adapter_dir, base_path)
    tensors.unlink()
    with pytest.raises(UserError, match="is not an adapter directory"):
        llamacpp.export_gguf_adapters(adapter_dir, base_path)


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
        llamacpp.export_gguf_adapters(tmp_path / "logit", base_path)


# --- choosing a backend -----------------------------------------------------------------------


def test_backend_comes_from_argument_then_environment_then_installation(monkeypatch):
    monkeypatch.delenv(llamacpp.BACKEND_ENV, raising=False)
    monkeypatch.setattr(llamacpp, "llamacpp_available", lambda: True)
    assert llamacpp.resolve_backend() == "llamacpp"
    monkeypatch.setattr(llamacpp, "llamacpp_available", lambda: False)
    assert llamacpp.resolve_backend() == "torch"
    monkeypatch.setenv(llamacpp.BACKEND_ENV, "llamacpp")
    assert llamacpp.resolve_backend() == "llamacpp"
    assert llamacpp.resolve_backend("torch") == "torch"
    with pytest.raises(UserError, match="choose one of torch, llamacpp"):
        llamacpp.resolve_backend("onnx")


@pytest.fixture
def torch_stub(monkeypatch):
    """Replace the torch loader so that fallback tests need no model."""
    calls = []

    def load_steerer(method, adapter_dir=None, base_path=None, dtype="auto"):
        calls.append(method)
        return "torch steerer"

    monkeypatch.setattr("steering.methods.load_steerer", load_steerer)
    return calls


def test_falls_back_to_torch_and_logs_why(monkeypatch, caplog, torch_stub):
    monkeypatch.setattr(llamacpp, "llamacpp_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="steering.llamacpp"):
        steerer = llamacpp.load_backend_steerer("clp", backend="llamacpp")
    assert steerer == "torch steerer" and torch_stub == ["clp"]
    assert "llama-cpp-python is not installed" in caplog.text
    assert "Using the torch backend" in caplog.text


def test_logit_mixing_stays_on_torch(caplog, torch_stub):
    with caplog.at_level(logging.INFO, logger="steering.llamacpp"):
        assert llamacpp.load_backend_steerer("logits", backend="llamacpp") == "torch steerer"
    assert "torch backend only" in caplog.text


def test_directory_base_model_is_refused_by_llamacpp(tmp_path):
    with pytest.raises(UserError, match="needs a .gguf base model"):
        llamacpp.load_llamacpp_steerer("base", base_path=str(tmp_path))


# --- serving (real SmolLM2 GGUF and llama.cpp) ------------------------------------------------

# One llama.cpp thread: the machine's cores are shared with training jobs.
THREADS = 1
WEIGHTS = [0.5, 0.3, 0.2]


def write_f32_copy(source, target) -> None:
    """The GGUF with every tensor dequantised to float32: the weights torch computes with."""
    reader = GGUFReader(str(source))
    writer = GGUFWriter(str(target), arch=reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type)
    writer.add_file_type(0)  # all float32
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, values.reshape([int(n) for n in reversed(tensor.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def eval_prompts():
    from steering.prompts import EVAL_PROMPTS, read_prompts

    return read_prompts(EVAL_PROMPTS, limit=20)


@pytest.fixture(scope="module")
def real_adapter(tmp_path_factory):
    """A random bank on the shipped Q4_1 base (std 0.02: about where training takes B)."""
    from steering.policy import load_base

    return llamacpp.save_random_adapter(
        load_base(dtype="float32"), tmp_path_factory.mktemp("q41") / "clp", 0.02, OBJECTIVES
    )


@pytest.fixture(scope="module")
def backends(real_adapter):
    """(llama.cpp clp steerer, torch float32 clp steerer) over the same adapter and Q4_1 base."""
    from steering.methods import load_steerer

    fast = llamacpp.load_llamacpp_steerer("clp", real_adapter, threads=THREADS)
    return fast, load_steerer("clp", real_adapter, dtype="float32")


@pytest.mark.slow
def test_greedy_tokens_agree_with_torch_on_the_same_dequantised_weights(tmp_path, eval_prompts):
    # On the Q4_1 file llama.cpp also rounds every activation to 8 bits (Q8_1) before its
    # integer dot products, which torch never does; on a float32 copy of the same dequantised
    # weights both compute the same function, so disagreement can only come from the export.
    from steering.methods import load_steerer
    from steering.policy import load_base

    f32 = tmp_path / "base-f32.gguf"
    write_f32_copy(resolve_base_model_path(), f32)
    base = load_base(str(f32), dtype="float32")
    # a strong adapter (std 0.1 moves logits by several units) so a wrong export cannot hide
    adapter = llamacpp.save_random_adapter(base, tmp_path / "clp", 0.1, OBJECTIVES)
    reference = load_steerer("clp", adapter, base_path=str(f32), dtype="float32")
    theirs = reference.generate(eval_prompts, WEIGHTS, max_new_tokens=16, temperature=0)
    for mix in llamacpp.MIXES:
        fast = llamacpp.load_llamacpp_steerer(
            "clp", adapter, base_path=str(f32), threads=THREADS, mix=mix
        )
        ours = fast.generate(eval_prompts, WEIGHTS, max_new_tokens=16, temperature=0)
        agree = sum(a.text == b.text for a, b in zip(ours, theirs, strict=True))
        assert agree >= 0.8 * len(eval_prompts), f"{mix}: {agree}/{len(eval_prompts)} agree"
    plain = fast.generate(eval_prompts[:5], [0, 0, 1], max_new_tokens=16, temperature=0)
    assert any(a.text != b.text for a, b in zip(ours[:5], plain, strict=True)), (
        "the adapter changed nothing"
    )


def teacher_forced_agreement(fast, reference, prompts, weights, steps=16) -> float:
    """Share of positions where llama.cpp's next token equals torch's, both fed torch's greedy
    continuation: a per-token measure that one near-tie early in a response cannot dominate."""
    from steering.mixing import conditioned

    runtime = fast.runtime
    model = reference.base.model
    agree = total = 0
    for generation in reference.generate(prompts, weights, max_new_tokens=steps, temperature=0):
        ids = runtime.prompt_ids(generation.prompt, steps)
        response = runtime.tokenizer(generation.text, add_special_tokens=False)["input_ids"][
            : steps - 1
        ]
        with torch.no_grad(), conditioned(model, reference.bank, torch.tensor([weights])):
            logits = model(input_ids=torch.tensor([ids + response])).logits[0, len(ids) - 1 :]

        def llama_argmaxes(ids=ids, response=response):
            mix = llamacpp.Mix(fast.adapters, fast.adapter_paths, tuple(weights), fast.merge)
            runtime.set_adapters(runtime.adapters_for(mix))
            runtime.clear()
            runtime.decode(ids)
            chosen = [int(runtime.last_logits().argmax())]
            for token in response:
                runtime.decode([token])
                chosen.append(int(runtime.last_logits().argmax()))
            return chosen

        chosen = runtime.submit(llama_argmaxes).result()
        agree += sum(int(c == int(logits[i].argmax())) for i, c in enumerate(chosen))
        total += len(chosen)
    return agree / total


@pytest.mark.slow
def test_q4_1_serving_agrees_with_torch_token_by_token(backends, eval_prompts):
    fast, reference = backends
    # measured: 98% of positions for the plain base model (the 8-bit activation rounding flips
    # near-ties), so 95% leaves room for noise while a wrong export scores far lower
    assert teacher_forced_agreement(fast, reference, eval_prompts, WEIGHTS) >= 0.95


@pytest.mark.slow
def test_sweep_objective_means_agree_with_torch(backends, eval_prompts):
    from steering.objectives import score

    fast, reference = backends
    prompts = eval_prompts[:10]
    sweep = [[t, (1 - t) / 2, (1 - t) / 2] for t in np.linspace(0, 1, 11)]
    means = {"llamacpp": [], "torch": []}
    pooled = []
    for w in sweep:
        for name, steerer in (("llamacpp", fast), ("torch", reference)):
            texts = [g.text for g in steerer.generate(prompts, w, max_new_tokens=24, temperature=0)]
            scores = score(list(OBJECTIVES), prompts, texts)
            means[name].append([float(np.mean(scores[o])) for o in OBJECTIVES])
            pooled.append(np.stack([scores[o] for o in OBJECTIVES], axis=1))
    # Prompts whose greedy responses are identical score identically; the rest at worst behave
    # like independent draws, so each sweep point's difference of means has standard error at
    # most sqrt(2) * s / sqrt(n) (s: the objective's spread over all responses). Three
    # standard errors bound it; shared responses only make the difference smaller.
    spread = np.concatenate(pooled).std(axis=0, ddof=1)
    tolerance = 3 * np.sqrt(2) * spread / np.sqrt(len(prompts))
    gap = np.abs(np.array(means["llamacpp"]) - np.array(means["torch"]))  # (11, K)
    assert (gap <= tolerance).all(), f"gap {gap.max(axis=0)} > tolerance {tolerance}"


@pytest.mark.slow
def test_concurrent_requests_never_see_each_others_scales(backends, eval_prompts):
    fast, _ = backends
    prompts = eval_prompts[:3]
    corners = {"first": [1, 0, 0], "last": [0, 0, 1]}
    sequential = {
        k: [g.text for g in fast.generate(prompts, w, max_new_tokens=12, temperature=0)]
        for k, w in corners.items()
    }
    assert sequential["first"] != sequential["last"]
    concurrent = {}

    def run(key):
        # stream token by token so the two threads interleave at every step they can
        concurrent[key] = [
            list(fast.stream(p, corners[key], max_new_tokens=12, temperature=0))[-1]
            for p in prompts
        ]

    threads = [threading.Thread(target=run, args=(key,)) for key in corners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert concurrent == sequential


@pytest.mark.slow
def test_stream_ends_with_the_generated_text(backends, eval_prompts):
    fast, _ = backends
    streamed = list(
        fast.stream(eval_prompts[0], WEIGHTS, max_new_tokens=20, temperature=0.7, seed=3)
    )
    generated = fast.generate(
        [eval_prompts[0]], WEIGHTS, max_new_tokens=20, temperature=0.7, seed=3
    )[0]
    assert streamed[-1] == generated.text
    assert len(streamed) >= 2  # one update per token, not one at the end


@pytest.mark.slow
def test_prompt_and_base_methods_run_on_llamacpp(tmp_path, eval_prompts):
    from steering.policy import load_base

    training = {"objectives": list(OBJECTIVES)}
    llamacpp.save_random_adapter(
        load_base(dtype="float32"), tmp_path / "prompt", 0.02, ("conditional",), training
    )
    prompted = llamacpp.load_llamacpp_steerer("prompt", tmp_path / "prompt", threads=THREADS)
    assert prompted.objectives == OBJECTIVES and len(prompted.adapters) == 1
    plain = llamacpp.load_llamacpp_steerer("base", threads=THREADS)
    assert plain.runtime is prompted.runtime  # one model and context per process
    for steerer in (prompted, plain):
        out = steerer.generate(eval_prompts[:2], WEIGHTS, max_new_tokens=8, temperature=0)
        assert all(g.text and g.weights == pytest.approx(tuple(WEIGHTS)) for g in out)


@pytest.mark.slow
def test_damaged_export_cache_is_rewritten(real_adapter, tmp_path):
    copy = tmp_path / "clp"
    copy.mkdir()
    for name in ("adapter.json", "adapter.safetensors"):
        (copy / name).write_bytes((real_adapter / name).read_bytes())
    paths = llamacpp.export_gguf_adapters(copy, resolve_base_model_path())
    paths[1].write_bytes(b"GGUF truncated")
    steerer = llamacpp.load_llamacpp_steerer("clp", copy, threads=THREADS)
    assert len(steerer.adapters) == 3 and paths[1].stat().st_size > 1000


@pytest.mark.slow
def test_user_errors_are_one_sentence(backends):
    fast, _ = backends
    with pytest.raises(UserError, match="the prompt is empty"):
        fast.generate(["  "], WEIGHTS)
    with pytest.raises(UserError, match="expected 3 weights"):
        fast.generate(["hi"], [1, 0])
    with pytest.raises(UserError, match="exceeds the llama.cpp context"):
        fast.generate(["word " * 3000], WEIGHTS, max_new_tokens=4)
