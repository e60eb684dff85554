"""The `classifier` objective: the probability of one label under any local transformers
sequence-classification model directory (a sentiment model, a toxicity model, a reward model a
user downloaded, ...).

Configure it with `configure_classifier(path, label)` or the environment:

    STEERING_CLASSIFIER_PATH=/models/my-reward-model STEERING_CLASSIFIER_LABEL=positive

`label` is a name from the model's `id2label` or an integer index. Scores are softmax
probabilities over the labels (sigmoid per label for multi-label models); a model with a single
output (the usual reward-model head) scores sigmoid(logit) and needs no label. The response alone
is classified unless `with_prompt` (env STEERING_CLASSIFIER_WITH_PROMPT=1) passes (prompt,
response) as a text pair. Inputs are truncated to the model's maximum length (at most 512
tokens); an empty response is classified as the empty string.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from steering.errors import UserError
from steering.objectives.registry import register_objective

PATH_ENV = "STEERING_CLASSIFIER_PATH"
LABEL_ENV = "STEERING_CLASSIFIER_LABEL"
WITH_PROMPT_ENV = "STEERING_CLASSIFIER_WITH_PROMPT"
CLASSIFIER_BATCH_SIZE = 16
CLASSIFIER_MAX_TOKENS = 512


@dataclass(frozen=True)
class ClassifierConfig:
    path: Path
    label: str | None = None
    with_prompt: bool = False


_configured: ClassifierConfig | None = None


def configure_classifier(
    path: str | os.PathLike | None, label: str | int | None = None, with_prompt: bool = False
) -> None:
    """Use the model at `path` for the `classifier` objective (None: back to the environment).

    Only checks that the directory exists; the model loads on first use, and the label is
    checked against it then.
    """
    global _configured
    if path is None:
        _configured = None
        return
    _configured = _make_config(path, label, with_prompt)


def classifier_config() -> ClassifierConfig:
    """The configured classifier: `configure_classifier` wins over the environment."""
    if _configured is not None:
        return _configured
    path = os.environ.get(PATH_ENV)
    if not path:
        raise UserError(
            f"the classifier objective has no model: set {PATH_ENV} to a local "
            f"sequence-classification model directory (and {LABEL_ENV} to the label to score) "
            "or call configure_classifier(path, label)"
        )
    with_prompt = os.environ.get(WITH_PROMPT_ENV, "0").lower() in ("1", "true", "yes")
    return _make_config(path, os.environ.get(LABEL_ENV) or None, with_prompt)


def _make_config(path, label, with_prompt: bool) -> ClassifierConfig:
    resolved = Path(path).expanduser().resolve()
    if not (resolved / "config.json").is_file():
        raise UserError(f"classifier path {resolved} is not a model directory with a config.json")
    return ClassifierConfig(
        path=resolved, label=None if label is None else str(label), with_prompt=with_prompt
    )


@cache
def load_classifier(path: Path):
    """(model, tokenizer) for a classifier directory, loaded once per process per path."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"could not load a sequence classifier from {path}: {error}") from None
    model.eval()
    if tokenizer.pad_token is None:
        # Decoder-style reward models often ship without a pad token; the classification head
        # finds each row's last real token through pad_token_id, so it must be set.
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer in {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def label_index(config, label: str | None) -> int:
    """Column of `label` in the model's output; an unknown label lists the model's labels."""
    id2label = {int(i): str(name) for i, name in (config.id2label or {}).items()}
    if config.num_labels == 1:
        return 0
    names = ", ".join(f"{i}={name}" for i, name in sorted(id2label.items()))
    if label is None:
        raise UserError(
            f"the classifier has {config.num_labels} labels ({names}); choose one with "
            f"{LABEL_ENV} or configure_classifier(path, label)"
        )
    for index, name in id2label.items():
        if name == label or name.lower() == label.lower():
            return index
    if label.isdigit() and int(label) < config.num_labels:
        return int(label)
    raise UserError(f"the classifier has no label {label!r}; its labels are {names}")


def input_max_length(model, tokenizer) -> int:
    """The longest input to give the model: its own limits, at most CLASSIFIER_MAX_TOKENS."""
    return min(
        CLASSIFIER_MAX_TOKENS,
        tokenizer.model_max_length or CLASSIFIER_MAX_TOKENS,
        getattr(model.config, "max_position_embeddings", None) or CLASSIFIER_MAX_TOKENS,
    )


def classifier_probabilities(
    config: ClassifierConfig, prompts: list[str], responses: list[str]
) -> np.ndarray:
    import torch

    model, tokenizer = load_classifier(config.path)
    column = label_index(model.config, config.label)
    max_length = input_max_length(model, tokenizer)
    single_output = model.config.num_labels == 1
    multi_label = model.config.problem_type == "multi_label_classification"
    accepted = set(inspect.signature(model.forward).parameters)
    scores = []
    with torch.no_grad():
        for start in range(0, len(responses), CLASSIFIER_BATCH_SIZE):
            batch = responses[start : start + CLASSIFIER_BATCH_SIZE]
            pair = prompts[start : start + CLASSIFIER_BATCH_SIZE] if config.with_prompt else None
            inputs = tokenizer(
                pair if pair is not None else batch,
                batch if pair is not None else None,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            # Some tokenizers emit token_type_ids that decoder-style classifiers do not accept.
            inputs = {k: v for k, v in inputs.items() if k in accepted}
            logits = model(**inputs).logits.float()  # (B, num_labels)
            if single_output or multi_label:
                probs = torch.sigmoid(logits)
            else:
                probs = torch.softmax(logits, dim=-1)
            scores.append(probs[:, column].numpy())
    return np.concatenate(scores).astype(float)


@register_objective(
    "classifier",
    description=(
        f"Probability of a label under a local sequence-classification model "
        f"({PATH_ENV}, {LABEL_ENV}), in [0, 1]."
    ),
)
def classifier(prompts: list[str], responses: list[str]) -> np.ndarray:
    return classifier_probabilities(classifier_config(), prompts, responses)
