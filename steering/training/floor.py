"""The quality floor of online preference pairs: which sampled answers may never be chosen.

Conditioned DPO on the policy's own samples learns whatever wins the comparison. At weightings
that value conciseness an empty answer, a salutation ("Dear Mr.", "Hey Alex,") or a lone heading
wins on length, and an answer the token limit cut off is not an answer at all; once chosen, the
policy learns to produce them. A too-short answer is more than never chosen: when a prompt's
candidates include one, it is the rejected answer of the pair whatever it scores, so at the
conciseness corner the policy learns to prefer the shortest real answer to a salutation or
nothing. (An unfinished answer is rejected only when it is also the worst: at a tight token
limit most samples are cut off, and their complete sentence prefixes are what gets chosen.)
"""

from __future__ import annotations

MIN_WORDS = 5


def degenerate(text: str, ended: bool, min_words: int = MIN_WORDS) -> bool:
    """True for an answer that must never be the chosen one: empty or fewer than `min_words`
    words, or unfinished (`ended` False: sampling stopped at the token limit, not at the
    end-of-turn token). `min_words` 0 turns the floor off: no answer is degenerate."""
    if min_words <= 0:
        return False
    return not ended or too_short(text, min_words)


def too_short(text: str, min_words: int = MIN_WORDS) -> bool:
    """Empty or fewer than `min_words` words (0: nothing is too short)."""
    return len(text.split()) < min_words
