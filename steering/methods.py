"""The steering methods the app, the CLI and the evaluation can choose between.

- `clp`: the Conditional Language Policy: K jointly trained adapters mixed per request by w.
- `prompt`: one adapter trained with the weighting written into the prompt (conditional training).
- `soups`: Rewarded Soups: each adapter trained alone at its corner w = e_k, mixed like clp.
- `logits`: logit mixing of the soups corner experts: sum_k w_k * logits_k at every step.
- `base`: the untrained base model (the weighting is recorded but changes nothing).

Every method shares the one base model in memory; each loads its adapter bank onto it once.
Calls that run the model hold `MODEL_LOCK`, because the active bank and its weights live on the
shared layers.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from steering.errors import UserError
from steering.generate import Conditioning, Generation, generate, stream
from steering.mixing import AdapterMetadata, check_weights, load_bank, read_metadata
from steering.objectives import Calibration, load_calibration
from steering.policy import BaseModel, load_base, resolve_dtype
from steering.prompts import ASSETS

METHODS = ("clp", "prompt", "soups", "logits", "base")
ADAPTERS = ASSETS / "adapters"
# the corner experts logit mixing combines are the soups adapters
ADAPTER_OF_METHOD = {"clp": "clp", "prompt": "prompt", "soups": "soups", "logits": "soups"}
MODEL_LOCK = threading.RLock()
_LOAD_LOCK = threading.Lock()


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


def weight_rows(weights, k: int, rows: int) -> torch.Tensor:
    """(rows, k) checked, normalised weightings: one given row serves every prompt."""
    w = check_weights(weights, k)
    if w.shape[0] == 1 and rows > 1:
        w = w.expand(rows, -1)
    if w.shape[0] != rows:
        raise UserError(f"{rows} prompts but {w.shape[0]} weightings")
    return w


def default_adapter_dir(method: str) -> Path:
    return Path(os.environ.get("STEERING_ADAPTERS", ADAPTERS)) / ADAPTER_OF_METHOD[method]


@dataclass(frozen=True)
class Steerer:
    """One method ready to generate: the shared base model plus the method's loaded bank."""

    method: str
    base: BaseModel
    objectives: tuple[str, ...]
    bank: str | None  # the adapter bank's name on the shared model; None for `base`
    metadata: AdapterMetadata | None
    adapter_dir: Path | None

    @property
    def calibration(self) -> Calibration:
        """Normalisation statistics saved with the adapter (the shipped clp one for `base`)."""
        directory = self.adapter_dir or default_adapter_dir("clp")
        return load_calibration(directory)

    def conditioning(
        self, prompts: list[str], weights: torch.Tensor
    ) -> tuple[list[str], Conditioning]:
        """What the model sees for these prompts at these normalised (B, K) weights."""
        return method_conditioning(self.method, self.bank, self.objectives, prompts, weights)

    def normalised_weights(self, weights, rows: int) -> torch.Tensor:
        return weight_rows(weights, len(self.objectives), rows)

    def generate(self, prompts: list[str], weights, **decoding) -> list[Generation]:
        """One response per prompt; `weights` is one weighting for all or one per prompt."""
        w = self.normalised_weights(weights, len(prompts))
        model_prompts, conditioning = self.conditioning(prompts, w)
        with MODEL_LOCK:
            results = generate(
                self.base.model, self.base.tokenizer, model_prompts, conditioning, **decoding
            )
        return [
            Generation(p, r.text, tuple(float(x) for x in row), r.tokens, r.seconds)
            for p, r, row in zip(prompts, results, w, strict=True)
        ]

    def stream(self, prompt: str, weights, **decoding) -> Iterator[str]:
        """The response text so far, after every token.

        The model runs start to finish on a thread of its own that holds MODEL_LOCK, so the
        caller may iterate from any thread (a web server's workers do) and the lock is always
        released by the thread that took it. Closing the iterator stops the generation.
        """
        w = self.normalised_weights(weights, 1)
        model_prompts, conditioning = self.conditioning([prompt], w)
        chunks: queue.Queue = queue.Queue()
        stop = threading.Event()

        def produce():
            try:
                with MODEL_LOCK:
                    texts = stream(
                        self.base.model,
                        self.base.tokenizer,
                        model_prompts[0],
                        conditioning,
                        **decoding,
                    )
                    for text in texts:
                        if stop.is_set():
                            break
                        chunks.put(("text", text))
            except BaseException as error:  # noqa: BLE001 (handed to the consumer)
                chunks.put(("error", error))
            else:
                chunks.put(("done", None))

        threading.Thread(target=produce, name="stream", daemon=True).start()
        try:
            while True:
                kind, value = chunks.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    return
                yield value
        finally:
            stop.set()


def shipped_objectives() -> tuple[str, ...]:
    """The objectives of the shipped clp adapter (the default set if none is shipped)."""
    from steering.objectives import DEFAULT_OBJECTIVES

    clp_dir = default_adapter_dir("clp")
    if (clp_dir / "adapter.json").is_file():
        return read_metadata(clp_dir).spec.objectives
    return tuple(DEFAULT_OBJECTIVES)


@cache
def _load(method: str, adapter_dir: Path | None, base_path: str | None, dtype: str) -> Steerer:
    base = load_base(base_path, dtype)
    if method == "base":
        return Steerer(method, base, shipped_objectives(), None, None, None)
    directory = adapter_dir or default_adapter_dir(method)
    if not directory.exists():
        raise UserError(
            f"adapter directory {directory} does not exist; train it with "
            f"`python -m steering train --method {ADAPTER_OF_METHOD[method]}`"
        )
    # a user-chosen directory gets its own bank so it never replaces the shipped one
    bank = f"{ADAPTER_OF_METHOD[method]}@{directory}" if adapter_dir else ADAPTER_OF_METHOD[method]
    with MODEL_LOCK:
        metadata = load_bank(base.model, bank, directory, base.identity)
    objectives = tuple(metadata.training.get("objectives", metadata.spec.objectives))
    return Steerer(method, base, objectives, bank, metadata, directory)


def load_steerer(
    method: str,
    adapter_dir: str | Path | None = None,
    base_path: str | None = None,
    dtype: str = "auto",
) -> Steerer:
    """The method, loaded once per process (adapter banks stay attached to the shared model)."""
    check_method(method)
    if method == "base" and adapter_dir:
        raise UserError("the base method takes no adapter")
    directory = Path(adapter_dir).resolve() if adapter_dir else None
    # resolved before the cache, so `auto` and the dtype it stands for share one steerer and the
    # bank is attached to the shared model once
    dtype = resolve_dtype(dtype)
    with _LOAD_LOCK:  # two first requests must not attach the same bank twice
        return _load(method, directory, base_path, dtype)
