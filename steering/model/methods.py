"""The steering methods the app, the CLI and the evaluation can choose between.

- `clp`: the Conditional Language Policy: K jointly trained adapters mixed per request by w.
- `prompt`: one adapter trained with the weighting written into the prompt (conditional training).
- `soups`: Rewarded Soups: each adapter trained alone at its corner w = e_k, mixed like clp.
- `logits`: logit mixing of the soups corner experts: sum_k w_k * logits_k at every step.
- `base`: the untrained base model (the weighting is recorded but changes nothing).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from steering.errors import UserError
from steering.model.generate import Conditioning
from steering.model.mixing import (
    ADAPTER_FILE,
    METADATA_FILE,
    AdapterMetadata,
    adapter_objectives,
    read_metadata,
)
from steering.prompts import ASSETS

METHODS = ("clp", "prompt", "soups", "logits", "base")
ADAPTERS = ASSETS / "adapters"
ADAPTERS_ENV = "STEERING_ADAPTERS"
# the corner experts logit mixing combines are the soups adapters
ADAPTER_OF_METHOD = {"clp": "clp", "prompt": "prompt", "soups": "soups", "logits": "soups"}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"method {method!r} is unknown; choose one of {', '.join(METHODS)}")
    return method


def weights_prompt(prompt: str, weights, objectives: tuple[str, ...]) -> str:
    """The prompt-conditioning baseline: the weighting written in front of the request."""
    parts = ", ".join(f"{name}={float(w):.2f}" for name, w in zip(objectives, weights, strict=True))
    return f"[weights: {parts}]\n{prompt}"


def method_conditioning(
    method: str,
    bank: str | None,
    objectives: tuple[str, ...],
    prompts: list[str],
    weights: torch.Tensor,
) -> tuple[list[str], Conditioning]:
    """The prompts the model sees and the conditioning of a method at (B, K) weights."""
    if bank is None:
        return prompts, Conditioning(None, None)
    if method == "prompt":
        texts = [
            weights_prompt(p, w.tolist(), objectives) for p, w in zip(prompts, weights, strict=True)
        ]
        return texts, Conditioning(bank, torch.ones(len(prompts), 1))
    return prompts, Conditioning(bank, weights, mix_logits=method == "logits")


def default_adapter_dir(method: str) -> Path:
    """Where the method's adapter lives: STEERING_ADAPTERS (or the shipped assets) / its bank."""
    return Path(os.environ.get(ADAPTERS_ENV, ADAPTERS)) / ADAPTER_OF_METHOD[method]


def adapter_dir_for(method: str, adapter_dir: str | Path | None = None) -> Path | None:
    """The method's adapter directory, resolved and checked to exist (None for `base`)."""
    check_method(method)
    if method == "base":
        if adapter_dir:
            raise UserError("the base method takes no adapter")
        return None
    directory = Path(adapter_dir or default_adapter_dir(method)).resolve()
    if not directory.exists():
        raise UserError(
            f"adapter directory {directory} does not exist; train it with "
            f"`python -m steering train --method {ADAPTER_OF_METHOD[method]}`"
        )
    return directory


def shipped_metadata() -> AdapterMetadata | None:
    """The clp adapter's metadata (STEERING_ADAPTERS or the shipped one), None while none exists."""
    clp = default_adapter_dir("clp")
    return read_metadata(clp) if (clp / METADATA_FILE).is_file() else None


def shipped_objectives() -> tuple[str, ...]:
    """The objectives the clp adapter steers (what the sliders are), read without loading the
    model; the default objective set while no clp adapter exists."""
    from steering.objectives import DEFAULT_OBJECTIVES

    metadata = shipped_metadata()
    return adapter_objectives(metadata) if metadata else tuple(DEFAULT_OBJECTIVES)


def available_methods() -> list[str]:
    """The methods whose adapters exist (base always does)."""
    return [m for m in METHODS if m == "base" or (default_adapter_dir(m) / ADAPTER_FILE).is_file()]
