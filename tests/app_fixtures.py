"""Tiny on-disk assets for the app tests: a random tiny Llama saved with the real tokenizer, and
clp / prompt / soups adapter directories with a calibration, in the layout the app reads through
STEERING_BASE_MODEL and STEERING_ADAPTERS."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_llama

from steering.model.mixing import AdapterMetadata, AdapterSpec, attach, save_bank
from steering.model.policy import model_identity
from steering.objectives import fit_calibration

OBJECTIVES = ("positivity", "conciseness")


def write_tiny_assets(root: Path, model, tokenizer) -> tuple[Path, Path]:
    """Save `model` and three adapter banks under `root`; return (base_dir, adapters_dir)."""
    base_dir = root / "tiny-base"
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    identity = model_identity(base_dir.resolve())
    adapters = root / "adapters"
    rng = np.random.default_rng(0)
    calibration = fit_calibration({o: rng.normal(size=16) for o in OBJECTIVES})
    for index, bank in enumerate(("clp", "prompt", "soups")):
        # the prompt baseline is one adapter; the weighting is written into the prompt instead
        spec = AdapterSpec(("prompt",) if bank == "prompt" else OBJECTIVES, "attn", 2, 4.0)
        layers = attach(model, bank, spec)
        torch.manual_seed(index)
        with torch.no_grad():
            for layer in layers:
                # a fresh bank has B = 0 (the base model); random B makes the weights matter
                layer.banks[bank].B.normal_(std=0.5)
        metadata = AdapterMetadata(spec, identity, {"objectives": list(OBJECTIVES)})
        save_bank(model, bank, adapters / bank, metadata)
        calibration.save(adapters / bank)
    return base_dir, adapters


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory, tokenizer):
    """Point the steering package at tiny assets for one test module, and back afterwards."""
    root = tmp_path_factory.mktemp("app-assets")
    base, adapters = write_tiny_assets(root, build_tiny_llama(len(tokenizer)), tokenizer)
    saved = {k: os.environ.get(k) for k in ("STEERING_BASE_MODEL", "STEERING_ADAPTERS")}
    os.environ.update(STEERING_BASE_MODEL=str(base), STEERING_ADAPTERS=str(adapters))
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
