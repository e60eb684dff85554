"""Fixtures shared by the objectives tests: awkward responses, a registry snapshot, and tiny
sequence classifiers built and saved by the test session (nothing is downloaded)."""

import pytest

from steering.objectives import registry

# Every scorer must give finite scores for these; each model-based test runs them explicitly.
BAD_RESPONSES = [
    "",
    "   \n\t ",
    "😀🔥🙏🏽👍",
    "Das ist eine kurze Antwort auf Deutsch.",
    "这是一个用中文写的回答。",
    "مرحبا بالعالم",
    "word " * 2000,  # 10,000 characters
    "x" * 10_000,  # one 10,000-character "word"
    "!?.,;:" * 50,
]


@pytest.fixture
def bad_responses() -> list[str]:
    return list(BAD_RESPONSES)


@pytest.fixture
def restore_registry():
    """Tests that register throwaway objectives leave the registry as they found it."""
    snapshot = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(snapshot)


def build_tiny_classifier(directory, num_labels: int, labels=("negative", "positive")):
    """A randomly initialised one-layer BERT classifier with a whitespace WordLevel tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = "the a good bad great awful thank you idiot love hate hello world".split()
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=64,
    )
    id2label = dict(enumerate(labels[:num_labels])) if num_labels > 1 else {0: "reward"}
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory):
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny_classifier"), num_labels=2)


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory):
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny_reward_model"), num_labels=1)
