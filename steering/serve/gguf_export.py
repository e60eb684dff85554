"""Export an adapter bank for llama.cpp: adapter.safetensors -> one GGUF LoRA adapter per objective.

For every adapted matmul llama.cpp adds, per loaded adapter with scale s_k,
s_k * (alpha / r) * B_k @ A_k @ x (`llama_adapter_lora_weight::get_scale`), so adapter k exported
alone and given the scale s_k = w_k computes exactly the mixing of `steering.model.mixing`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from steering.errors import UserError
from steering.model.mixing import (
    ADAPTER_FILE,
    METADATA_FILE,
    AdapterMetadata,
    check_base_model,
    read_bank_tensors,
    read_metadata,
)
from steering.model.policy import model_identity

logger = logging.getLogger(__name__)

# The GGUF architectures whose adapters this export writes correctly: the layer names map
# through gguf's tensor map, and only llama's converter reorders the q and k rows for its rotary
# layout (`gguf_rotary_rows`); Qwen2/3 store them as transformers does. Adapters of any other
# architecture are refused, and `Backends.load` serves them on torch, saying why.
EXPORTABLE_ARCHITECTURES = ("llama", "qwen2", "qwen3")

# Bump when the exported files change meaning, so stale caches are rewritten.
EXPORT_VERSION = "1"
EXPORT_PREFIX = "gguf-"


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


def _lora_pairs(
    metadata: AdapterMetadata,
    bank: dict[str, tuple[torch.Tensor, torch.Tensor]],
    base: BaseGguf,
    adapter_dir: Path,
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(GGUF weight name, A (K*r, in), B (out, K*r) in GGUF row order) per conditioned layer."""
    spec = metadata.spec
    if base.arch not in EXPORTABLE_ARCHITECTURES:
        raise UserError(
            f"adapters export to llama.cpp for {', '.join(EXPORTABLE_ARCHITECTURES)} GGUF "
            f"models, and {base.path.name} is a {base.arch} model"
        )
    pairs = []
    for layer_name, (a, b) in bank.items():
        a, b = a.numpy(), b.numpy()
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
        if a.shape[1] != in_features or b.shape[0] != out_features:
            raise UserError(
                f"adapter in {adapter_dir} does not match the base model's layer shapes"
            )
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
    check_base_model(metadata, model_identity(base_path), adapter_dir)
    digest = adapter_digest(adapter_dir)
    paths = adapter_gguf_paths(adapter_dir, metadata, digest)
    target = paths[0].parent
    if not force and all(p.is_file() for p in paths):
        return paths
    base = read_base_gguf(base_path)
    pairs = _lora_pairs(metadata, read_bank_tensors(adapter_dir, metadata), base, adapter_dir)
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
