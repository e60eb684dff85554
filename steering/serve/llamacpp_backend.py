"""One method on llama.cpp: the shared runtime plus the method's adapters exported as GGUF LoRA.

A weighting w reaches llama.cpp as adapter scales (`mix="scales"`: adapter k at scale w_k) or as
one adapter merged for that weighting (`mix="merged"`, the default: llama.cpp pays a fixed cost
per adapter and per adapted matmul). Both compute W0 + sum_k w_k (alpha/r) B_k A_k. Logit mixing
(`logits`) runs on torch only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from steering.errors import UserError
from steering.model.generate import Decoding, Generation
from steering.model.methods import (
    adapter_dir_for,
    default_adapter_dir,
    shipped_objectives,
    weights_prompt,
)
from steering.model.mixing import AdapterMetadata, adapter_objectives, read_metadata
from steering.model.policy import BaseModelIdentity, model_identity
from steering.objectives import Calibration, load_calibration
from steering.serve.gguf_export import export_gguf_adapters
from steering.serve.llamacpp_runtime import LlamaCppRuntime, Mix
from steering.weights import Weights, per_row

MIXES = ("merged", "scales")


@dataclass(frozen=True)
class LlamaCppSteerer:
    """A method ready to generate on llama.cpp (implements `steering.serve.backends.Backend`)."""

    method: str
    runtime: LlamaCppRuntime
    objectives: tuple[str, ...]
    adapters: tuple[object, ...]  # llama.cpp handles, one per adapter of the bank
    adapter_paths: tuple[Path, ...]  # their exported GGUF files
    metadata: AdapterMetadata | None
    adapter_dir: Path | None
    merge: bool = True  # one merged adapter per weighting (else K adapters with K scales)
    backend = "llamacpp"

    @property
    def identity(self) -> BaseModelIdentity:
        return model_identity(self.runtime.path)

    @property
    def calibration(self) -> Calibration:
        """Normalisation statistics saved with the adapter (the shipped clp one for `base`)."""
        return load_calibration(self.adapter_dir or default_adapter_dir("clp"))

    def _request(self, prompt: str, w: tuple[float, ...], max_new_tokens: int):
        """The prompt's token ids and the adapter scales for one weighting."""
        if self.method == "prompt":
            # the weighting goes into the prompt; the one conditional adapter runs at full scale
            text, scales = weights_prompt(prompt, w, self.objectives), (1.0,) * len(self.adapters)
        else:
            text, scales = prompt, (w if self.adapters else ())
        ids = self.runtime.prompt_ids(text, max_new_tokens)
        return ids, Mix(self.adapters, self.adapter_paths, tuple(scales), self.merge)

    def generate(
        self, prompts: list[str], weights: Weights | Sequence[Weights], decoding: Decoding
    ) -> list[Generation]:
        """One response per prompt; `weights` is one weighting for all or one per prompt.

        Rows run one after another; row i samples with seed + i, so repeated prompts differ.
        """
        if not prompts:
            raise UserError("no prompts were given")
        rows = [w.values for w in per_row(weights, self.objectives, len(prompts))]
        # every prompt is checked before the first one runs
        requests = [
            self._request(p, row, decoding.max_new_tokens)
            for p, row in zip(prompts, rows, strict=True)
        ]
        results = []
        for i, (prompt, row, (ids, mix)) in enumerate(zip(prompts, rows, requests, strict=True)):
            start = time.perf_counter()
            row_decoding = replace(decoding, seed=decoding.seed + i)
            tokens = list(self.runtime.stream_tokens(ids, mix, row_decoding))
            seconds = time.perf_counter() - start
            results.append(Generation(prompt, self.runtime.text(tokens), row, len(tokens), seconds))
        return results

    def stream(self, prompt: str, weights: Weights, decoding: Decoding) -> Iterator[str]:
        """The response text so far, after every token; it never runs past max_new_tokens, and
        closing the iterator stops the generation at the next token."""
        (row,) = [w.values for w in per_row(weights, self.objectives, 1)]
        ids, mix = self._request(prompt, row, decoding.max_new_tokens)
        tokens: list[int] = []
        for token in self.runtime.stream_tokens(ids, mix, decoding):
            if token in self.runtime.stops:
                return
            tokens.append(token)
            yield self.runtime.text(tokens)


def attach_llamacpp(
    runtime: LlamaCppRuntime, method: str, adapter_dir: Path | None, merge: bool = True
) -> LlamaCppSteerer:
    """Export the method's adapter bank (once per version) and load it onto the runtime."""
    if method == "logits":
        raise UserError("logit mixing runs on the torch backend only")
    directory = adapter_dir_for(method, adapter_dir)
    if directory is None:
        return LlamaCppSteerer(method, runtime, shipped_objectives(), (), (), None, None, merge)
    paths = export_gguf_adapters(directory, runtime.path)
    metadata = read_metadata(directory)
    try:
        adapters = tuple(runtime.load_adapter(p) for p in paths)
    except UserError:
        # a damaged cached export: write it again once
        paths = export_gguf_adapters(directory, runtime.path, force=True)
        adapters = tuple(runtime.load_adapter(p) for p in paths)
    objectives = adapter_objectives(metadata)
    if method != "prompt" and len(objectives) != len(adapters):
        raise UserError(
            f"adapter in {directory} has {len(adapters)} adapters for {len(objectives)} objectives"
        )
    return LlamaCppSteerer(
        method, runtime, objectives, adapters, tuple(paths), metadata, directory, merge
    )
