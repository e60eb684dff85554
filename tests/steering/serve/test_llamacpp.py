"""The llama.cpp backend serving the real SmolLM2 GGUF, against torch on the same adapter."""

import threading

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

from steering.bench.backends import save_random_adapter
from steering.errors import UserError
from steering.model.generate import Decoding
from steering.model.policy import load_base, resolve_base_model_path
from steering.serve.backends import Backends
from steering.serve.gguf_export import export_gguf_adapters
from steering.serve.llamacpp_backend import MIXES
from steering.serve.llamacpp_runtime import Mix
from steering.weights import Weights

OBJECTIVES = ("positivity", "conciseness", "relevance")


def w(values) -> Weights:
    return Weights.parse(OBJECTIVES, values)


# One llama.cpp thread: the machine's cores are shared with training jobs.
THREADS = 1
WEIGHTS = w([0.5, 0.3, 0.2])


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
def shared() -> Backends:
    """The backends of this module's tests: one llama.cpp runtime, one torch model."""
    return Backends()


@pytest.fixture(scope="module")
def real_adapter(tmp_path_factory):
    """A random bank on the shipped Q4_1 base (std 0.02: about where training takes B)."""
    return save_random_adapter(
        load_base(dtype="float32"), tmp_path_factory.mktemp("q41") / "clp", 0.02, OBJECTIVES
    )


@pytest.fixture(scope="module")
def backends(real_adapter, shared):
    """(llama.cpp clp steerer, torch float32 clp steerer) over the same adapter and Q4_1 base."""
    fast = shared.llamacpp("clp", real_adapter, threads=THREADS)
    return fast, shared.torch("clp", real_adapter, dtype="float32")


@pytest.mark.slow
def test_greedy_tokens_agree_with_torch_on_the_same_dequantised_weights(tmp_path, eval_prompts):
    # On the Q4_1 file llama.cpp also rounds every activation to 8 bits (Q8_1) before its
    # integer dot products, which torch never does; on a float32 copy of the same dequantised
    # weights both compute the same function, so disagreement can only come from the export.
    f32 = tmp_path / "base-f32.gguf"
    write_f32_copy(resolve_base_model_path(), f32)
    base = load_base(str(f32), dtype="float32")
    # a strong adapter (std 0.1 moves logits by several units) so a wrong export cannot hide
    adapter = save_random_adapter(base, tmp_path / "clp", 0.1, OBJECTIVES)
    own = Backends()
    reference = own.torch("clp", adapter, base_path=str(f32), dtype="float32")
    greedy = Decoding(16, temperature=0)
    theirs = reference.generate(eval_prompts, WEIGHTS, greedy)
    for mix in MIXES:
        fast = own.llamacpp("clp", adapter, base_path=str(f32), threads=THREADS, mix=mix)
        ours = fast.generate(eval_prompts, WEIGHTS, greedy)
        agree = sum(a.text == b.text for a, b in zip(ours, theirs, strict=True))
        assert agree >= 0.8 * len(eval_prompts), f"{mix}: {agree}/{len(eval_prompts)} agree"
    plain = fast.generate(eval_prompts[:5], w([0, 0, 1]), greedy)
    assert any(a.text != b.text for a, b in zip(ours[:5], plain, strict=True)), (
        "the adapter changed nothing"
    )


