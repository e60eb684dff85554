"""Degenerate answers: the one definition the evaluation counts them by.

An answer is

- empty: no words at all;
- short: one to four words;
- degenerate: empty or short, i.e. under five words;
- unfinished: cut at the token limit and not ending in sentence punctuation (a closing quote,
  bracket or markdown emphasis after the punctuation is allowed);
- echo: it repeats the prompt: it contains ECHO_WORDS consecutive words of the prompt, or the
  whole prompt when that is shorter (words compared in lower case, without punctuation). An
  answer that restates the request wins relevance, the embedding similarity of answer and
  prompt, without answering it.
- restatement: at least MIN_WORDS words, under RESTATEMENT_NEW_SHARE of them new (not used by
  the prompt, as `new_word_share` counts them): the request said again in other order or with a
  word changed, which the echo rule misses ("the plumber fixed my leak quick but charged more
  than the quote." to "Write a review for a plumber who fixed my leak quickly but charged more
  than the quote.").
- off_topic: at least MIN_WORDS words, with a MiniLM similarity to the prompt (the `relevance`
  objective's cosine, which `evaluate` stores with each answer) under OFF_TOPIC_SIMILARITY: a
  complete sentence about something else ("Thank you for reading, have a lovely day!" to a
  request for a book review), which no other category catches. 5% of the base model's answers
  to the training prompts are under it; they are refusals and ramblings.
- offer: at least MIN_WORDS words whose first sentence offers the asker help in the first person
  (OFFER: "I'm happy to help you with that.", "I'm here to help you with a complaint about...",
  "I'd be happy to help you refine your cover letter"): the answer speaks as an assistant about
  the task instead of doing it, which every objective can still credit (it is short, positive and
  names the prompt's topic). It counts the opening, so an offer followed by the answer counts too.

Words are the whitespace-separated pieces of the answer text. Empty and short never overlap;
unfinished, echo, restatement and offer are counted apart from both and from each other (an empty
answer cut at the limit is empty and unfinished; an echo with little else is a restatement too;
an answer is off topic only when its similarity is known).

Whether an answer was cut comes from its token count: `Generation.tokens` counts the response
up to and including the end-of-turn token (the response mask of `steering.model.generate`), so
an answer that ended by itself has at most max_new_tokens tokens and one the limit cut has
exactly max_new_tokens. The count cannot tell the two apart when the end-of-turn token was the
last one allowed; that answer counts as cut, and so as unfinished only if its text lacks the
closing punctuation too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MIN_WORDS = 5
ECHO_WORDS = 8
RESTATEMENT_NEW_SHARE = 0.2
OFF_TOPIC_SIMILARITY = 0.2
SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")
CLOSERS = "\"'”’»)]*_ \t\n"
CATEGORIES = (
    "empty",
    "short",
    "degenerate",
    "unfinished",
    "echo",
    "restatement",
    "off_topic",
    "offer",
)
OFFER = re.compile(
    r"\bI(?:['’]m| am|['’]d be| would be| will be)(?: more than| always| so)? "
    r"(?:happy|glad|here|delighted|excited) to help\b|\bI can help you\b|\bI['’]d love to help\b",
    re.IGNORECASE,
)
FIRST_SENTENCE = re.compile(".*?[" + re.escape("".join(SENTENCE_END)) + r"](?=\s|$)", re.DOTALL)
"""The first sentence: up to the first SENTENCE_END followed by a space or the end."""


@dataclass(frozen=True)
class AnswerQuality:
    empty: bool
    short: bool
    unfinished: bool
    echo: bool = False
    restatement: bool = False
    off_topic: bool = False
    offer: bool = False

    @property
    def degenerate(self) -> bool:
        return self.empty or self.short

    def flags(self) -> dict[str, bool]:
        """{category: whether the answer is in it}, in CATEGORIES order."""
        return {category: getattr(self, category) for category in CATEGORIES}


def classify(
    text: str, tokens: int, max_new_tokens: int, prompt: str, similarity: float | None = None
) -> AnswerQuality:
    """The categories of one answer to `prompt` of `tokens` generated tokens under a limit of
    max_new_tokens; `similarity`, the answer's MiniLM cosine to the prompt, decides off_topic
    (None: not off topic)."""
    count = len(text.split())
    cut = tokens >= max_new_tokens
    far = similarity is not None and similarity < OFF_TOPIC_SIMILARITY
    return AnswerQuality(
        empty=count == 0,
        short=0 < count < MIN_WORDS,
        unfinished=cut and not ends_sentence(text),
        echo=echoes(prompt, text),
        restatement=restates(prompt, text),
        off_topic=count >= MIN_WORDS and far,
        offer=opens_with_offer(text),
    )


def too_short(text: str, min_words: int = MIN_WORDS) -> bool:
    """Empty or fewer than `min_words` words (0: nothing is too short)."""
    return len(text.split()) < min_words


def ends_sentence(text: str) -> bool:
    """True when `text` ends in sentence punctuation, allowing CLOSERS after it."""
    return text.rstrip(CLOSERS).endswith(SENTENCE_END)


def words(text: str) -> list[str]:
    """Lower-case words without their punctuation ("Cafe." and "cafe" are one word)."""
    return [w for w in (re.sub(r"[^\w']", "", t).lower() for t in text.split()) if w]


def new_word_share(prompt: str, text: str) -> float:
    """The share of the answer's words (as `words` counts them) that the prompt does not use; 0.0
    for an answer with no words. A restatement of the request scores near 0, an answer near 1:
    over the base model's 600 evaluation answers the share is under 0.5 for 0.3% of them and
    0.80 on average."""
    said = words(text)
    if not said:
        return 0.0
    asked = set(words(prompt))
    return sum(word not in asked for word in said) / len(said)


def restates(prompt: str, text: str) -> bool:
    """True for a restatement of the request: at least MIN_WORDS words, under
    RESTATEMENT_NEW_SHARE of them new to the prompt."""
    return len(text.split()) >= MIN_WORDS and new_word_share(prompt, text) < RESTATEMENT_NEW_SHARE


def prompt_word_share(prompt: str, text: str) -> float:
    """The share of the prompt's distinct words (as `words` counts them) that the answer uses;
    0.0 for a prompt with no words. A restatement of the whole prompt scores near 1; the base
    model's answers to the training prompts that hold a paragraph to summarise use 0.34 of its
    words at the median and 0.60 at the 95th percentile."""
    asked = set(words(prompt))
    if not asked:
        return 0.0
    return len(asked & set(words(text))) / len(asked)


def offers_help(text: str) -> bool:
    """True when the first sentence of `text` (all of it when no sentence ends) offers help in the
    first person, as OFFER matches it."""
    first = FIRST_SENTENCE.match(text)
    return bool(OFFER.search(first.group() if first else text))


def opens_with_offer(text: str) -> bool:
    """True for an offer: at least MIN_WORDS words, and the first sentence offers help
    (`offers_help`)."""
    return len(text.split()) >= MIN_WORDS and offers_help(text)


def echoes(prompt: str, text: str, run: int = ECHO_WORDS) -> bool:
    """True when `text` contains `run` consecutive words of `prompt`, or all of the prompt when
    it has fewer words (`run` 0: never)."""
    asked, said = words(prompt), words(text)
    n = min(run, len(asked))
    if n == 0:
        return False
    runs = {tuple(asked[i : i + n]) for i in range(len(asked) - n + 1)}
    return any(tuple(said[i : i + n]) in runs for i in range(len(said) - n + 1))


def shares(answers: Sequence[AnswerQuality]) -> dict[str, float]:
    """{category: share of the answers in it}, in CATEGORIES order; at least one answer."""
    return {
        category: sum(answer.flags()[category] for answer in answers) / len(answers)
        for category in CATEGORIES
    }
