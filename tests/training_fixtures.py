"""The tiny training setup the trainer tests share (a plugin of tests/conftest.py): four prompts,
two objectives, a config small enough for the tiny random model, and fresh tiny base models."""

import json

import pytest
import torch

from steering.model.mixing import bank_parameters
from steering.model.policy import BaseModel, BaseModelIdentity
from steering.training.config import TrainConfig

OBJECTIVES = "positivity,conciseness"
PROMPTS = [
    "Write a kind note to a neighbour.",
    "Describe a rainy day.",
    "Review a cheap hotel.",
    "Give one tip for sleep.",
]


def tiny_config(tmp_path, prompts_file, **overrides) -> TrainConfig:
    values = dict(
        objectives=OBJECTIVES,
        prompts=str(prompts_file),
        out=str(tmp_path / "run"),
        pool=str(tmp_path / "pool.jsonl"),
        pool_samples=2,
        max_new_tokens=6,
        prompts_per_step=2,
        samples=2,
        batch_size=4,
        rank=2,
        lr=1e-2,
        dtype="float32",
    )
    values.update(overrides)
    return TrainConfig(**values)


def online_config(tmp_path, prompts_file, **overrides) -> TrainConfig:
    """An online-dpo run of two rounds. The tiny random model never stops before the token
    limit, so every sample is unfinished: without --min-words 0 the floor would let no sample
    be chosen."""
    values = dict(algo="online-dpo", rounds=2, min_words=0, batch_size=2)
    return tiny_config(tmp_path, prompts_file, **{**values, **overrides})


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture
def fresh_base(make_tiny, tokenizer):
    """Build a new tiny base model on every call (a trainer attaches its adapters in place)."""
    return lambda: BaseModel(make_tiny(), tokenizer, BaseModelIdentity("tiny-llama", "0" * 64))


def metrics_lines(trainer) -> list[dict]:
    """The lines of a trainer's metrics JSONL."""
    return [json.loads(x) for x in (trainer.out / "metrics.jsonl").read_text().splitlines()]


def stop_at_step(monkeypatch, trainer, step: int) -> None:
    """Ctrl-C just before `trainer` takes its DPO update number `step + 1`."""
    update = trainer.dpo_step

    def stopped(pairs):
        if trainer.state.step == step:
            raise KeyboardInterrupt
        return update(pairs)

    monkeypatch.setattr(trainer, "dpo_step", stopped)


def assert_only_the_bank_trained(model, bank: str, before: list, frozen: dict) -> None:
    """The bank's parameters moved from `before`; every base parameter still equals `frozen`."""
    after = bank_parameters(model, bank)
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


def stop_at_once_else_word(base: BaseModel) -> None:
    """Give `base` a head that would stop at once and says " word" when it may not stop."""
    (word,) = base.tokenizer(" word", add_special_tokens=False)["input_ids"]
    head = torch.nn.Linear(base.model.config.hidden_size, base.model.config.vocab_size)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[base.tokenizer.eos_token_id] = 100.0
        head.bias[word] = 50.0
    base.model.lm_head = head
    base.model.generation_config.eos_token_id = base.tokenizer.eos_token_id
