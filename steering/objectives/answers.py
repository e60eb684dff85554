"""Objectives a degenerate answer cannot win: `brevity`, `brief`, `answer_relevance`,
`passage_relevance`, and their `direct_` variants that an offer of help cannot win either.

Optimised on the policy's own samples, `conciseness` and `relevance` reward answers that are not
answers. The shortest text wins conciseness ("Dear Mr.", "Hey Alex,", nothing, or any short
sentence on another subject), and the prompt itself wins relevance, so a policy learns to restate
the request. These two variants close those doors with the definitions `evaluate` counts
degenerate answers by (`steering.evaluation.quality`).

| name             | range    | empty response | reads the prompt |
|------------------|----------|----------------|------------------|
| brevity          | [0, 1]   | 0.0            | yes (MiniLM)     |
| brief            | [0, 1]   | 0.0            | yes (MiniLM)     |
| answer_relevance | [-1, 1]  | 0.0            | yes (MiniLM)     |
| passage_relevance| [-1, 1]  | 0.0            | yes (MiniLM)     |
| direct_brevity   | [0, 1]   | 0.0            | yes (MiniLM)     |
| direct_relevance | [-1, 1]  | 0.0            | yes (MiniLM)     |
"""

from __future__ import annotations

import numpy as np

from steering.evaluation.quality import (
    MIN_WORDS,
    ends_sentence,
    new_word_share,
    opens_with_offer,
    prompt_word_share,
    too_short,
    words,
)
from steering.objectives.embedding import relevance
from steering.objectives.registry import register_objective
from steering.objectives.text import CONCISENESS_MAX_TOKENS, conciseness

NEW_WORDS_FOR_FULL_CREDIT = 0.5
"""answer_relevance gives full credit to an answer at least half of whose words the prompt does
not use, and scales it down linearly below that, to 0 for an answer made of the prompt's words."""

PASSAGE_WORDS = 40
"""passage_relevance reads a prompt of at least this many words as holding a passage (a paragraph
to summarise). In the shipped prompt files every summary request has 46-76 words and every other
prompt 28 or fewer."""

PASSAGE_SHARE_FOR_FULL_CREDIT = 0.6
PASSAGE_SHARE_FOR_NO_CREDIT = 0.9
"""passage_relevance gives full credit to an answer to a passage that uses at most 0.6 of the
prompt's words (`prompt_word_share`; the 95th percentile of the base model's summaries of the
training passages, whose median is 0.34 and maximum 0.67), none to one that uses 0.9 or more (the
passage copied), and scales linearly between."""

ON_TOPIC = 0.25
"""brevity gives full credit to an answer whose answer_relevance is at least this, and scales it
down linearly below, to 0 at 0 or less. Between the 5th (0.21) and 10th (0.28) percentiles of the
base model's answers to the training prompts (docs/objectives.md): the answers below it are
refusals and ramblings, and a short sentence on another subject keeps little of its credit."""

BRIEF_TOKENS = 20
"""brief gives full credit to a complete answer on the topic of at most this many approximate
tokens (about one sentence of 15 words), and no more to a shorter one."""


@register_objective(
    "answer_relevance",
    description=(
        "Relevance that restating the prompt cannot win: the relevance cosine, scaled down when "
        "over half of the response's words are the prompt's."
    ),
)
def answer_relevance(prompts: list[str], responses: list[str]) -> np.ndarray:
    """relevance * min(1, new / NEW_WORDS_FOR_FULL_CREDIT), where new is the share of the
    response's words that the prompt does not use. The embedding similarity is highest for the
    prompt itself, so a policy trained on plain relevance learns to restate the request ("the
    plumber fixed my leak quick but charged more than the quote."); that restatement has one new
    word in eleven and keeps a fifth of its similarity. Real answers keep all of it: 99.7% of the
    base model's evaluation answers have at least half new words."""
    return relevance(prompts, responses) * _new_word_credit(prompts, responses)


def _new_word_credit(prompts: list[str], responses: list[str]) -> np.ndarray:
    """answer_relevance's share of the similarity: min(1, new / NEW_WORDS_FOR_FULL_CREDIT)."""
    shares = np.array([new_word_share(p, r) for p, r in zip(prompts, responses, strict=True)])
    return np.minimum(1.0, shares / NEW_WORDS_FOR_FULL_CREDIT)