def teacher_forced_agreement(fast, reference, prompts, weights, steps=16) -> float:
    """Share of positions where llama.cpp's next token equals torch's, both fed torch's greedy
    continuation: a per-token measure that one near-tie early in a response cannot dominate."""
    from steering.model.mixing import conditioned

    runtime = fast.runtime
    model = reference.base.model
    agree = total = 0
    for generation in reference.generate(prompts, weights, Decoding(steps, temperature=0)):
        ids = runtime.prompt_ids(generation.prompt, steps)
        response = runtime.tokenizer(generation.text, add_special_tokens=False)["input_ids"][
            : steps - 1
        ]
        with torch.no_grad(), conditioned(model, reference.bank, torch.tensor([weights.values])):
            logits = model(input_ids=torch.tensor([ids + response])).logits[0, len(ids) - 1 :]

        def llama_argmaxes(ids=ids, response=response):
            mix = Mix(fast.adapters, fast.adapter_paths, weights.values, fast.merge)
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
    sweep = [w([t, (1 - t) / 2, (1 - t) / 2]) for t in np.linspace(0, 1, 11)]
    means = {"llamacpp": [], "torch": []}
    pooled = []
    for weights in sweep:
        for name, steerer in (("llamacpp", fast), ("torch", reference)):
            generations = steerer.generate(prompts, weights, Decoding(24, temperature=0))
            texts = [g.text for g in generations]
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
    corners = {"first": w([1, 0, 0]), "last": w([0, 0, 1])}
    greedy = Decoding(12, temperature=0)
    sequential = {
        k: [g.text for g in fast.generate(prompts, weights, greedy)]
        for k, weights in corners.items()
    }
    assert sequential["first"] != sequential["last"]
    concurrent = {}

    def run(key):
        # stream token by token so the two threads interleave at every step they can
        concurrent[key] = [list(fast.stream(p, corners[key], greedy))[-1] for p in prompts]

    threads = [threading.Thread(target=run, args=(key,)) for key in corners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert concurrent == sequential


@pytest.mark.slow
def test_min_words_keeps_both_backends_from_stopping_early(backends):
    prompts = ["Answer with one word: what colour is the sky?"]
    greedy = Decoding(24, temperature=0)
    floored = Decoding(24, temperature=0, min_words=12)
    for steerer in backends:
        (plain,) = steerer.generate(prompts, WEIGHTS, greedy)
        assert len(plain.text.split()) < 12 and plain.tokens < 24  # it stops early by itself
        (longer,) = steerer.generate(prompts, WEIGHTS, floored)
        assert longer.text.startswith(plain.text.rstrip("."))
        assert len(longer.text.split()) >= 12 or longer.tokens == 24


@pytest.mark.slow
def test_stream_ends_with_the_generated_text(backends, eval_prompts):
    fast, _ = backends
    decoding = Decoding(20, temperature=0.7, seed=3)
    streamed = list(fast.stream(eval_prompts[0], WEIGHTS, decoding))
    generated = fast.generate([eval_prompts[0]], WEIGHTS, decoding)[0]
    assert streamed[-1] == generated.text
    assert len(streamed) >= 2  # one update per token, not one at the end


@pytest.mark.slow
def test_prompt_and_base_methods_run_on_llamacpp(tmp_path, eval_prompts, shared):
    training = {"objectives": list(OBJECTIVES)}
    save_random_adapter(
        load_base(dtype="float32"), tmp_path / "prompt", 0.02, ("conditional",), training
    )
    prompted = shared.llamacpp("prompt", tmp_path / "prompt", threads=THREADS)
    assert prompted.objectives == OBJECTIVES and len(prompted.adapters) == 1
    plain = shared.llamacpp("base", threads=THREADS)
    assert plain.runtime is prompted.runtime  # one model and context per Backends
    for steerer in (prompted, plain):
        # base steers whatever objectives the shipped adapters name: weights on its own names
        weights = Weights.parse(steerer.objectives, WEIGHTS.values)
        out = steerer.generate(eval_prompts[:2], weights, Decoding(8, temperature=0))
        assert all(g.text and g.weights == pytest.approx(WEIGHTS.values) for g in out)


@pytest.mark.slow
def test_damaged_export_cache_is_rewritten(real_adapter, tmp_path, shared):
    copy = tmp_path / "clp"
    copy.mkdir()
    for name in ("adapter.json", "adapter.safetensors"):
        (copy / name).write_bytes((real_adapter / name).read_bytes())
    paths = export_gguf_adapters(copy, resolve_base_model_path())
    paths[1].write_bytes(b"GGUF truncated")
    steerer = shared.llamacpp("clp", copy, threads=THREADS)
    assert len(steerer.adapters) == 3 and paths[1].stat().st_size > 1000


@pytest.mark.slow
def test_user_errors_are_one_sentence(backends):
    fast, _ = backends
    with pytest.raises(UserError, match="the prompt is empty"):
        fast.generate(["  "], WEIGHTS, Decoding())
    with pytest.raises(UserError, match="the weights are for a, b, but this method steers"):
        fast.generate(["hi"], Weights.parse(("a", "b"), [1, 0]), Decoding())
    with pytest.raises(UserError, match="exceeds the llama.cpp context"):
        fast.generate(["word " * 3000], WEIGHTS, Decoding(4))
