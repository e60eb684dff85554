"""The llama.cpp runtime: the base GGUF in llama.cpp with its loaded LoRA adapters, one context,
and one thread that runs everything that computes on them.

For every adapted matmul llama.cpp adds s_k * (alpha / r) * B_k @ A_k @ x per active adapter
with scale s_k, so the scales s_k = w_k give exactly W0 + sum_k w_k (alpha/r) B_k A_k; adapters
with w_k = 0 are left off the context, which skips their matmuls and changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from steering.errors import UserError
from steering.evaluation.quality import too_short
from steering.model.generate import Decoding, chat_texts, check_fits, response_text
from steering.model.streaming import streamed
from steering.serve.repack_probe import repack_enabled

THREADS_ENV = "STEERING_THREADS"
# merged adapters kept per runtime (about 5 MB each for the shipped rank-4 bank)
MERGED_CACHE = 8


def default_threads() -> int:
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Mix:
    """What one request asks of the adapters: scale s_k for adapter k of a loaded bank."""

    handles: tuple[object, ...]
    paths: tuple[Path, ...]
    scales: tuple[float, ...]
    merge: bool = True


@cache
def _lora_file(
    path: Path, stamp: int
) -> tuple[float, str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(alpha, arch, {weight name: (lora_a (r, in), lora_b (out, r))}) of an exported adapter;
    `stamp` (the file's mtime) keys the cache so a rewritten export is read again."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    weights = sorted({name.rsplit(".", 1)[0] for name in tensors})
    pairs = {w: (tensors[f"{w}.lora_a"], tensors[f"{w}.lora_b"]) for w in weights}
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    return alpha, reader.fields["general.architecture"].contents(), pairs


class LlamaCppRuntime:
    """The base GGUF in llama.cpp: one model with every loaded adapter, one context, and one
    thread that runs everything that computes on them.

    Adapter scales live on the context, so a generation (set the scales, then decode every
    token) runs as one job on that thread while holding `lock`: two requests never see each
    other's scales. One long-lived thread also keeps llama.cpp's OpenMP team in one place:
    decoding from changing threads, after the main thread had decoded, ran at half the speed
    and erratically on this 2-vCPU machine.
    """

    def __init__(self, path: Path, threads: int, context: int):
        import llama_cpp
        from transformers import AutoTokenizer

        _quiet_llama_logs()
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        # Weight repacking selects the CPU's fastest kernels, but dies on VMs that advertise AMX
        # without enabling it (SIGILL) and, on a Xeon with AMX, once an adapter is active
        # (SIGSEGV): on wherever a probe in a child process decoding with an adapter survives
        model_params.use_extra_bufts = repack_enabled(path)
        self.repack = model_params.use_extra_bufts
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise UserError(f"llama.cpp could not load the base model {path}")
        context = min(context, llama_cpp.llama_model_n_ctx_train(self.model))
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = context
        context_params.n_batch = context  # a whole prompt in one decode call
        context_params.n_threads = threads
        context_params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, context_params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise UserError(f"llama.cpp could not create a context of {context} tokens for {path}")
        # adapters belong to the model and are freed with it
        weakref.finalize(self, _free_llama, self.ctx, self.model)
        self.path = path
        self.threads = threads
        self.context = llama_cpp.llama_n_ctx(self.ctx)
        self.lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        # the tokenizer the torch backend uses, so both backends see identical prompt tokens
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True
        )
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.stops = {self.tokenizer.eos_token_id, llama_cpp.llama_vocab_eos(vocab)} - {None, -1}
        self._adapters: dict[Path, object] = {}
        self._merged: OrderedDict[tuple, object] = (
            OrderedDict()
        )  # touched on the compute thread only

    def load_adapter(self, path: Path):
        """A llama.cpp adapter handle, loaded onto the model once."""
        import llama_cpp

        if path not in self._adapters:
            handle = llama_cpp.llama_adapter_lora_init(self.model, str(path).encode())
            if not handle:
                raise UserError(f"llama.cpp could not load the LoRA adapter {path}")
            self._adapters[path] = handle
        return self._adapters[path]

    def release(self, paths: tuple[Path, ...]) -> None:
        """Free the adapters loaded from `paths` and every merged adapter built from them: a
        sampler that moves on to each new version of the adapters keeps none of the old ones."""
        import llama_cpp

        def job() -> None:
            self.set_adapters([])  # none of them may stay on the context
            for key in [k for k in self._merged if any(path in paths for path, _ in k)]:
                llama_cpp.llama_adapter_lora_free(self._merged.pop(key))
            for path in paths:
                if path in self._adapters:
                    llama_cpp.llama_adapter_lora_free(self._adapters.pop(path))

        self.submit(job).result()
        _lora_file.cache_clear()

    def submit(self, job, *args) -> Future:
        """Run job(*args) on the compute thread, holding `lock`."""

        def locked():
            with self.lock:
                return job(*args)

        return self._worker.submit(locked)

    def stream_tokens(self, ids: list[int], mix: Mix, decoding: Decoding) -> Iterator[int]:
        """Sampled token ids of one response under `mix` (the stop token included), decoded on
        the compute thread; closing the iterator stops the decoding at the next token."""

        def job(emit, stop: threading.Event) -> None:
            self.set_adapters(self.adapters_for(mix))
            self._evict_merged()
            with contextlib.closing(self.tokens(ids, decoding)) as sampled:
                for token in sampled:
                    emit(token)
                    if stop.is_set():
                        return

        return streamed(job, submit=self.submit)

    def adapters_for(self, mix: Mix) -> list[tuple[object, float]]:
        """(adapter, scale) pairs computing sum_k s_k (alpha/r) B_k A_k; run it through `submit`.

        With `merge`, two or more non-zero scales become one adapter of rank n*r holding
        [A_1; ...; A_n] and [s_1 B_1 | ... | s_n B_n] (alpha n*alpha keeps the alpha/r factor),
        built once per distinct weighting: llama.cpp pays a fixed cost per adapter and per
        adapted matmul, so one adapter decodes faster than n (docs/backends.md).
        """
        used = [k for k, scale in enumerate(mix.scales) if scale != 0.0]
        if not mix.merge or len(used) < 2:
            return [(mix.handles[k], mix.scales[k]) for k in used]
        key = tuple((mix.paths[k], mix.scales[k]) for k in used)
        if key not in self._merged:
            self._merged[key] = self._load_merged(
                [mix.paths[k] for k in used], [mix.scales[k] for k in used]
            )
        self._merged.move_to_end(key)
        return [(self._merged[key], 1.0)]

    def _load_merged(self, paths: list[Path], scales: list[float]):
        import gguf
        import llama_cpp

        parts = [_lora_file(path, path.stat().st_mtime_ns) for path in paths]
        alpha, arch = parts[0][0], parts[0][1]
        fd, name = tempfile.mkstemp(suffix=".gguf", prefix="steering-merged-")
        os.close(fd)
        try:
            writer = gguf.GGUFWriter(name, arch=arch)
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha * len(paths))
            for weight in parts[0][2]:
                a = np.concatenate([part[2][weight][0] for part in parts], axis=0)  # (n*r, in)
                b = np.concatenate(
                    [scale * part[2][weight][1] for scale, part in zip(scales, parts, strict=True)],
                    axis=1,
                )  # (out, n*r)
                writer.add_tensor(f"{weight}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
                writer.add_tensor(f"{weight}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            # llama.cpp copies the tensors into its own buffers, so the file can go at once
            handle = llama_cpp.llama_adapter_lora_init(self.model, name.encode())
        finally:
            os.unlink(name)
        if not handle:
            raise RuntimeError("llama.cpp could not load a merged adapter")
        return handle

    def _evict_merged(self) -> None:
        """Free the least recently used merged adapters; the active one is the most recent."""
        import llama_cpp

        while len(self._merged) > MERGED_CACHE:
            _, handle = self._merged.popitem(last=False)
            llama_cpp.llama_adapter_lora_free(handle)

    def set_adapters(self, adapters: list[tuple[object, float]]) -> None:
        """Make exactly these (adapter, scale) pairs active on the context; run it through `submit`."""
        import llama_cpp

        used = [(a, s) for a, s in adapters if s != 0.0]
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * len(used))(*(a for a, _ in used))
        scales = (ctypes.c_float * len(used))(*(s for _, s in used))
        if llama_cpp.llama_set_adapters_lora(self.ctx, handles, len(used), scales) != 0:
            raise RuntimeError("llama.cpp refused the adapter scales")

    def prompt_ids(self, prompt: str, max_new_tokens: int) -> list[int]:
        (text,) = chat_texts(self.tokenizer, [prompt])
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        check_fits(len(ids), max_new_tokens, self.context, "llama.cpp")
        return ids

    def decode(self, ids: list[int]) -> None:
        """Append tokens to the sequence; logits of the last one are then ready to sample."""
        import llama_cpp

        tokens = (llama_cpp.llama_token * len(ids))(*ids)
        if llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(tokens, len(ids))) != 0:
            raise RuntimeError("llama_decode failed")

    def clear(self) -> None:
        """Forget the sequence: cached keys and values were computed under other scales."""
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def vocab_size(self) -> int:
        import llama_cpp

        return llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))

    def last_logits(self) -> np.ndarray:
        """(V,) float32 next-token logits after the last decode (a copy); run it through `submit`."""
        import llama_cpp

        vocab = self.vocab_size()
        logits = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(vocab,)).copy()

    def tokens(self, ids: list[int], decoding: Decoding) -> Iterator[int]:
        """Sampled token ids, ending with a stop token or after max_new_tokens; run it through `submit`.

        Sampling mirrors `steering.model.generate._sample`: greedy at temperature 0, else temperature
        before nucleus (llama-cpp-python's own chain applies top_p before temperature). While the
        text has fewer than `decoding.min_words` words, a chain that also biases the stop tokens to
        -inf samples instead, as the torch decoder masks them.
        """
        import llama_cpp

        chain = self._chain(decoding, blocked=())
        floor = self._chain(decoding, blocked=self.stops) if decoding.min_words > 0 else None
        sampled: list[int] = []
        short = floor is not None
        try:
            self.clear()
            self.decode(ids)
            for step in range(decoding.max_new_tokens):
                token = llama_cpp.llama_sampler_sample(floor if short else chain, self.ctx, -1)
                if short:
                    sampled.append(token)
                    short = too_short(self.text(sampled), decoding.min_words)
                yield token
                if token in self.stops or step == decoding.max_new_tokens - 1:
                    return
                self.decode([token])
        finally:
            for made in (chain, floor):
                if made is not None:
                    llama_cpp.llama_sampler_free(made)

    def _chain(self, decoding: Decoding, blocked) -> object:
        """A llama.cpp sampler chain for `decoding`, with the `blocked` token ids biased to -inf."""
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if blocked:
            biases = (llama_cpp.llama_logit_bias * len(blocked))(
                *(llama_cpp.llama_logit_bias(token, float("-inf")) for token in sorted(blocked))
            )
            vocab = self.vocab_size()
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_logit_bias(vocab, len(blocked), biases)
            )
        if decoding.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        llama_cpp.llama_sampler_chain_add(
            chain, llama_cpp.llama_sampler_init_temp(decoding.temperature)
        )
        if decoding.top_p < 1.0:
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_top_p(decoding.top_p, 1)
            )
        llama_cpp.llama_sampler_chain_add(
            chain, llama_cpp.llama_sampler_init_dist(decoding.seed % 2**32)
        )
        return chain

    def text(self, tokens: list[int]) -> str:
        return response_text(self.tokenizer, tokens, self.stops)


def _free_llama(ctx, model) -> None:
    import llama_cpp

    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


def _quiet_llama_logs() -> None:
    """llama-cpp-python prints every llama.cpp log line unless its logger has a level."""
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)
