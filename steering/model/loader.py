"""`Models`: the owner of the loaded torch models of one process (or one test).

Entry points (the CLI, the app's service, the evaluation) build one and pass it down; it loads
each base model once per (path, dtype) and attaches each method's adapter bank to it once. Tests
build their own, so nothing has to be cleared between them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from steering.model.methods import adapter_dir_for, check_method
from steering.model.policy import BaseModel, load_base, resolve_base_model_path, resolve_dtype
from steering.model.steerer import TorchSteerer, attach_method


class Models:
    """Base models and torch steerers, each loaded on first use and kept."""

    def __init__(self):
        self._bases: dict[tuple[Path, str], BaseModel] = {}
        self._steerers: dict[tuple, TorchSteerer] = {}
        # two first requests must not load one model twice or attach the same bank twice
        self._lock = threading.RLock()

    def base(self, path: str | None = None, dtype: str = "auto") -> BaseModel:
        """The base model at `path` (default: STEERING_BASE_MODEL or the shipped GGUF)."""
        # resolved before the lookup, so `auto` and the dtype it stands for share one model
        key = (resolve_base_model_path(path).resolve(), resolve_dtype(dtype))
        with self._lock:
            if key not in self._bases:
                self._bases[key] = load_base(*key)
            return self._bases[key]

    def steerer(
        self,
        method: str,
        adapter_dir: str | Path | None = None,
        base_path: str | None = None,
        dtype: str = "auto",
    ) -> TorchSteerer:
        """The method on torch, loaded once (adapter banks stay attached to the shared model)."""
        check_method(method)
        directory = adapter_dir_for(method, adapter_dir)  # checked before the slow load
        key = (method, directory, adapter_dir is not None, base_path, resolve_dtype(dtype))
        with self._lock:
            if key not in self._steerers:
                base = self.base(base_path, dtype)
                self._steerers[key] = attach_method(
                    base, method, directory, own_bank=adapter_dir is not None
                )
            return self._steerers[key]
