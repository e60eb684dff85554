"""Fast CPU serving on llama.cpp: the base GGUF plus the K objective adapters as GGUF LoRA files,
mixed per request by setting adapter k's scale to w_k.

For every adapted matmul llama.cpp adds, per loaded adapter with scale s_k,
s_k * (alpha / r) * B_k @ A_k @ x (`llama_adapter_lora_weight::get_scale`), so the scales
s_k = w_k give exactly the mixing of `steering.mixing`:

    y = W0 x + sum_k w_k * (alpha / r) * B_k @ A_k @ x

Adapters with w_k = 0 are left off the context, which skips their matmuls and changes nothing.

    STEERING_BACKEND=llamacpp python -m steering generate --prompt "Review a cafe" --weights 0.5,0.3,0.2
    python -m steering bench backends [--json]

The backend is chosen by `load_backend_steerer`: an explicit `backend`, else `STEERING_BACKEND`,
else `llamacpp` when `llama-cpp-python` is installed. Logit mixing (`logits`) runs on torch only.
Anything the llama.cpp path cannot serve (package missing, a directory base model, an adapter
that does not fit) falls back to the torch backend with one line in the log saying why.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from steering.errors import UserError
from steering.generate import Generation
from steering.mixing import (
    ADAPTER_FILE,
    METADATA_FILE,
    AdapterMetadata,
    read_metadata,
)
from steering.policy import chat_prompt, model_identity, resolve_base_model_path

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "llamacpp")
BACKEND_ENV = "STEERING_BACKEND"
THREADS_ENV = "STEERING_THREADS"
CONTEXT_ENV = "STEERING_LLAMACPP_CONTEXT"
REPACK_ENV = "STEERING_LLAMACPP_REPACK"
MIX_ENV = "STEERING_LLAMACPP_MIX"
MIXES = ("merged", "scales")
# merged adapters kept per process (about 5 MB each for the shipped rank-4 bank)
MERGED_CACHE = 8
DEFAULT_CONTEXT = 2048
# Bump when the exported files change meaning, so stale caches are rewritten.
EXPORT_VERSION = "1"
EXPORT_PREFIX = "gguf-"


# ---------------------------------------------------------------------------------------------
# Choosing a backend


def llamacpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def resolve_backend(backend: str | None = None) -> str:
    """An explicit backend, else STEERING_BACKEND, else llamacpp when installed, else torch."""
    chosen = (backend or os.environ.get(BACKEND_ENV) or "").strip().lower()
    if not chosen:
        return "llamacpp" if llamacpp_available() else "torch"
    if chosen not in BACKENDS:
        raise UserError(f"backend {chosen!r} is unknown; choose one of {', '.join(BACKENDS)}")
    return chosen


def load_backend_steerer(
    method: str,
    adapter_dir: str | Path | None = None,
    base_path: str | None = None,
    dtype: str = "auto",
    backend: str | None = None,
):
    """The method ready to generate on the chosen backend (`LlamaCppSteerer` or torch `Steerer`).

    `dtype` applies to the torch backend only. When llama.cpp cannot serve the request the torch
    backend is used instead and the log says why (a warning; only an info line when nobody asked
    for llama.cpp and the base model is a transformers directory, which llama.cpp never reads);
    errors that torch would raise as well (an unknown method, a missing adapter directory)
    surface from torch unchanged.
    """
    from steering.methods import check_method, load_steerer

    check_method(method)
    chosen = resolve_backend(backend)
    asked = bool(backend or os.environ.get(BACKEND_ENV, "").strip())
    if chosen == "llamacpp" and not asked and resolve_base_model_path(base_path).is_dir():
        logger.info("the base model is a transformers directory; using the torch backend")
        chosen = "torch"
    if chosen == "llamacpp":
        if method == "logits":
            logger.info("logit mixing runs on the torch backend only; using torch for `logits`")
        else:
            try:
                return load_llamacpp_steerer(method, adapter_dir, base_path)
            except UserError as error:
                logger.warning("llama.cpp backend unavailable: %s Using the torch backend.", error)
    return load_steerer(method, adapter_dir, base_path, dtype)


def backend_of(steerer) -> str:
    """`llamacpp` or `torch`: which backend a loaded steerer runs on."""
    return getattr(steerer, "backend", "torch")


# ---------------------------------------------------------------------------------------------
# Export: adapter.safetensors -> one GGUF LoRA adapter per objective


@dataclass(frozen=True)
class BaseGguf:
    """What the export needs to know about the base GGUF file."""

    path: Path
    arch: str
    block_count: int
    head_count: int
    head_count_kv: int
    shapes: dict[str, tuple[int, int]]  # tensor name -> (out, in), the torch (row, column) order


@cache
def read_base_gguf(path: Path) -> BaseGguf:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable GGUF file ({error})") from None

    def field(key: str):
        if key not in reader.fields:
            raise UserError(f"{path} has no {key} field; it is not a llama.cpp model GGUF")
        return reader.fields[key].contents()

    arch = field("general.architecture")
    head_count = int(field(f"{arch}.attention.head_count"))
    shapes = {}
    for tensor in reader.tensors:
        if len(tensor.shape) == 2:
            # GGUF lists dimensions innermost first: (in, out)
            shapes[tensor.name] = (int(tensor.shape[1]), int(tensor.shape[0]))
    kv_key = f"{arch}.attention.head_count_kv"
    return BaseGguf(
        path=path,
        arch=arch,
        block_count=int(field(f"{arch}.block_count")),
        head_count=head_count,
        head_count_kv=int(field(kv_key)) if kv_key in reader.fields else head_count,
        shapes=shapes,
    )


def gguf_rotary_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection from the Hugging Face layout to llama.cpp's.

    transformers un-permutes q and k when it loads a llama GGUF (`reverse_permute`), so the
    adapters are trained in HF's layout (each head: all first rotary halves, then all second
    halves); llama.cpp computes in the GGUF layout (interleaved pairs). This is
    `LlamaModel.permute` of convert_hf_to_gguf.py, applied to B, which holds the output rows.
    """
    out = rows.shape[0]
    # (n_head, 2, head_dim/2, ...) -> (n_head, head_dim/2, 2, ...): halves become pairs
    grouped = rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:])
    return grouped.swapaxes(1, 2).reshape(rows.shape)


