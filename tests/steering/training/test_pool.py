import json

import torch
from torch import nn

from steering.model.generate import Conditioning
from steering.training.pool import Candidate, read_pool, sample_pool, sentence_prefixes

PROMPTS = [
    "Write a kind note to a neighbour.",
    "Describe a rainy day.",
    "Review a cheap hotel.",
]


def test_sentence_prefixes_are_the_complete_shorter_answers():
    cut = Candidate("Say three things.", "One.  Two! Three? Four", 12, (0.25, 0.75), ended=False)
    prefixes = sentence_prefixes(cut)
    assert [p.text for p in prefixes] == ["One.", "One. Two!", "One. Two! Three?"]
    # each prefix is a whole answer of the same prompt at the same weighting: it ends there
    assert all(p.prompt == cut.prompt and p.weights == cut.weights for p in prefixes)
    assert all(p.ended and p.tokens == 0 for p in prefixes)


def test_sentence_prefixes_split_at_line_breaks_and_skip_a_single_sentence():
    lines = Candidate("List two.", "- tea\n\n- coffee\n", 6)
    assert [p.text for p in sentence_prefixes(lines)] == ["- tea"]
    assert sentence_prefixes(Candidate("p", "Just one sentence.", 4)) == []
    assert sentence_prefixes(Candidate("p", "  ", 0)) == []


def test_read_pool_of_a_missing_file_is_empty(tmp_path):
    assert read_pool(tmp_path / "absent.jsonl") == []


def test_read_pool_defaults_weights_and_ended_for_old_lines(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [
        {"prompt": "a", "text": "x", "tokens": 3},
        {"prompt": "b", "text": "y", "tokens": 5, "weights": [0.5, 0.5], "ended": False},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert read_pool(path) == [
        Candidate("a", "x", 3, (), True),
        Candidate("b", "y", 5, (0.5, 0.5), False),
    ]


def test_sample_pool_appends_and_a_second_call_samples_nothing_new(tiny_base, tmp_path):
    model, tok = tiny_base.model, tiny_base.tokenizer
    path = tmp_path / "pools" / "base.jsonl"
    pool = sample_pool(model, tok, PROMPTS[:2], path, samples=2, max_new_tokens=4)
    assert [c.prompt for c in pool] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    assert read_pool(path) == pool
    written = path.read_text()
    assert sample_pool(model, tok, PROMPTS[:2], path, samples=2, max_new_tokens=4) == pool
    assert path.read_text() == written  # nothing sampled again
    grown = sample_pool(model, tok, PROMPTS, path, samples=2, max_new_tokens=4)
    assert grown[:4] == pool  # appended after what was there
    assert [c.prompt for c in grown[4:]] == [PROMPTS[2]] * 2


def test_an_interrupted_pool_resumes_to_what_a_fresh_one_samples(make_tiny, tokenizer, tmp_path):
    model = make_tiny()
    fresh, resumed = tmp_path / "fresh.jsonl", tmp_path / "resumed.jsonl"
    options = dict(samples=2, prompts_per_batch=1, max_new_tokens=4, seed=3)
    sample_pool(model, tokenizer, PROMPTS, fresh, **options)
    sample_pool(model, tokenizer, PROMPTS[:1], resumed, **options)  # stopped after one prompt
    sample_pool(model, tokenizer, PROMPTS, resumed, **options)
    assert read_pool(resumed) == read_pool(fresh)
    assert resumed.read_text() == fresh.read_text()


def test_a_response_cut_by_the_token_limit_has_not_ended(tiny_base, tmp_path):
    # the random tiny model does not stop within 4 tokens
    pool = sample_pool(
        tiny_base.model, tiny_base.tokenizer, PROMPTS[:2], tmp_path / "p.jsonl", max_new_tokens=4
    )
    assert pool and all(c.tokens == 4 and not c.ended for c in pool)


def test_a_response_that_stops_has_ended(tiny_base, tmp_path):
    model, tok = tiny_base.model, tiny_base.tokenizer
    head = nn.Linear(32, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 100.0  # every step prefers the end-of-sequence token
    model.lm_head = head
    pool = sample_pool(model, tok, PROMPTS[:1], tmp_path / "p.jsonl", samples=2, max_new_tokens=4)
    assert [(c.text, c.tokens, c.ended) for c in pool] == [("", 1, True), ("", 1, True)]


def test_sample_pool_records_the_conditioning_weights(tiny_base, tmp_path):
    calls = []

    def conditioning_for(batch):
        calls.append(list(batch))
        weights = torch.tensor([[0.25, 0.75]] * len(batch))
        return batch, Conditioning(None, weights)

    path = tmp_path / "p.jsonl"
    pool = sample_pool(
        tiny_base.model,
        tiny_base.tokenizer,
        PROMPTS,
        path,
        samples=2,
        prompts_per_batch=2,
        conditioning_for=conditioning_for,
        max_new_tokens=3,
    )
    # one call per batch of prompts, each prompt repeated once per sample
    assert calls == [[PROMPTS[0]] * 2 + [PROMPTS[1]] * 2, [PROMPTS[2]] * 2]
    assert all(c.weights == (0.25, 0.75) for c in pool)
    assert all(
        json.loads(line)["weights"] == [0.25, 0.75] for line in path.read_text().splitlines()
    )
