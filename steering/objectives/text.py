"""Objectives that read the response text alone, cheaply, with models shipped inside PyPI wheels.

| name         | range    | empty / whitespace / emoji-only response                       |
|--------------|----------|----------------------------------------------------------------|
| positivity   | [-1, 1]  | 0.0 (VADER scores emoji such as a smiley, so emoji may be != 0) |
| harmlessness | [0, 1]   | the classifier's prior, about 0.96                             |
| conciseness  | [0, 1]   | 1.0 (nothing to read is as brief as it gets)                   |
| readability  | [0, 1]   | 0.0 (no words: nothing readable)                               |

All four ignore the prompt (`brevity`, conciseness for complete answers on the prompt's topic,
is in `answers`). Non-English text gets whatever the English-trained scorer makes of it
(usually neutral sentiment, low profanity, and an arbitrary but clipped readability).
"""

from __future__ import annotations

import math
import re
from functools import cache

import numpy as np

from steering.objectives.registry import register_objective

CONCISENESS_MAX_TOKENS = 128
"""N in conciseness = 1 - min(1, n / N): a response of N approximate tokens or more scores 0.
128 is twice the default generation length, so generated responses spread over [0.5, 1]
rather than all hitting 0, while the calibration z-scores undo the scale."""

TOKEN_CHARS = 6
"""Word-character runs count one approximate token per started TOKEN_CHARS characters."""

_TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


@cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@register_objective(
    "positivity", description="VADER compound sentiment of the response, in [-1, 1]."
)
def positivity(prompts: list[str], responses: list[str]) -> np.ndarray:
    analyzer = _vader()
    return np.array([analyzer.polarity_scores(r)["compound"] for r in responses], dtype=float)


@register_objective(
    "harmlessness",
    description="1 - offensive-language probability from alt-profanity-check, in [0, 1].",
)
def harmlessness(prompts: list[str], responses: list[str]) -> np.ndarray:
    # The import itself unpickles the vectoriser and linear model, so it happens once, on first use.
    from profanity_check import predict_prob

    return 1.0 - np.asarray(predict_prob(responses), dtype=float)


def approx_token_count(text: str) -> int:
    """A tokenizer-free token count: each punctuation mark or symbol (emoji included) is one
    token, and each run of word characters is ceil(len / TOKEN_CHARS) tokens.

    Close to a BPE count for English (most words are one token, long ones two or three) without
    loading the policy's tokenizer, so conciseness stays cheap and comparable across base
    models; a 600-character run of CJK characters is 100 tokens rather than one "word".
    """
    return sum(math.ceil(len(m) / TOKEN_CHARS) for m in _TOKEN_PATTERN.findall(text))


@register_objective(
    "conciseness",
    description=f"Brevity: 1 - min(1, tokens / {CONCISENESS_MAX_TOKENS}), approximate tokens.",
)
def conciseness(prompts: list[str], responses: list[str]) -> np.ndarray:
    counts = np.array([approx_token_count(r) for r in responses], dtype=float)
    return 1.0 - np.minimum(1.0, counts / CONCISENESS_MAX_TOKENS)


READABILITY_LANG = "en-US"
"""Passed to textstat. With "en_US" textstat counts syllables with NLTK's cmudict, which it tries
to download on first use; "en-US" does not match its cmudict switch, so syllables come from the
en_US hyphenation dictionary shipped inside `pyphen`, and the Flesch constants stay the English
ones. Everything offline, the same on every machine."""


@cache
def _textstat():
    from textstat.textstat import textstatistics

    # A private instance: textstat's module-level one is shared global state.
    stats = textstatistics()
    stats.set_lang(READABILITY_LANG)
    return stats


def flesch_reading_ease(text: str) -> float:
    """Flesch reading ease of `text`: 206.835 - 1.015 words/sentence - 84.6 syllables/word."""
    if not re.search(r"\w", text):
        return 0.0
    return float(_textstat().flesch_reading_ease(text))


@register_objective(
    "readability",
    description="Flesch reading ease from textstat, clipped to [0, 100] and divided by 100.",
)
def readability(prompts: list[str], responses: list[str]) -> np.ndarray:
    # Raw Flesch runs from about -2000 (one endless sentence) to 121 (one-syllable words), and
    # 0-100 is the range its interpretation tables cover, hence the clip.
    raw = np.array([flesch_reading_ease(r) for r in responses], dtype=float)
    return np.clip(raw, 0.0, 100.0) / 100.0
