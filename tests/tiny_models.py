"""Tiny randomly initialised models for fast tests (shared by conftest, app_fixtures and
make_tiny_models.py): causal LMs of several architectures, one-output reward models, and a GGUF
file with a tiny Llama's layer shapes for the llama.cpp export tests."""

import numpy as np
import torch
from gguf import MODEL_ARCH_NAMES, GGUFWriter, get_tensor_name_map
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GemmaConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Qwen2Config,
)

from steering.model.mixing import bank_parameters

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


def write_tiny_base_gguf(path, model, arch: str = "llama") -> None:
    """A GGUF (llama unless `arch` says otherwise) with the tiny model's linear shapes and, like
    SmolLM2, no output.weight."""
    config = model.config
    writer = GGUFWriter(str(path), arch=arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    architecture = {name: a for a, name in MODEL_ARCH_NAMES.items()}[arch]
    names = get_tensor_name_map(architecture, config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".layers." in name:
            hf_name = name.removesuffix(".base")  # a layer already wrapped by attach()
            writer.add_tensor(
                f"{names.get_name(hf_name)}.weight", np.zeros(module.weight.shape, np.float32)
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def randomise(model, name, seed=1):
    """Give every adapter of bank `name` random non-zero A and B, so that mixing changes the
    output (a fresh bank has B = 0, the base model)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bank_parameters(model, name):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
