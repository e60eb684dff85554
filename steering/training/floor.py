"""The quality floor of online preference pairs: which sampled answers may never be chosen.

Conditioned DPO on the policy's own samples learns whatever wins the comparison. At weightings
that value conciseness an empty answer, a salutation ("Dear Mr.", "Hey Alex,") or a lone heading
wins on length; at weightings that value relevance (the embedding similarity of answer and
prompt) an answer that repeats the prompt wins without answering it; and an answer the token
limit cut off is not an answer at all. Once chosen, the policy learns to produce them. A
too-short answer or an echo of the prompt (`steering.evaluation.quality`, the definitions the
evaluation counts) is more than never chosen: when a prompt's candidates include one, it is the
rejected answer of the pair whatever it scores, so the policy learns to prefer the shortest real
answer to a salutation, and any real answer to a restatement of the request. (An unfinished
answer is rejected only when it is also the worst: at a tight token limit most samples are cut
off, and their complete sentence prefixes are what gets chosen.) Two more kinds of non-answer
can be added to the rejected ones (`--reject`, `KINDS`): an answer that opens by offering help
instead of doing the task ("I'm happy to help you with that."), which is short, positive and on
topic, so every objective credits it; and a restatement of the request in other words, which
relevance credits.
"""

from __future__ import annotations

from collections.abc import Callable

from steering.evaluation.quality import (
    ECHO_WORDS,
    MIN_WORDS,
    echoes,
    opens_with_offer,
    restates,
    too_short,
)

KINDS: dict[str, Callable[[str, str], bool]] = {
    "offer": lambda prompt, text: opens_with_offer(text),
    "restatement": restates,
}
"""The kinds of answer --reject can add to the rejected ones, each by `evaluate`'s definition
(`steering.evaluation.quality`), as a test of (prompt, text)."""


def rejectable(
    prompt: str,
    text: str,
    min_words: int = MIN_WORDS,
    echo_words: int = ECHO_WORDS,
    kinds: tuple[str, ...] = (),
) -> bool:
    """True for an answer that is never chosen and is rejected whenever its prompt has one:
    too short (empty or under `min_words` words), an echo of the prompt (`echo_words`
    consecutive words of it, or all of it when shorter; 0 turns either rule off) or of a kind
    named in `kinds` (KINDS)."""
    return (
        too_short(text, min_words)
        or echoes(prompt, text, echo_words)
        or any(KINDS[kind](prompt, text) for kind in kinds)
    )


def degenerate(
    prompt: str,
    text: str,
    ended: bool,
    min_words: int = MIN_WORDS,
    echo_words: int = ECHO_WORDS,
    kinds: tuple[str, ...] = (),
) -> bool:
    """True for an answer that must never be the chosen one: `rejectable`, or unfinished
    (`ended` False: sampling stopped at the token limit, not at the end-of-turn token; only
    while the floor is on, `min_words` > 0)."""
    return (min_words > 0 and not ended) or rejectable(prompt, text, min_words, echo_words, kinds)