def _gguf_weight_name(base: BaseGguf, layer_name: str) -> str:
    import gguf

    arch = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}.get(base.arch)
    if arch is None:
        raise UserError(
            f"the llama.cpp backend does not know base model architecture {base.arch!r}"
        )
    mapped = gguf.get_tensor_name_map(arch, base.block_count).get_name(layer_name)
    if mapped is None:
        raise UserError(f"adapter layer {layer_name} has no counterpart in a {base.arch} GGUF")
    return f"{mapped}.weight"


def adapter_digest(adapter_dir: Path) -> str:
    """One adapter version: the tensors, the metadata and the export format."""
    digest = hashlib.sha256(EXPORT_VERSION.encode())
    for name in (METADATA_FILE, ADAPTER_FILE):
        with open(adapter_dir / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_adapter_tensors(adapter_dir: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = adapter_dir / ADAPTER_FILE
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable adapter file ({error})") from None


def _lora_pairs(
    metadata: AdapterMetadata, tensors: dict[str, np.ndarray], base: BaseGguf, adapter_dir: Path
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(GGUF weight name, A (K*r, in), B (out, K*r) in GGUF row order) per conditioned layer."""
    spec = metadata.spec
    hidden = spec.num_adapters * spec.rank
    layer_names = sorted({name.rsplit(".", 1)[0] for name in tensors})
    if set(tensors) != {f"{n}.{part}" for n in layer_names for part in ("A", "B")}:
        raise UserError(f"adapter in {adapter_dir} holds tensors other than matching .A/.B pairs")
    pairs = []
    for layer_name in layer_names:
        a = tensors[f"{layer_name}.A"].astype(np.float32)
        b = tensors[f"{layer_name}.B"].astype(np.float32)
        name = _gguf_weight_name(base, layer_name)
        if name not in base.shapes:
            if name == "output.weight":
                raise UserError(
                    "the base GGUF ties its output layer to the token embeddings, so llama.cpp "
                    f"cannot apply the {spec.variant!r} adapter in {adapter_dir}"
                )
            raise UserError(
                f"adapter in {adapter_dir} conditions {layer_name}, which the base GGUF lacks"
            )
        out_features, in_features = base.shapes[name]
        if a.shape != (hidden, in_features) or b.shape != (out_features, hidden):
            raise UserError(
                f"adapter in {adapter_dir} does not match the base model's layer shapes"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise UserError(f"adapter in {adapter_dir} holds NaN or infinite values")
        if base.arch == "llama" and name.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = base.head_count if ".attn_q." in name else base.head_count_kv
            b = gguf_rotary_rows(b, heads)
        pairs.append((name, a, b))
    return pairs


def _write_adapter(
    path: Path,
    arch: str,
    alpha: float,
    pairs: list[tuple[str, np.ndarray, np.ndarray]],
    k: int,
    rank: int,
    objective: str,
    digest: str,
) -> None:
    """Adapter k as a llama.cpp LoRA GGUF (the layout convert_lora_to_gguf.py writes)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    writer.add_string("steering.objective", objective)
    writer.add_string("steering.adapter_digest", digest)
    units = slice(k * rank, (k + 1) * rank)
    for name, a, b in pairs:
        # lora_a (r, in) and lora_b (out, r); llama.cpp reads rank from lora_b and scales by alpha/r
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a[units]))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b[:, units]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _cache_root(adapter_dir: Path) -> Path:
    """Next to the adapter when that directory is writable, else the user's cache."""
    if os.access(adapter_dir, os.W_OK):
        return adapter_dir
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (
        cache_home
        / "steering"
        / "gguf-adapters"
        / hashlib.sha256(str(adapter_dir).encode()).hexdigest()[:16]
    )


def adapter_gguf_paths(adapter_dir: Path, metadata: AdapterMetadata, digest: str) -> list[Path]:
    directory = _cache_root(adapter_dir) / f"{EXPORT_PREFIX}{digest[:16]}"
    return [
        directory / f"adapter-{k}-{name}.gguf" for k, name in enumerate(metadata.spec.objectives)
    ]


def export_gguf_adapters(
    adapter_dir: str | Path, base_gguf: str | Path, force: bool = False
) -> list[Path]:
    """The adapter bank in `adapter_dir` as K GGUF LoRA files, exported once per adapter version.

    Refuses, with one sentence, an unreadable or inconsistent adapter and a base model other
    than the one the adapter was trained on. The files go to `adapter_dir/gguf-<digest>/`
    (or the user cache when that is read-only); older exports there are removed.
    """
    adapter_dir = Path(adapter_dir).resolve()
    base_path = Path(base_gguf).resolve()
    metadata = read_metadata(adapter_dir)
    identity = model_identity(base_path)
    if metadata.base_model.sha256 != identity.sha256:
        raise UserError(
            f"adapter in {adapter_dir} was trained on base model {metadata.base_model.name} "
            f"({metadata.base_model.sha256[:12]}), not on {identity.name} ({identity.sha256[:12]})"
        )
    digest = adapter_digest(adapter_dir)
    paths = adapter_gguf_paths(adapter_dir, metadata, digest)
    target = paths[0].parent
    if not force and all(p.is_file() for p in paths):
        return paths
    base = read_base_gguf(base_path)
    pairs = _lora_pairs(metadata, _read_adapter_tensors(adapter_dir), base, adapter_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    # write into a fresh sibling directory and rename it into place, so a concurrent reader
    # never sees half-written files
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        for k, (path, objective) in enumerate(zip(paths, metadata.spec.objectives, strict=True)):
            _write_adapter(
                staging / path.name,
                base.arch,
                metadata.spec.alpha,
                pairs,
                k,
                metadata.spec.rank,
                objective,
                digest,
            )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in target.parent.glob(f"{EXPORT_PREFIX}*"):
        if stale != target and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    logger.info("exported %d GGUF LoRA adapters to %s", len(paths), target)
    return paths


# ---------------------------------------------------------------------------------------------
# Runtime: one llama.cpp model and context per process, behind a lock


def default_threads() -> int:
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@cache
def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(path.parent), gguf_file=path.name, local_files_only=True
    )


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

        _quiet_llama_logs()
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        # Weight repacking ("extra buffer types") selects AMX kernels on CPUs that advertise AMX;
        # some VMs advertise it without enabling the tile registers and the first matmul dies
        # with SIGILL (measured on this project's 2-vCPU Firecracker VM). Opt in with
        # STEERING_LLAMACPP_REPACK=1.
        model_params.use_extra_bufts = os.environ.get(REPACK_ENV) == "1"
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
        self.tokenizer = _tokenizer(path)
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

    def submit(self, job, *args) -> Future:
        """Run job(*args) on the compute thread, holding `lock`."""

        def locked():
            with self.lock:
                return job(*args)

        return self._worker.submit(locked)

    def generation(self, ids, mix: Mix, decoding: dict, emit, stop: threading.Event) -> Future:
        """Decode one response under `mix` on the compute thread, calling emit(token) for each
        sampled token (the stop token included) until done or `stop` is set."""

        def job():
            self.set_adapters(self.adapters_for(mix))
            self._evict_merged()
            with contextlib.closing(self.tokens(ids, **decoding)) as sampled:
                for token in sampled:
                    emit(token)
                    if stop.is_set():
                        return

        return self.submit(job)

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
        if not prompt or not prompt.strip():
            raise UserError("the prompt is empty")
        ids = self.tokenizer(chat_prompt(self.tokenizer, prompt), add_special_tokens=False)[
            "input_ids"
        ]
        if len(ids) + max_new_tokens > self.context:
            raise UserError(
                f"the prompt is {len(ids)} tokens; with {max_new_tokens} new tokens it exceeds the "
                f"llama.cpp context of {self.context} tokens"
            )
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

    def last_logits(self) -> np.ndarray:
        """(V,) float32 next-token logits after the last decode (a copy); run it through `submit`."""
        import llama_cpp

        vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        logits = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(vocab,)).copy()

    def tokens(
        self, ids: list[int], max_new_tokens: int, temperature: float, top_p: float, seed: int
    ) -> Iterator[int]:
        """Sampled token ids, ending with a stop token or after max_new_tokens; run it through `submit`.

        Sampling mirrors `steering.generate._sample`: greedy at temperature 0, else temperature
        before nucleus (llama-cpp-python's own chain applies top_p before temperature).
        """
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temperature))
            if top_p < 1.0:
                llama_cpp.llama_sampler_chain_add(
                    chain, llama_cpp.llama_sampler_init_top_p(top_p, 1)
                )
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_dist(seed % 2**32)
            )
        try:
            self.clear()
            self.decode(ids)
            for step in range(max_new_tokens):
                token = llama_cpp.llama_sampler_sample(chain, self.ctx, -1)
                yield token
                if token in self.stops or step == max_new_tokens - 1:
                    return
                self.decode([token])
        finally:
            llama_cpp.llama_sampler_free(chain)

    def text(self, tokens: list[int]) -> str:
        kept = [t for t in tokens if t not in self.stops]
        return self.tokenizer.decode(kept, skip_special_tokens=True).strip()


