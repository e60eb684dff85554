"""Tests for steering/evaluation/quality.py on hand-written answers, with a limit of 10 tokens."""

import pytest

from steering.evaluation.quality import (
    OFF_TOPIC_SIMILARITY,
    AnswerQuality,
    classify,
    echoes,
    new_word_share,
    offers_help,
    prompt_word_share,
    shares,
)

LIMIT = 10
ASKED = "Describe your bicycle."


@pytest.mark.parametrize(
    ("text", "tokens", "expected"),
    [
        # no words at all: empty, whether it stopped at once or was cut with only spaces
        ("", 1, AnswerQuality(empty=True, short=False, unfinished=False)),
        ("   ", 10, AnswerQuality(empty=True, short=False, unfinished=True)),
        # "Great coffee, friendly staff." is 4 words: short, and it ended by itself (6 < 10)
        ("Great coffee, friendly staff.", 6, AnswerQuality(False, True, False)),
        # 5 words is no longer short
        ("Great coffee and friendly staff.", 7, AnswerQuality(False, False, False)),
        # 7 words cut at the limit (10 >= 10) with no closing punctuation: unfinished
        ("The bicycle rides smoothly and the brakes", 10, AnswerQuality(False, False, True)),
        # cut at the limit but the text happens to end a sentence: finished
        (
            "The bicycle rides smoothly. The brakes work well!",
            10,
            AnswerQuality(False, False, False),
        ),
        # no closing punctuation, but it stopped by itself (9 < 10): not unfinished
        ("The bicycle rides smoothly and the brakes work", 9, AnswerQuality(False, False, False)),
        # punctuation inside a closing quote, bracket or markdown emphasis still ends the sentence
        ('He said the ride was "smooth and quiet."', 10, AnswerQuality(False, False, False)),
        ("It is **the best bike I have owned.**", 10, AnswerQuality(False, False, False)),
        ("A fine ride (and a fair price?)", 10, AnswerQuality(False, False, False)),
        # a closing bracket alone is not punctuation: 3 words, short, and cut mid-sentence
        ("(see the list", 10, AnswerQuality(False, True, True)),
        # an ellipsis character ends it; a colon does not
        ("I would say it is fine…", 10, AnswerQuality(False, False, False)),
        ("Here are the three things to know:", 10, AnswerQuality(False, False, True)),
    ],
)
def test_classify_hand_written_answers(text, tokens, expected):
    assert classify(text, tokens, LIMIT, ASKED) == expected


def test_degenerate_is_empty_or_short():
    assert classify("", 1, LIMIT, ASKED).degenerate
    assert classify("Too short.", 3, LIMIT, ASKED).degenerate
    assert not classify("Long enough to count here.", 6, LIMIT, ASKED).degenerate


def test_shares_count_each_category_over_the_answers():
    answers = [
        classify("", 1, LIMIT, ASKED),  # empty
        classify("Yes.", 2, LIMIT, ASKED),  # short
        classify("one two three four five six", 10, LIMIT, ASKED),  # unfinished
        classify("one two three four five six.", 8, LIMIT, ASKED),  # none
    ]
    # 1 empty, 1 short, so 2 degenerate, and 1 unfinished, of 4 answers
    assert shares(answers) == {
        "empty": 0.25,
        "short": 0.25,
        "degenerate": 0.5,
        "unfinished": 0.25,
        "echo": 0.0,
        "restatement": 0.0,
        "off_topic": 0.0,
        "offer": 0.0,
    }


def test_a_complete_sentence_far_from_the_prompt_is_off_topic():
    far = "Thank you for reading, have a lovely day!"
    assert classify(far, 10, LIMIT, ASKED, similarity=0.18).off_topic
    # at the threshold, or with the similarity unknown, it is not
    assert not classify(far, 10, LIMIT, ASKED, similarity=OFF_TOPIC_SIMILARITY).off_topic
    assert not classify(far, 10, LIMIT, ASKED).off_topic
    # under five words it is short, not off topic
    assert not classify("Have a lovely day!", 5, LIMIT, ASKED, similarity=0.05).off_topic
    flagged = classify(far, 10, LIMIT, ASKED, similarity=0.05)
    assert flagged.flags()["off_topic"] and not flagged.degenerate