@register_objective(
    "passage_relevance",
    description=(
        f"answer_relevance that lets an answer reuse a passage's words: for a prompt of "
        f"{PASSAGE_WORDS} words or more (a paragraph to summarise), only an answer repeating "
        f"most of the prompt's words loses credit."
    ),
)
def passage_relevance(prompts: list[str], responses: list[str]) -> np.ndarray:
    """answer_relevance, except for prompts of at least PASSAGE_WORDS words, where the answer keeps
    the larger of answer_relevance's share and a share that falls from 1 to 0 as the answer uses
    PASSAGE_SHARE_FOR_FULL_CREDIT to PASSAGE_SHARE_FOR_NO_CREDIT of the prompt's words.

    A faithful summary is made of the passage's words, so answer_relevance takes most of its
    credit away: 54% of the base model's summaries of the training passages have under half new
    words, and held out the shipped clp's summaries steer the similarity at rho 0.93 but
    answer_relevance at 0.12 (docs/objectives.md). A short prompt holds no passage, and there a
    partial restatement ("The hotel pool was closed for maintenance." to a request to answer a
    review about it) uses no more of the prompt's words than a summary does, so short prompts keep
    answer_relevance unchanged."""
    credit = _new_word_credit(prompts, responses)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        if len(words(prompt)) >= PASSAGE_WORDS:
            unused = PASSAGE_SHARE_FOR_NO_CREDIT - prompt_word_share(prompt, response)
            span = PASSAGE_SHARE_FOR_NO_CREDIT - PASSAGE_SHARE_FOR_FULL_CREDIT
            credit[i] = max(credit[i], float(np.clip(unused / span, 0.0, 1.0)))
    return relevance(prompts, responses) * credit


def on_topic(prompts: list[str], responses: list[str]) -> np.ndarray:
    """The share of brevity's credit an answer keeps for being about the prompt, in [0, 1]:
    min(1, max(0, answer_relevance) / ON_TOPIC)."""
    return np.clip(answer_relevance(prompts, responses) / ON_TOPIC, 0.0, 1.0)


@register_objective(
    "brevity",
    description=(
        f"Brief, complete answers to the prompt: conciseness, but 0 under {MIN_WORDS} words or "
        f"for an answer that does not end a sentence, and scaled down below an answer_relevance "
        f"of {ON_TOPIC}."
    ),
)
def brevity(prompts: list[str], responses: list[str]) -> np.ndarray:
    """Conciseness that a fragment or a change of subject cannot win. Plain conciseness gives its
    highest scores to "Dear Mr.", "Hey Alex," or nothing at all; here those get no credit, and
    neither does an answer cut at the token limit or stopped on a colon. A complete sentence on
    another subject ("Thank you for reading, have a lovely day!" for a mystery-novel review) keeps
    only the share `on_topic` of its credit, and so does a restatement of the prompt, whose
    answer_relevance is small."""
    complete = np.array([not too_short(r) and ends_sentence(r) for r in responses])
    scores = np.zeros(len(responses), dtype=float)
    if complete.any():
        keep = np.flatnonzero(complete)
        chosen_prompts = [prompts[i] for i in keep]
        chosen = [responses[i] for i in keep]
        scores[keep] = conciseness(chosen_prompts, chosen) * on_topic(chosen_prompts, chosen)
    return scores


@register_objective(
    "brief",
    description=(
        f"Brief, complete answers to the prompt: brevity, with full credit for any complete "
        f"answer on the topic of {BRIEF_TOKENS} tokens or fewer, so shorter earns nothing more."
    ),
)
def brief(prompts: list[str], responses: list[str]) -> np.ndarray:
    """brevity / brevity at BRIEF_TOKENS, capped at 1. Under brevity the shortest complete
    sentence on the topic always wins, so preference optimisation keeps pushing towards shorter
    answers: after 40 online rounds the policy answered at the brevity corner with "Hello." and
    "Meal kit can be it." (docs/results.md). Here every complete answer on the topic of at most
    BRIEF_TOKENS ties, so nothing rewards going below one real sentence, and longer answers still
    lose credit as under brevity."""
    full = 1.0 - BRIEF_TOKENS / CONCISENESS_MAX_TOKENS
    return np.minimum(1.0, brevity(prompts, responses) / full)


NO_OFFERS = "but 0 for an answer whose first sentence offers help instead of answering"
"""What the direct_ objectives add to the objective they are named after."""


def _not_offers(responses: list[str]) -> np.ndarray:
    """1.0 for a response that does not open by offering help (`opens_with_offer`), else 0.0."""
    return np.array([0.0 if opens_with_offer(r) else 1.0 for r in responses])


@register_objective("direct_brevity", description=f"brevity, {NO_OFFERS}.")
def direct_brevity(prompts: list[str], responses: list[str]) -> np.ndarray:
    """brevity, with no credit for an offer of help. An offer is a short, complete sentence on the
    topic, so brevity and answer_relevance both credit it: trained on them, the policy learned to
    open a third of its answers with one (docs/results-one-run.md). Here it earns what an empty
    answer earns."""
    return brevity(prompts, responses) * _not_offers(responses)


@register_objective("direct_relevance", description=f"answer_relevance, {NO_OFFERS}.")
def direct_relevance(prompts: list[str], responses: list[str]) -> np.ndarray:
    """answer_relevance, with the score of an empty answer (0) for an offer of help: the offer
    names the task, so its similarity to the prompt is as high as an answer's."""
    return answer_relevance(prompts, responses) * _not_offers(responses)
