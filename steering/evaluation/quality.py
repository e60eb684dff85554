"""Degenerate answers: the one definition the evaluation counts them by.

An answer is

- empty: no words at all;
- short: one to four words;
- degenerate: empty or short, i.e. under five words;
- unfinished: cut at the token limit and not ending in sentence punctuation (a closing quote,
  bracket or markdown emphasis after the punctuation is allowed).

Words are the whitespace-separated pieces of the answer text. Empty and short never overlap;
unfinished is counted apart from both (an empty answer cut at the limit is empty and unfinished).

Whether an answer was cut comes from its token count: `Generation.tokens` counts the response
up to and including the end-of-turn token (the response mask of `steering.model.generate`), so
an answer that ended by itself has at most max_new_tokens tokens and one the limit cut has
exactly max_new_tokens. The count cannot tell the two apart when the end-of-turn token was the
last one allowed; that answer counts as cut, and so as unfinished only if its text lacks the
closing punctuation too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_WORDS = 5
SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")
CLOSERS = "\"'”’»)]*_ \t\n"
CATEGORIES = ("empty", "short", "degenerate", "unfinished")


@dataclass(frozen=True)
class AnswerQuality:
    empty: bool
    short: bool
    unfinished: bool

    @property
    def degenerate(self) -> bool:
        return self.empty or self.short

    def flags(self) -> dict[str, bool]:
        """{category: whether the answer is in it}, in CATEGORIES order."""
        return {category: getattr(self, category) for category in CATEGORIES}


def classify(text: str, tokens: int, max_new_tokens: int) -> AnswerQuality:
    """The categories of one answer of `tokens` generated tokens under a limit of max_new_tokens."""
    words = len(text.split())
    cut = tokens >= max_new_tokens
    return AnswerQuality(
        empty=words == 0,
        short=0 < words < MIN_WORDS,
        unfinished=cut and not text.rstrip(CLOSERS).endswith(SENTENCE_END),
    )


def shares(answers: Sequence[AnswerQuality]) -> dict[str, float]:
    """{category: share of the answers in it}, in CATEGORIES order; at least one answer."""
    return {
        category: sum(answer.flags()[category] for answer in answers) / len(answers)
        for category in CATEGORIES
    }