def test_an_answer_made_of_the_prompts_words_is_a_restatement():
    asked = (
        "Write a review for a plumber who fixed my leak quickly but charged more than the quote."
    )
    # one new word ("quick") in twelve: a restatement, which the echo rule misses
    restated = classify(
        "the plumber fixed my leak quick but charged more than the quote.", 14, LIMIT, asked
    )
    assert restated.restatement and not restated.echo
    # an answer that reuses the prompt's words but says more: 7 of its 11 words are new
    answer = classify("The plumber was quick and kind, but the bill hurt.", 12, LIMIT, asked)
    assert not answer.restatement
    # under five words it is short, not a restatement
    assert not classify("A plumber review.", 4, LIMIT, asked).restatement
    # the verbatim echo is one too
    assert classify(asked, 18, LIMIT, asked).restatement


def test_an_answer_opening_with_an_offer_of_help_is_an_offer():
    asked = "Write a complaint to my internet provider about constant outages every evening."
    # the shipped clp's answer to that request: it offers to help with the complaint
    offered = "I'm here to help you with any issues you're facing with your internet provider."
    assert classify(offered, 18, 64, asked).offer
    # the other openings the rule knows, with a straight or a curly apostrophe
    for opening in (
        "I'd be happy to help you refine your cover letter.",
        "I’m happy to help you plan a quiet dinner.",
        "Dude, I am so glad to help with that. I fixed your leak.",
        "I can help you write it, just tell me the dates.",
    ):
        assert offers_help(opening), opening
    # an offer after the first sentence, a business's "we", and help that is done are not
    assert not offers_help("Our evenings have had outages for weeks. I'm happy to help you test.")
    assert not offers_help("Thank you for your review, we are happy to help any time.")
    assert not offers_help("Helping you was a pleasure: the leak is fixed.")
    # an answer that does what was asked is not one, and under five words it is short instead
    complaint = "Your service has dropped every evening this week, and I expect a refund."
    assert not classify(complaint, 16, 64, asked).offer
    short = classify("I'm happy to help.", 6, 64, asked)
    assert short.degenerate and not short.offer
    # with no sentence punctuation the whole answer is its first sentence
    assert offers_help("Sure, I'm happy to help you with that complaint")


def test_an_answer_repeating_the_prompt_is_an_echo():
    assert classify("Describe your bicycle. Describe your bicycle.", 8, LIMIT, ASKED).echo
    assert not classify("My bicycle is red and fast.", 8, LIMIT, ASKED).echo
    asked = "Write a restaurant review for a small Thai place near my office."
    # eight consecutive words of the prompt, whatever the case and punctuation around them
    assert echoes(asked, "Sure! A restaurant review, for a small Thai place near: lovely.")
    # six are not enough, and neither are the same words in another order
    assert not echoes(asked, "This small Thai place near my office is lovely and cheap.")
    assert not echoes(asked, "Near my office, a small place: Thai food for review, a restaurant.")
    assert echoes(asked, "This small Thai place near my office is lovely.", run=6)
    assert not echoes(asked, asked, run=0)  # 0: the rule is off
    assert not echoes("", "Anything at all.")


def test_prompt_word_share_counts_the_prompts_distinct_words_the_answer_uses():
    asked = "Summarize: The cat sat on the mat. The dog slept."
    # the prompt's distinct words: summarize the cat sat on mat dog slept (8)
    assert prompt_word_share(asked, "The cat sat.") == pytest.approx(3 / 8)
    assert prompt_word_share(asked, "THE CAT, the cat!") == pytest.approx(2 / 8)  # distinct words
    assert prompt_word_share(asked, asked) == 1.0
    assert prompt_word_share(asked, "Nothing in common here.") == 0.0
    assert prompt_word_share(asked, "") == 0.0
    assert prompt_word_share("", "Anything at all.") == 0.0
    # a summary is made of the prompt's words (new_word_share 0) and uses few of them
    assert new_word_share(asked, "The cat sat.") == 0.0
