"""One interface for the backends that generate steered text, and the one factory that makes them.

    STEERING_BACKEND=llamacpp python -m steering generate --prompt "Review a cafe" --weights 0.5,0.3,0.2

`Backends.load` picks the backend: an explicit `backend`, else `STEERING_BACKEND`, else
`llamacpp` when `llama-cpp-python` is installed. Logit mixing (`logits`) runs on torch only.
Anything the llama.cpp path cannot serve (package missing, a directory base model, an adapter
that does not fit) falls back to torch with one line in the log saying why.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from steering.errors import UserError
from steering.model.generate import Decoding, Generation
from steering.model.loader import Models
from steering.model.methods import adapter_dir_for, check_method
from steering.model.mixing import AdapterMetadata
from steering.model.policy import BaseModelIdentity, resolve_base_model_path
from steering.objectives import Calibration
from steering.serve.llamacpp_backend import MIXES, LlamaCppSteerer, attach_llamacpp
from steering.serve.llamacpp_runtime import LlamaCppRuntime, default_threads
from steering.weights import Weights

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "llamacpp")
BACKEND_ENV = "STEERING_BACKEND"
CONTEXT_ENV = "STEERING_LLAMACPP_CONTEXT"
MIX_ENV = "STEERING_LLAMACPP_MIX"
DEFAULT_CONTEXT = 2048
LLAMACPP_MISSING = 'llama-cpp-python is not installed (pip install "llama-cpp-python>=0.3.16,<0.4")'


@runtime_checkable
class Backend(Protocol):
    """A method ready to generate: what the service, the CLI and the benchmarks call."""

    method: str
    objectives: tuple[str, ...]
    metadata: AdapterMetadata | None
    adapter_dir: Path | None
    backend: str  # "torch" or "llamacpp"

    @property
    def identity(self) -> BaseModelIdentity:
        """The base model the method runs on."""

    @property
    def calibration(self) -> Calibration:
        """Normalisation statistics of the objectives, saved with the adapter."""

    def generate(
        self, prompts: list[str], weights: Weights | Sequence[Weights], decoding: Decoding
    ) -> list[Generation]:
        """One response per prompt under one weighting for all, or one per prompt."""

    def stream(self, prompt: str, weights: Weights, decoding: Decoding) -> Iterator[str]:
        """The response text so far after every token; closing the iterator stops it."""


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


class Backends:
    """The factory and owner of every loaded backend of one process (or one test): the torch
    models (`Models`) and the llama.cpp runtimes, each loaded once and kept."""

    def __init__(self, models: Models | None = None):
        self.models = models or Models()
        self._runtimes: dict[tuple, LlamaCppRuntime] = {}
        self._llamacpp: dict[tuple, LlamaCppSteerer] = {}
        self._lock = threading.RLock()

    def load(
        self,
        method: str,
        adapter_dir: str | Path | None = None,
        base_path: str | None = None,
        dtype: str = "auto",
        backend: str | None = None,
    ) -> Backend:
        """The method ready to generate on the chosen backend.

        `dtype` applies to torch only. When llama.cpp cannot serve the request torch is used
        instead and the log says why (a warning; only an info line when nobody asked for
        llama.cpp and the base model is a transformers directory, which llama.cpp never reads);
        errors torch would raise as well (an unknown method, a missing adapter directory)
        surface from torch unchanged.
        """
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
                    return self.llamacpp(method, adapter_dir, base_path)
                except UserError as error:
                    logger.warning(
                        "llama.cpp backend unavailable: %s Using the torch backend.", error
                    )
        return self.models.steerer(method, adapter_dir, base_path, dtype)

    def torch(
        self,
        method: str,
        adapter_dir: str | Path | None = None,
        base_path: str | None = None,
        dtype: str = "auto",
    ) -> Backend:
        """The method on torch, whatever the default backend (batches of weightings run here)."""
        return self.models.steerer(method, adapter_dir, base_path, dtype)

    def llamacpp(
        self,
        method: str,
        adapter_dir: str | Path | None = None,
        base_path: str | None = None,
        threads: int | None = None,
        mix: str | None = None,
    ) -> LlamaCppSteerer:
        """The method on llama.cpp, loaded once; every method shares one runtime per model.

        `mix` (else STEERING_LLAMACPP_MIX, else `merged`) chooses how a weighting reaches
        llama.cpp: `merged` builds one adapter per distinct weighting (a few milliseconds,
        cached), `scales` sets the K exported adapters' scales to w. Both compute the same sum.
        """
        check_method(method)
        mix = (mix or os.environ.get(MIX_ENV) or "merged").strip().lower()
        if mix not in MIXES:
            raise UserError(f"llama.cpp mix {mix!r} is unknown; choose one of {', '.join(MIXES)}")
        if method == "logits":
            raise UserError("logit mixing runs on the torch backend only")
        directory = adapter_dir_for(method, adapter_dir) if adapter_dir else None
        if not llamacpp_available():
            raise UserError(LLAMACPP_MISSING)
        path = resolve_base_model_path(base_path).resolve()
        if not path.is_file():
            raise UserError(
                f"the llama.cpp backend needs a .gguf base model, and {path} is a directory"
            )
        context = int(os.environ.get(CONTEXT_ENV, DEFAULT_CONTEXT))
        threads = threads or default_threads()
        with self._lock:
            runtime_key = (path, threads, context)
            if runtime_key not in self._runtimes:
                self._runtimes[runtime_key] = LlamaCppRuntime(path, threads, context)
            runtime = self._runtimes[runtime_key]
            key = (method, directory, runtime_key, mix)
            if key not in self._llamacpp:
                self._llamacpp[key] = attach_llamacpp(runtime, method, directory, mix == "merged")
            return self._llamacpp[key]
