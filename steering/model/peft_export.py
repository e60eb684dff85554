"""Export one weighting of an adapter bank as a standard PEFT LoRA adapter directory.

A conditioned layer computes, for a weighting ``w`` (see `steering.model.mixing`),

    y = W0 x + sum_k w_k (alpha / r) B_k A_k x

with the K adapters stored concatenated: ``A`` ``(K*r, in)`` and ``B`` ``(out, K*r)``. A PEFT
LoRA layer of rank ``R`` computes

    y = W0 x + (lora_alpha / R) lora_B lora_A x

The export sets ``R = K*r``, ``lora_A = A``, ``lora_B = B diag(s)`` with ``s_j = w_k alpha / r``
for hidden unit ``j`` of adapter ``k``, and ``lora_alpha = R`` so that PEFT's scaling is 1:

    lora_B lora_A x = sum_j s_j B[:, j] A[j, :] x = sum_k w_k (alpha / r) B_k A_k x

which is the mixed layer at ``w``, exactly (the same float32 products as the mixed layer's
inference path). The weighting is folded into ``lora_B``, so the directory holds one fixed ``w``:
every other weighting is another export. No ``peft`` import is needed; this only writes files
(``adapter_config.json``, ``adapter_model.safetensors``, a ``README.md`` model card and
``weighting.json``).

The prompt baseline's bank is one adapter (``prompt``) whose weighting is written into the prompt
(`steering.model.methods.weights_prompt`): it is exported at weight 1 and takes no weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from steering.errors import UserError
from steering.model.methods import weights_prompt
from steering.model.mixing import (
    AdapterMetadata,
    adapter_objectives,
    check_base_model,
    read_bank_tensors,
    read_metadata,
)
from steering.model.policy import model_identity, resolve_base_model_path
from steering.weights import Weights

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
WEIGHTING_FILE = "weighting.json"
CARD_FILE = "README.md"
# every module name in a PEFT checkpoint starts here (PeftModel -> LoraModel -> the CausalLM)
PEFT_PREFIX = "base_model.model."
TIED_HEAD_NOTE = (
    "The adapter changes `lm_head`. Where the base model ties it to the token embeddings, keep it "
    "unmerged: `merge_and_unload` would change the shared weight, and so the embeddings too.\n\n"
)


def _adapter_scales(
    metadata: AdapterMetadata, weights: Weights | Sequence[float] | None, adapter_dir: Path
) -> tuple[float, ...]:
    """The scale of each of the bank's K adapters: the weighting, or 1 for the prompt bank."""
    spec = metadata.spec
    objectives = adapter_objectives(metadata)
    if objectives != spec.objectives:
        if weights is not None:
            raise UserError(
                f"the adapter in {adapter_dir} takes its weighting in the prompt, not in its "
                "weights: export it without weights"
            )
        return (1.0,) * spec.num_adapters
    if weights is None:
        raise UserError(
            f"the adapter in {adapter_dir} mixes {', '.join(objectives)}: give one weight each"
        )
    if not isinstance(weights, Weights):
        weights = Weights.parse(objectives, weights)
    if weights.names != objectives:
        raise UserError(
            f"the weights are for {', '.join(weights.names)}, but the adapter in {adapter_dir} "
            f"steers {', '.join(objectives)}"
        )
    return weights.values


def _peft_tensors(
    bank: dict[str, tuple[torch.Tensor, torch.Tensor]],
    scales: Sequence[float],
    rank: int,
    alpha: float,
) -> dict[str, torch.Tensor]:
    """PEFT's state dict for the bank at per-adapter `scales` (module docstring)."""
    # (K*r,): hidden unit j of adapter k is scaled by w_k alpha / r, as `LoraBank.unit_scale`
    per_unit = (torch.tensor(scales, dtype=torch.float32) * (alpha / rank)).repeat_interleave(rank)
    tensors = {}
    for layer_name, (a, b) in bank.items():
        key = f"{PEFT_PREFIX}{layer_name}"
        tensors[f"{key}.lora_A.weight"] = a.contiguous()  # (K*r, in)
        tensors[f"{key}.lora_B.weight"] = (b * per_unit[None, :]).contiguous()  # (out, K*r)
    return tensors


