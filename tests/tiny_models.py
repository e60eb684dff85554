"""Tiny randomly initialised models for fast tests (shared by conftest, app_fixtures and
make_tiny_models.py): causal LMs of several architectures and one-output reward models."""

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GemmaConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Qwen2Config,
)

# the same tiny shape for every architecture: 2 blocks of width 32, 4 query and 2 key-value heads
SHAPE = dict(
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
CONFIGS = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "gemma": lambda **kw: GemmaConfig(head_dim=8, **kw),
    # Phi-3 fuses q, k and v into one qkv_proj
    "phi3": Phi3Config,
}
ARCHITECTURES = tuple(CONFIGS)


def build_tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    return build_tiny_causal_lm("llama", vocab_size, seed)


def build_tiny_causal_lm(architecture: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    config = CONFIGS[architecture](vocab_size=vocab_size, **SHAPE)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.requires_grad_(False)
    return model


def build_tiny_reward_model(vocab_size: int, seed: int = 0, labels: tuple[str, ...] = ()):
    """A Llama sequence classifier: one output (a reward model) unless `labels` names several."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, **SHAPE)
    config.num_labels = len(labels) or 1
    if labels:
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.requires_grad_(False)
    return model
