"""Shared fixtures: a tiny randomly initialised Llama with the real SmolLM2 tokenizer."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
from tiny_models import build_tiny_llama
from transformers import AutoTokenizer

from steering.model.policy import BaseModel, BaseModelIdentity, default_gguf_path

# tiny on-disk model and adapters (the `tiny_env` fixture) for the app, CLI and evaluation tests;
# the tiny training setup for the trainer tests
pytest_plugins = ["app_fixtures", "training_fixtures"]


@pytest.fixture(scope="session")
def tokenizer():
    gguf = default_gguf_path()
    tok = AutoTokenizer.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True
    )
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture
def make_tiny(tokenizer):
    """Build further tiny models with the same architecture (for load and mismatch tests)."""
    return lambda seed=0: build_tiny_llama(len(tokenizer), seed)


@pytest.fixture
def tiny_base(tokenizer) -> BaseModel:
    """A fresh tiny model per test (tests attach adapters in place)."""
    model = build_tiny_llama(len(tokenizer))
    return BaseModel(model, tokenizer, BaseModelIdentity("tiny-llama", "0" * 64))