def _peft_config(layer_names: Sequence[str], rank: int, base_model_name_or_path: str) -> dict:
    """A LoRA `adapter_config.json` with scaling lora_alpha / r = 1: the fields PEFT has written
    since version 0.10 (later ones take their defaults, so older readers load it too)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": sorted({name.rsplit(".", 1)[-1] for name in layer_names}),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layer_replication": None,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "loftq_config": {},
    }


def _model_card(
    metadata: AdapterMetadata,
    objectives: tuple[str, ...],
    scales: tuple[float, ...],
    adapter_dir: Path,
    base: str,
    rank: int,
) -> str:
    spec = metadata.spec
    if spec.objectives == objectives:
        title = ", ".join(f"{o}={w:.2f}" for o, w in zip(objectives, scales, strict=True))
        what = (
            f"The adapter bank in `{adapter_dir}` ({spec.num_adapters} adapters of rank "
            f"{spec.rank}, alpha {spec.alpha:g}) mixed at one fixed weighting and exported as a "
            "standard PEFT LoRA adapter.\n\n| objective | weight |\n|---|---|\n"
            + "".join(f"| {o} | {w:.4f} |\n" for o, w in zip(objectives, scales, strict=True))
            + "\nThe weighting is folded into `lora_B`: every other weighting is another export."
        )
    else:
        title = "weighting in the prompt"
        example = weights_prompt("<your request>", Weights.uniform(objectives).values, objectives)
        what = (
            f"The prompt-conditioned adapter in `{adapter_dir}` (rank {spec.rank}, alpha "
            f"{spec.alpha:g}), exported at weight 1. It steers {', '.join(objectives)} through "
            f"the prompt: start the user's message with the weighting, e.g.\n\n    "
            + example.replace("\n", "\n    ")
        )
    source = Path(base)
    where = (
        f'"{source.parent}", gguf_file="{source.name}"' if source.suffix == ".gguf" else f'"{base}"'
    )
    loader = f"AutoModelForCausalLM.from_pretrained({where})"
    return (
        f"---\nbase_model: {base}\nlibrary_name: peft\ntags:\n- lora\n- steering\n---\n\n"
        f"# Steering adapter: {title}\n\n{what}\n\n"
        f"Rank {rank}, `lora_alpha` {rank} (PEFT's scaling is 1), on `{base}` "
        f"({metadata.base_model.name}, SHA-256 {metadata.base_model.sha256[:12]}).\n\n"
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
        f'model = PeftModel.from_pretrained({loader}, "<this directory>")\n```\n\n'
        + (TIED_HEAD_NOTE if spec.variant == "logit" else "")
        + "Serving it (transformers, vLLM, TGI, llama.cpp): the project's docs/serving.md.\n"
    )


def export_peft(
    adapter_dir: str | Path,
    weights: Weights | Sequence[float] | None,
    out_dir: str | Path,
    base_model_name_or_path: str | Path | None = None,
) -> Path:
    """Write the bank in `adapter_dir` at `weights` as a PEFT LoRA adapter in `out_dir`.

    `base_model_name_or_path` (default: STEERING_BASE_MODEL, else the shipped GGUF) must be the
    base model the bank was trained on; it is recorded in the config. Refuses, in one sentence,
    a missing or inconsistent adapter, weights of the wrong length and another base model.
    """
    adapter_dir = Path(adapter_dir).resolve()
    metadata = read_metadata(adapter_dir)
    base = resolve_base_model_path(base_model_name_or_path).resolve()
    check_base_model(metadata, model_identity(base), adapter_dir)
    scales = _adapter_scales(metadata, weights, adapter_dir)
    bank = read_bank_tensors(adapter_dir, metadata)
    spec = metadata.spec
    rank = spec.num_adapters * spec.rank
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot write the export to {out} ({error.strerror})") from None
    save_file(_peft_tensors(bank, scales, spec.rank, spec.alpha), str(out / WEIGHTS_FILE))
    config = _peft_config(list(bank), rank, str(base))
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    objectives = adapter_objectives(metadata)
    record = {
        "adapter": str(adapter_dir),
        "weights": dict(zip(spec.objectives, scales, strict=True)),
        "objectives": list(objectives),
        "base_model": {"name": metadata.base_model.name, "sha256": metadata.base_model.sha256},
    }
    (out / WEIGHTING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    card = _model_card(metadata, objectives, scales, adapter_dir, str(base), rank)
    (out / CARD_FILE).write_text(card)
    return out