def _free_llama(ctx, model) -> None:
    import llama_cpp

    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


def _quiet_llama_logs() -> None:
    """llama-cpp-python prints every llama.cpp log line unless its logger has a level."""
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)


@cache
def _runtime(path: Path, threads: int, context: int) -> LlamaCppRuntime:
    return LlamaCppRuntime(path, threads, context)


# ---------------------------------------------------------------------------------------------
# Steerer


def _check_decoding(max_new_tokens: int, temperature: float, top_p: float) -> None:
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise UserError(f"temperature must not be negative, got {temperature}")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")


@dataclass(frozen=True)
class LlamaCppSteerer:
    """One method on llama.cpp, with the interface of `steering.methods.Steerer`."""

    method: str
    runtime: LlamaCppRuntime
    objectives: tuple[str, ...]
    adapters: tuple[object, ...]  # llama.cpp handles, one per adapter of the bank
    adapter_paths: tuple[Path, ...]  # their exported GGUF files
    metadata: AdapterMetadata | None
    adapter_dir: Path | None
    merge: bool = True  # one merged adapter per weighting (else K adapters with K scales)
    backend: ClassVar[str] = "llamacpp"

    @property
    def calibration(self):
        """Normalisation statistics saved with the adapter (the shipped clp one for `base`)."""
        from steering.methods import default_adapter_dir
        from steering.objectives import load_calibration

        return load_calibration(self.adapter_dir or default_adapter_dir("clp"))

    def normalised_weights(self, weights, rows: int):
        from steering.methods import weight_rows

        return weight_rows(weights, len(self.objectives), rows)

    def _request(self, prompt: str, w: tuple[float, ...]) -> tuple[str, Mix]:
        """The text the model sees and the adapter scales for one normalised weighting."""
        from steering.methods import weights_prompt

        if self.method == "prompt":
            # the weighting goes into the prompt; the one conditional adapter runs at full scale
            text, scales = weights_prompt(prompt, w, self.objectives), (1.0,) * len(self.adapters)
        else:
            text, scales = prompt, (w if self.adapters else ())
        return text, Mix(self.adapters, self.adapter_paths, tuple(scales), self.merge)

    def generate(
        self,
        prompts: list[str],
        weights,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int = 0,
    ) -> list[Generation]:
        """One response per prompt; `weights` is one weighting for all or one per prompt.

        Rows run one after another; row i samples with seed + i, so repeated prompts differ.
        """
        _check_decoding(max_new_tokens, temperature, top_p)
        if not prompts:
            raise UserError("no prompts were given")
        w = self.normalised_weights(weights, len(prompts))
        rows = [tuple(row) for row in w.tolist()]
        # every prompt is checked before the first one runs
        requests = [self._request(prompt, row) for prompt, row in zip(prompts, rows, strict=True)]
        ids = [self.runtime.prompt_ids(text, max_new_tokens) for text, _ in requests]
        results = []
        for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
            start = time.perf_counter()
            decoding = dict(
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed + i
            )
            tokens: list[int] = []
            self.runtime.generation(
                ids[i], requests[i][1], decoding, tokens.append, threading.Event()
            ).result()
            seconds = time.perf_counter() - start
            results.append(Generation(prompt, self.runtime.text(tokens), row, len(tokens), seconds))
        return results

    def stream(
        self,
        prompt: str,
        weights,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 0.95,
        seed: int = 0,
    ) -> Iterator[str]:
        """The response text so far, after every token.

        The tokens come from the runtime's compute thread, so the caller may iterate from any
        thread; closing the iterator (or walking away from it) stops the generation at the next
        token, and it never runs past max_new_tokens.
        """
        _check_decoding(max_new_tokens, temperature, top_p)
        row = tuple(self.normalised_weights(weights, 1)[0].tolist())
        decoding = dict(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
        text, mix = self._request(prompt, row)
        ids = self.runtime.prompt_ids(text, max_new_tokens)
        sampled: queue.Queue = queue.Queue()
        stop = threading.Event()
        job = self.runtime.generation(ids, mix, decoding, sampled.put, stop)
        job.add_done_callback(lambda _: sampled.put(None))
        tokens: list[int] = []
        try:
            while (token := sampled.get()) is not None and token not in self.runtime.stops:
                tokens.append(token)
                yield self.runtime.text(tokens)
            job.result()  # a failed generation raises here
        finally:
            stop.set()


@cache
def _load(
    method: str, adapter_dir: Path | None, base_path: Path, threads: int, context: int, merge: bool
) -> LlamaCppSteerer:
    from steering.methods import ADAPTER_OF_METHOD, default_adapter_dir, shipped_objectives

    if method == "base":
        runtime = _runtime(base_path, threads, context)
        return LlamaCppSteerer(method, runtime, shipped_objectives(), (), (), None, None, merge)
    directory = adapter_dir or default_adapter_dir(method).resolve()
    if not directory.exists():
        raise UserError(
            f"adapter directory {directory} does not exist; train it with "
            f"`python -m steering train --method {ADAPTER_OF_METHOD[method]}`"
        )
    paths = export_gguf_adapters(directory, base_path)
    metadata = read_metadata(directory)
    runtime = _runtime(base_path, threads, context)
    try:
        adapters = tuple(runtime.load_adapter(p) for p in paths)
    except UserError:
        # a damaged cached export: write it again once
        paths = export_gguf_adapters(directory, base_path, force=True)
        adapters = tuple(runtime.load_adapter(p) for p in paths)
    objectives = tuple(metadata.training.get("objectives", metadata.spec.objectives))
    if method != "prompt" and len(objectives) != len(adapters):
        raise UserError(
            f"adapter in {directory} has {len(adapters)} adapters for {len(objectives)} objectives"
        )
    return LlamaCppSteerer(
        method, runtime, objectives, adapters, tuple(paths), metadata, directory, merge
    )


def load_llamacpp_steerer(
    method: str,
    adapter_dir: str | Path | None = None,
    base_path: str | None = None,
    threads: int | None = None,
    mix: str | None = None,
) -> LlamaCppSteerer:
    """The method on llama.cpp, loaded once per process; every method shares one runtime.

    `mix` (else STEERING_LLAMACPP_MIX, else `merged`) chooses how a weighting reaches
    llama.cpp: `merged` builds one adapter per distinct weighting (a few milliseconds, cached),
    `scales` sets the K exported adapters' scales to w. Both compute the same sum.
    """
    from steering.methods import check_method

    check_method(method)
    mix = (mix or os.environ.get(MIX_ENV) or "merged").strip().lower()
    if mix not in MIXES:
        raise UserError(f"llama.cpp mix {mix!r} is unknown; choose one of {', '.join(MIXES)}")
    if method == "logits":
        raise UserError("logit mixing runs on the torch backend only")
    if method == "base" and adapter_dir:
        raise UserError("the base method takes no adapter")
    if not llamacpp_available():
        raise UserError(
            'llama-cpp-python is not installed (pip install "llama-cpp-python>=0.3.16,<0.4")'
        )
    path = resolve_base_model_path(base_path).resolve()
    if not path.is_file():
        raise UserError(
            f"the llama.cpp backend needs a .gguf base model, and {path} is a directory"
        )
    context = int(os.environ.get(CONTEXT_ENV, DEFAULT_CONTEXT))
    directory = Path(adapter_dir).resolve() if adapter_dir else None
    return _load(method, directory, path, threads or default_threads(), context, mix == "merged")


# ---------------------------------------------------------------------------------------------
# Benchmark (a script, never a timed test)


def save_random_adapter(
    base, directory: Path, std: float, objectives: tuple[str, ...], training: dict | None = None
) -> Path:
    """An attn bank of the shipped shape on `base` with random B (standard deviation `std`),
    saved like a trained adapter: it costs what a trained one costs (the benchmark without a
    shipped clp, and the tests)."""
    import torch

    from steering.mixing import AdapterSpec, attach, mixed_layers, save_bank

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
        with mock.patch("steering.generate.stop_token_ids", lambda model, tokenizer: set()):
            yield
    finally:
        runtime.stops = stops


def _stream_rate(steerer, prompts: list[str], weights, max_new_tokens: int) -> tuple[float, float]:
    """(tokens per second over all prompts, median seconds to the first token), one stream;
    the seconds include reading the prompt, as a user waits for it."""
    tokens, elapsed, first = 0, 0.0, []
    for seed, prompt in enumerate(prompts):
        start = time.perf_counter()
        count = 0
        for _ in steerer.stream(
            prompt, weights, max_new_tokens=max_new_tokens, temperature=0.7, seed=seed
        ):
            if count == 0:
                first.append(time.perf_counter() - start)
            count += 1
        elapsed += time.perf_counter() - start
        tokens += count
    return tokens / elapsed, float(np.median(first))


def bench_backends(max_new_tokens: int = 64, prompts: int = 4, rounds: int = 3) -> dict:
    """Single-stream tokens/s and time to first token of llama.cpp without adapters, llama.cpp
    steered at the middle of the simplex (one merged adapter, and K adapters with K scales), and
    torch steered at the same w (the `auto` dtype: bfloat16 where it is native, else float32),
    in one run.

    Uses the shipped clp adapter when there is one, else a random one of the same shape. Every
    run decodes exactly `max_new_tokens` (stop tokens ignored). The three are measured in turn
    within each round and the median round is reported, so load from other processes hits all
    three alike.
    """
    import torch

    from steering.methods import default_adapter_dir, load_steerer, shipped_objectives
    from steering.policy import load_base, resolve_dtype
    from steering.prompts import EVAL_PROMPTS, read_prompts

    if not llamacpp_available():
        raise UserError(
            'llama-cpp-python is not installed (pip install "llama-cpp-python>=0.3.16,<0.4")'
        )
    texts = read_prompts(EVAL_PROMPTS, limit=prompts)
    shipped = default_adapter_dir("clp")
    with tempfile.TemporaryDirectory() as scratch:
        if (shipped / METADATA_FILE).is_file():
            adapter_dir, adapter = shipped, "shipped clp"
        else:
            adapter_dir, adapter = (
                save_random_adapter(load_base(), Path(scratch), 0.02, shipped_objectives()),
                "random (no shipped clp yet)",
            )
        runs = {
            "llamacpp_base": load_llamacpp_steerer("base"),
            "llamacpp_steered": load_llamacpp_steerer("clp", adapter_dir, mix="merged"),
            "llamacpp_steered_scales": load_llamacpp_steerer("clp", adapter_dir, mix="scales"),
            "torch_steered": load_steerer("clp", adapter_dir),
        }
        k = len(runs["llamacpp_steered"].objectives)
        weights = [1.0 / k] * k
        measured = {name: [] for name in runs}
        with _full_length(runs["llamacpp_steered"].runtime):
            for steerer in runs.values():  # warm-up: first-call allocations and graph building
                list(steerer.stream(texts[0], weights, max_new_tokens=4))
            for _ in range(rounds):
                for name, steerer in runs.items():
                    measured[name].append(_stream_rate(steerer, texts, weights, max_new_tokens))
    result = {}
    for name, values in measured.items():
        rates = sorted(values)
        result[f"{name}_tok_s"] = round(rates[len(rates) // 2][0], 1)
        result[f"{name}_ttft_s"] = round(float(np.median([v[1] for v in values])), 3)
    result["steered_vs_base"] = round(
        result["llamacpp_steered_tok_s"] / result["llamacpp_base_tok_s"], 3
    )
    result["steered_vs_torch"] = round(
        result["llamacpp_steered_tok_s"] / result["torch_steered_tok_s"], 2
    )
    result.update(
        {
            "weights": [round(x, 4) for x in weights],
            "adapter": adapter,
            "llamacpp_threads": runs["llamacpp_steered"].runtime.threads,
            "torch_threads": torch.get_num_threads(),
            "torch_dtype": resolve_dtype(),
            "max_new_tokens": max_new_tokens,
            "prompts": len(texts),
            "rounds": rounds,
        }
    )
    return result
