"""Shared fixtures: a tiny randomly initialised Llama with the real SmolLM2 tokenizer."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from steering.policy import BaseModel, BaseModelIdentity, default_gguf_path


@pytest.fixture(scope="session")
def tokenizer():
    gguf = default_gguf_path()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=2,
        bos_token_id=1,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture
def make_tiny(tokenizer):
    """Build further tiny models with the same architecture (for load and mismatch tests)."""
    return lambda seed=0: build_tiny_llama(len(tokenizer), seed)


@pytest.fixture
def tiny_base(tokenizer) -> BaseModel:
    """A fresh tiny model per test (tests attach adapters in place)."""
    model = build_tiny_llama(len(tokenizer))
    return BaseModel(model, tokenizer, BaseModelIdentity("tiny-llama", "0" * 64))
