"""One method on the torch model: the shared base model plus the method's adapter bank.

Every method shares one base model in memory; each attaches its adapter bank to it once
(`attach_method`). Calls that run the model hold the base model's lock, because the active bank
and its weighting live on the shared layers. Torch mixes a different weighting per row in one
batched forward, so a sweep over a grid runs as one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from steering.model.generate import Conditioning, Decoding, Generation, generate, stream
from steering.model.methods import (
    ADAPTER_OF_METHOD,
    adapter_dir_for,
    default_adapter_dir,
    method_conditioning,
    shipped_objectives,
)
from steering.model.mixing import AdapterMetadata, adapter_objectives, load_bank
from steering.model.policy import BaseModel, BaseModelIdentity
from steering.model.streaming import streamed
from steering.objectives import Calibration, load_calibration
from steering.weights import Weights, per_row


def weight_matrix(weights: Weights | Sequence[Weights], objectives: tuple[str, ...], rows: int):
    """(rows, K) float32, one row per prompt (`steering.weights.per_row`)."""
    rows = per_row(weights, objectives, rows)
    return torch.tensor([w.values for w in rows], dtype=torch.float32)


@dataclass(frozen=True)
class TorchSteerer:
    """A method ready to generate on torch (implements `steering.serve.backends.Backend`)."""

    method: str
    base: BaseModel
    objectives: tuple[str, ...]
    bank: str | None  # the adapter bank's name on the shared model; None for `base`
    metadata: AdapterMetadata | None
    adapter_dir: Path | None
    backend = "torch"

    @property
    def identity(self) -> BaseModelIdentity:
        return self.base.identity

    @property
    def calibration(self) -> Calibration:
        """Normalisation statistics saved with the adapter (the shipped clp one for `base`)."""
        return load_calibration(self.adapter_dir or default_adapter_dir("clp"))

    def conditioning(
        self, prompts: list[str], weights: torch.Tensor
    ) -> tuple[list[str], Conditioning]:
        """What the model sees for these prompts at these (B, K) weights."""
        return method_conditioning(self.method, self.bank, self.objectives, prompts, weights)

    def generate(
        self, prompts: list[str], weights: Weights | Sequence[Weights], decoding: Decoding
    ) -> list[Generation]:
        """One response per prompt; `weights` is one weighting for all or one per prompt."""
        w = weight_matrix(weights, self.objectives, len(prompts))
        model_prompts, conditioning = self.conditioning(prompts, w)
        with self.base.lock:
            results = generate(
                self.base.model,
                self.base.tokenizer,
                model_prompts,
                conditioning,
                **decoding.kwargs(),
            )
        return [
            Generation(p, r.text, tuple(float(x) for x in row), r.tokens, r.seconds)
            for p, r, row in zip(prompts, results, w, strict=True)
        ]

    def stream(self, prompt: str, weights: Weights, decoding: Decoding) -> Iterator[str]:
        """The response text so far, after every token; closing the iterator stops the model."""
        w = weight_matrix(weights, self.objectives, 1)
        model_prompts, conditioning = self.conditioning([prompt], w)

        def job(emit, stop):
            with self.base.lock:
                texts = stream(
                    self.base.model,
                    self.base.tokenizer,
                    model_prompts[0],
                    conditioning,
                    **decoding.kwargs(),
                )
                for text in texts:
                    emit(text)
                    if stop.is_set():
                        return

        return streamed(job)


def attach_method(
    base: BaseModel, method: str, adapter_dir: str | Path | None = None, own_bank: bool = False
) -> TorchSteerer:
    """Attach the method's adapter bank to `base` (in place) and return it ready to generate.

    `own_bank` names the bank after its directory, so a user-chosen adapter never replaces the
    shipped one on a shared model.
    """
    directory = adapter_dir_for(method, adapter_dir)
    if directory is None:
        return TorchSteerer(method, base, shipped_objectives(), None, None, None)
    bank = ADAPTER_OF_METHOD[method]
    if own_bank:
        bank = f"{bank}@{directory}"
    with base.lock:
        metadata = load_bank(base.model, bank, directory, base.identity)
    return TorchSteerer(method, base, adapter_objectives(metadata), bank, metadata, directory)
