"""The `reward-model` kind: the score of a sequence-classification model with one output, the
usual head of a trained reward model (OpenAssistant's DeBERTa reward models, Skywork-Reward,
a GPT-2 harmlessness reward model ...).

A reward model reads the whole exchange, written the way it was trained to read it: through an
explicit `template` when the objective declares one (for example the HH-RLHF format
"\n\nHuman: {prompt}\n\nAssistant: {response}"); else, when its tokenizer has a chat template,
as the conversation `[{user: prompt}, {assistant: response}]` through that template (the
convention of reward models trained on chat data); else as the text pair (prompt, response),
the convention of encoder reward models. The score is the
raw logit: reward models are trained on differences (Bradley-Terry), and calibration z-scores it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from steering.errors import UserError
from steering.objectives.classifier import (
    CLASSIFIER_BATCH_SIZE,
    input_max_length,
    load_classifier,
)


def check_reward_model(path: Path) -> None:
    """Refuse a model that is not a one-output sequence classifier, naming what it is."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{path} holds no readable model config ({error})") from None
    if config.num_labels != 1:
        raise UserError(
            f"{path} has {config.num_labels} outputs, and a reward model has one; "
            'score one of its labels with kind = "classifier"'
        )


def check_template(template: str) -> None:
    try:
        template.format(prompt="", response="")
    except (KeyError, IndexError, ValueError):
        raise UserError(
            f"template {template!r} may name only {{prompt}} and {{response}}"
        ) from None
    if "{response}" not in template:
        raise UserError(f"template {template!r} never writes the {{response}}")


def reward_model_inputs(
    tokenizer, prompts: list[str], responses: list[str], max_length: int, template: str = ""
):
    """The batch's token tensors: the declared template, chat-templated conversations, or
    (prompt, response) pairs."""
    if template:
        texts = [
            template.format(prompt=p, response=r) for p, r in zip(prompts, responses, strict=True)
        ]
        return tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
    if getattr(tokenizer, "chat_template", None):
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                tokenize=False,
            )
            for p, r in zip(prompts, responses, strict=True)
        ]
        # the template already wrote the special tokens it wants
        return tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
    return tokenizer(
        prompts,
        responses,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )


def reward_model_scores(
    path: Path, prompts: list[str], responses: list[str], template: str = ""
) -> np.ndarray:
    """The reward model's logit for every (prompt, response) pair."""
    import torch

    model, tokenizer = load_classifier(path)  # checked by `check_reward_model` when declared
    max_length = input_max_length(model, tokenizer)
    accepted = set(inspect.signature(model.forward).parameters)
    scores = []
    with torch.no_grad():
        for start in range(0, len(responses), CLASSIFIER_BATCH_SIZE):
            stop = start + CLASSIFIER_BATCH_SIZE
            inputs = reward_model_inputs(
                tokenizer, prompts[start:stop], responses[start:stop], max_length, template
            )
            inputs = {k: v for k, v in inputs.items() if k in accepted}
            logits = model(**inputs).logits.float()  # (B, 1)
            scores.append(logits[:, 0].numpy())
    return np.concatenate(scores).astype(float)
