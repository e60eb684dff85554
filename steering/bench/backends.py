"""`python -m steering bench backends`: llama.cpp against torch, measured side by side in one run
(a script, never a timed test)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from steering.errors import UserError
from steering.model.generate import Decoding
from steering.model.methods import default_adapter_dir, shipped_objectives
from steering.model.mixing import (
    METADATA_FILE,
    AdapterMetadata,
    AdapterSpec,
    attach,
    mixed_layers,
    save_bank,
)
from steering.model.policy import resolve_dtype
from steering.prompts import EVAL_PROMPTS, read_prompts
from steering.serve.backends import LLAMACPP_MISSING, Backends, llamacpp_available
from steering.serve.llamacpp_runtime import LlamaCppRuntime
from steering.weights import Weights


def save_random_adapter(
    base, directory: Path, std: float, objectives: tuple[str, ...], training: dict | None = None
) -> Path:
    """An attn bank of the shipped shape on `base` with random B (standard deviation `std`),
    saved like a trained adapter: it costs what a trained one costs (the benchmark without a
    shipped clp, and the tests)."""

    spec = AdapterSpec(tuple(objectives))
    name = f"random@{directory}"
    attach(base.model, name, spec)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in mixed_layers(base.model):
            if name in layer.banks:
                bank = layer.banks[name]
                bank.B.copy_(torch.randn(bank.B.shape, generator=generator) * std)
    return save_bank(
        base.model, name, directory, AdapterMetadata(spec, base.identity, training or {})
    )


@contextlib.contextmanager
def _full_length(runtime: LlamaCppRuntime):
    """Both backends ignore their stop tokens, so every run decodes exactly max_new_tokens.

    Otherwise a steered model that answers in four tokens (the shipped clp at high
    conciseness does) would look slow: its time would be mostly the prompt.
    """
    from unittest import mock

    stops, runtime.stops = runtime.stops, set()
    try:
        with mock.patch("steering.model.generate.stop_token_ids", lambda model, tokenizer: set()):
            yield
    finally:
        runtime.stops = stops


class ReferenceEngine:
    """llama-cpp-python's own high-level `llama_cpp.Llama` on the same GGUF, threads and prompt
    tokens, streaming with its default sampler chain at the same temperature and top-p: what the
    engine does without this project around it. Its end-of-sequence token is biased away (a
    logit bias llama-cpp-python applies per token) so that it too decodes max_new_tokens.
    Weight repacking is set as the runtime's (`Llama` does not take it as an argument, and on a
    machine where repacking crashes its default would kill the benchmark)."""

    def __init__(self, runtime: LlamaCppRuntime):
        from unittest import mock

        import llama_cpp
        import llama_cpp.llama_cpp as api

        default = api.llama_model_default_params

        def params():
            chosen = default()
            chosen.use_extra_bufts = runtime.repack
            return chosen

        self.runtime = runtime
        with mock.patch.object(api, "llama_model_default_params", params):
            self.llm = llama_cpp.Llama(
                model_path=str(runtime.path),
                n_threads=runtime.threads,
                n_threads_batch=runtime.threads,
                n_ctx=runtime.context,
                verbose=False,
            )
        self.never = {int(t): -1e9 for t in runtime.stops}

    def stream(self, prompt: str, weights, decoding: Decoding):
        ids = self.runtime.prompt_ids(prompt, decoding.max_new_tokens)
        self.llm.reset()
        chunks = self.llm.create_completion(
            prompt=ids,
            max_tokens=decoding.max_new_tokens,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            seed=decoding.seed,
            logit_bias=self.never,
            stream=True,
        )
        text = ""
        for chunk in chunks:
            text += chunk["choices"][0]["text"]
            yield text


def _stream_rate(steerer, prompts: list[str], weights, max_new_tokens: int) -> tuple[float, float]:
    """(tokens per second over all prompts, median seconds to the first token), one stream;
    the seconds include reading the prompt, as a user waits for it."""
    tokens, elapsed, first = 0, 0.0, []
    for seed, prompt in enumerate(prompts):
        start = time.perf_counter()
        count = 0
        for _ in steerer.stream(prompt, weights, Decoding(max_new_tokens, 0.7, seed=seed)):
            if count == 0:
                first.append(time.perf_counter() - start)
            count += 1
        elapsed += time.perf_counter() - start
        tokens += count
    return tokens / elapsed, float(np.median(first))


def bench_backends(max_new_tokens: int = 64, prompts: int = 4, rounds: int = 3) -> dict:
    """Single-stream tokens/s and time to first token of the raw engine (`llama_cpp.Llama`,
    `ReferenceEngine`), llama.cpp without adapters, llama.cpp steered at the middle of the simplex
    (one merged adapter, and K adapters with K scales), and torch steered at the same w (the
    `auto` dtype: bfloat16 where it is native, else float32), in one run; each figure also as a
    ratio to the raw engine's.

    Uses the shipped clp adapter when there is one, else a random one of the same shape. Every
    run decodes exactly `max_new_tokens` (stop tokens ignored). The three are measured in turn
    within each round and the median round is reported, so load from other processes hits all
    three alike.
    """
    if not llamacpp_available():
        raise UserError(LLAMACPP_MISSING)
    backends = Backends()
    texts = read_prompts(EVAL_PROMPTS, limit=prompts)
    shipped = default_adapter_dir("clp")
    with tempfile.TemporaryDirectory() as scratch:
        if (shipped / METADATA_FILE).is_file():
            adapter_dir, adapter = shipped, "shipped clp"
        else:
            adapter_dir, adapter = (
                save_random_adapter(
                    backends.models.base(), Path(scratch), 0.02, shipped_objectives()
                ),
                "random (no shipped clp yet)",
            )
        plain = backends.llamacpp("base")
        runs = {
            "llamacpp_reference": ReferenceEngine(plain.runtime),
            "llamacpp_base": plain,
            "llamacpp_steered": backends.llamacpp("clp", adapter_dir, mix="merged"),
            "llamacpp_steered_scales": backends.llamacpp("clp", adapter_dir, mix="scales"),
            "torch_steered": backends.torch("clp", adapter_dir),
        }
        weights = Weights.uniform(runs["llamacpp_steered"].objectives)
        measured = {name: [] for name in runs}
        with _full_length(runs["llamacpp_steered"].runtime):
            for steerer in runs.values():  # warm-up: first-call allocations and graph building
                list(steerer.stream(texts[0], weights, Decoding(max_new_tokens=4)))
            for _ in range(rounds):
                for name, steerer in runs.items():
                    measured[name].append(_stream_rate(steerer, texts, weights, max_new_tokens))
    result = {}
    for name, values in measured.items():
        rates = sorted(values)
        result[f"{name}_tok_s"] = round(rates[len(rates) // 2][0], 1)
        result[f"{name}_ttft_s"] = round(float(np.median([v[1] for v in values])), 3)
    reference = result["llamacpp_reference_tok_s"]
    for name in runs:
        if name != "llamacpp_reference":
            result[f"{name}_vs_reference"] = round(result[f"{name}_tok_s"] / reference, 3)
    result["steered_vs_base"] = round(
        result["llamacpp_steered_tok_s"] / result["llamacpp_base_tok_s"], 3
    )
    result["steered_vs_torch"] = round(
        result["llamacpp_steered_tok_s"] / result["torch_steered_tok_s"], 2
    )
    result.update(
        {
            "weights": [round(x, 4) for x in weights.values],
            "adapter": adapter,
            "llamacpp_threads": runs["llamacpp_steered"].runtime.threads,
            "llamacpp_repack": runs["llamacpp_steered"].runtime.repack,
            "torch_threads": torch.get_num_threads(),
            "torch_dtype": resolve_dtype(),
            "max_new_tokens": max_new_tokens,
            "prompts": len(texts),
            "rounds": rounds,
        }
    )
    return result
