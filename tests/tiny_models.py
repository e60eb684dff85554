"""A tiny randomly initialised Llama for fast tests (shared by conftest and app_fixtures)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


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
