import pytest
import torch
from torch import nn
from torch.testing import assert_close

from steering.errors import UserError
from steering.model.generate import Conditioning, generate, response_logprobs, stream
from steering.model.mixing import AdapterSpec, attach, bank_parameters, conditioned
from steering.model.policy import chat_prompt

OBJECTIVES = ("positivity", "conciseness", "relevance")
PROMPTS = ["Write a haiku about tea.", "Explain gravity to a child in two short sentences please."]


def with_random_bank(model):
    attach(model, "clp", AdapterSpec(OBJECTIVES, rank=4))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in bank_parameters(model, "clp"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


def test_same_seed_same_text_and_counts(tiny_base):
    m, tok = tiny_base.model, tiny_base.tokenizer
    first = generate(m, tok, PROMPTS, Conditioning(None, None), max_new_tokens=8, seed=5)
    again = generate(m, tok, PROMPTS, Conditioning(None, None), max_new_tokens=8, seed=5)
    other = generate(m, tok, PROMPTS, Conditioning(None, None), max_new_tokens=8, seed=6)
    assert [g.text for g in first] == [g.text for g in again]
    assert [g.text for g in first] != [g.text for g in other]
    assert all(g.tokens == 8 and g.seconds > 0 for g in first)


def test_left_padding_does_not_change_a_row(tiny_base):
    m, tok = with_random_bank(tiny_base.model), tiny_base.tokenizer
    w = torch.tensor([[0.2, 0.3, 0.5], [0.7, 0.3, 0.0]])
    batched = generate(m, tok, PROMPTS, Conditioning("clp", w), max_new_tokens=6, temperature=0)
    for row, prompt in enumerate(PROMPTS):
        alone = generate(
            m, tok, [prompt], Conditioning("clp", w[row : row + 1]), max_new_tokens=6, temperature=0
        )
        assert alone[0].text == batched[row].text
        assert batched[row].weights == pytest.approx(tuple(w[row].tolist()))


def test_stops_at_end_of_sequence(tiny_base):
    m, tok = tiny_base.model, tiny_base.tokenizer
    head = nn.Linear(32, m.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 100.0  # every step prefers the end-of-sequence token
    m.lm_head = head
    out = generate(m, tok, PROMPTS, Conditioning(None, None), max_new_tokens=10)
    assert [(g.text, g.tokens) for g in out] == [("", 1), ("", 1)]


def test_min_words_masks_the_stop_tokens_until_the_text_has_that_many_words(tiny_base):
    m, tok = tiny_base.model, tiny_base.tokenizer
    (word,) = tok(" word", add_special_tokens=False)["input_ids"]
    head = nn.Linear(32, m.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 100.0  # the model would stop at once
        head.bias[word] = 50.0  # and says " word" when it may not
    m.lm_head = head
    floored = generate(m, tok, PROMPTS, Conditioning(None, None), max_new_tokens=10, min_words=3)
    assert [(g.text, g.tokens) for g in floored] == [("word word word", 4)] * 2
    limited = generate(m, tok, PROMPTS[:1], Conditioning(None, None), max_new_tokens=2, min_words=3)
    assert [(g.text, g.tokens) for g in limited] == [("word word", 2)]  # the limit still ends it
    streamed = list(stream(m, tok, PROMPTS[0], Conditioning(None, None), 10, min_words=2))
    assert streamed == ["word", "word word"]


def test_logit_mixing_at_a_corner_equals_that_expert(tiny_base):
    m, tok = with_random_bank(tiny_base.model), tiny_base.tokenizer
    corner = torch.tensor([[0.0, 1.0, 0.0]])
    mixed = generate(
        m,
        tok,
        PROMPTS[:1],
        Conditioning("clp", corner, mix_logits=True),
        max_new_tokens=6,
        temperature=0,
    )
    expert = generate(
        m, tok, PROMPTS[:1], Conditioning("clp", corner), max_new_tokens=6, temperature=0
    )
    assert mixed[0].text == expert[0].text


def test_stream_ends_with_the_generated_text(tiny_base):
    m, tok = tiny_base.model, tiny_base.tokenizer
    pieces = list(
        stream(m, tok, PROMPTS[0], Conditioning(None, None), max_new_tokens=6, temperature=0)
    )
    full = generate(m, tok, PROMPTS[:1], Conditioning(None, None), max_new_tokens=6, temperature=0)
    assert 1 <= len(pieces) <= 6
    assert pieces[-1] == full[0].text


@pytest.mark.parametrize(
    ("prompts", "kwargs", "message"),
    [
        ([""], {}, "the prompt is empty"),
        (["   "], {}, "the prompt is empty"),
        (["word " * 300], {}, "exceeds the model's context of 256 tokens"),
        (["hello"], {"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        (["hello"], {"min_words": -1}, "min_words must not be negative"),
    ],
)
def test_bad_generation_input(tiny_base, prompts, kwargs, message):
    with pytest.raises(UserError, match=message):
        generate(tiny_base.model, tiny_base.tokenizer, prompts, Conditioning(None, None), **kwargs)


def test_response_logprobs_match_a_manual_forward(tiny_base):
    m, tok = with_random_bank(tiny_base.model), tiny_base.tokenizer
    prompt, response = PROMPTS[0], "Green leaves steep slowly"
    w = torch.tensor([[0.1, 0.1, 0.8]])
    with conditioned(m, "clp", w):
        got = response_logprobs(m, tok, [prompt, PROMPTS[1]], [response, "Things fall down."])[0]
        prompt_ids = tok(chat_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
        response_ids = tok(response, add_special_tokens=False)["input_ids"]
        logits = m(torch.tensor([prompt_ids + response_ids])).logits[0].float()
    # token t of the response is predicted by the position just before it
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids)
    expected = torch.stack([logprobs[start - 1 + i, t] for i, t in enumerate(response_ids)])
    assert_close(got, expected, atol=1e-4, rtol=1e-4)
