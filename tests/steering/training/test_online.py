import json

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from training_fixtures import (
    PROMPTS,
    assert_only_the_bank_trained,
    metrics_lines,
    online_config,
    stop_at_once_else_word,
    stop_at_step,
)

from steering.errors import UserError
from steering.model.mixing import read_metadata
from steering.objectives import load_calibration
from steering.training.config import TrainConfig
from steering.training.floor import degenerate
from steering.training.online import off_topic, preference_pair, relabelled, with_prefixes
from steering.training.pool import Candidate
from steering.training.trainer import Trainer, step_rng

W = (0.2, 0.8)  # mostly conciseness, the corner where short answers win


ASKED = "Review a cafe."


def test_degenerate_answers_by_the_definition():
    assert degenerate(ASKED, "", ended=True)
    assert degenerate(ASKED, "Dear Mr.", ended=True)
    assert degenerate(ASKED, "Hey Alex,", ended=True)
    assert degenerate(ASKED, "**Cafe Review**", ended=True)  # a heading and nothing else
    assert degenerate(ASKED, "The coffee was good and the staff kind, but the", ended=False)
    assert not degenerate(ASKED, "The coffee was good today.", ended=True)  # five words, done
    assert not degenerate(ASKED, "", ended=False, min_words=0)  # 0: no floor
    assert degenerate(ASKED, "Short but done.", ended=True, min_words=4)
    # the prompt said again, with or without more: an echo, not an answer
    assert degenerate(ASKED, "Review a cafe. Review a cafe. Review a cafe.", ended=True)
    assert degenerate(ASKED, "review a CAFE: the coffee was good today.", ended=True)
    assert not degenerate(ASKED, "A cafe worth a review: good coffee.", ended=True)  # no run
    assert not degenerate(ASKED, "Review a cafe. Review a cafe.", ended=True, echo_words=0)
    long_ask = "Write a review for a plumber who fixed my leak quickly but charged more."
    assert degenerate(long_ask, "A plumber who fixed my leak quickly but charged more.", True)
    assert not degenerate(long_ask, "He fixed my leak quickly, then charged more. Fine.", True)


def candidates(*rows: tuple[str, bool]) -> list[Candidate]:
    return [Candidate("Review a cafe.", text, 0, W, ended) for text, ended in rows]


def test_a_degenerate_best_candidate_is_never_chosen():
    samples = candidates(
        ("Dear Mr.", True),  # w . r_hat = 0.2 * 0 + 0.8 * 3 = 2.4, the best
        ("", True),  # 0.8 * 2.5 = 2.0
        ("The coffee was rich and the staff were kind", False),  # 0.2 * 5 + 0.8 * 1 = 1.8
        ("A calm cafe with good coffee and kind staff.", True),  # 0.2 * 2 + 0.8 * 0.5 = 0.8
        ("The cafe was loud, the coffee was cold and the chairs were hard.", True),  # -0.2
    )
    r_hat = np.array([[0.0, 3.0], [0.0, 2.5], [5.0, 1.0], [2.0, 0.5], [-1.0, 0.0]])
    pair = preference_pair(samples, r_hat, "zscore", min_words=5, echo_words=8)
    assert pair.chosen == "A calm cafe with good coffee and kind staff." and pair.chosen_ended
    # the too-short candidates rank below every other one: the worst of them is rejected
    assert pair.rejected == "" and pair.weights == W
    # percentile ranks among the five: objective 1 (0, 0, 5, 2, -1) -> 0.375, 0.375, 1, 0.75, 0
    # (the two zeros share ranks 2 and 3); objective 2 (3, 2.5, 1, 0.5, 0) -> 1, 0.75, 0.5,
    # 0.25, 0; w . ranks = 0.875, 0.675, 0.6, 0.35, 0: the same order here, the same pair
    assert preference_pair(samples, r_hat, "rank", min_words=5, echo_words=8) == pair
    # a degenerate sample may be the rejected one: empty -0.8, unfinished 1.8, the answer 0.8
    r_hat = np.array([[0.0, -1.0], [5.0, 1.0], [2.0, 0.5]])
    worst_is_empty = preference_pair(samples[1:4], r_hat, "zscore", min_words=5, echo_words=8)
    assert worst_is_empty.chosen == samples[3].text and worst_is_empty.rejected == ""
    # with no too-short candidate the worst of all is rejected
    r_hat = np.array([[5.0, 1.0], [2.0, 0.5], [-1.0, 0.0]])
    no_short = preference_pair(samples[2:], r_hat, "zscore", min_words=5, echo_words=8)
    assert no_short.chosen == samples[3].text and no_short.rejected == samples[4].text
    # without the floor the salutation wins over the worst answer
    r_hat = np.array([[0.0, 3.0], [0.0, 2.5], [5.0, 1.0], [2.0, 0.5], [-1.0, 0.0]])
    unfloored = preference_pair(samples, r_hat, "zscore", min_words=0, echo_words=8)
    assert (unfloored.chosen, unfloored.rejected) == ("Dear Mr.", samples[4].text)


def test_an_echo_of_the_prompt_is_rejected_however_relevant():
    samples = candidates(
        ("Review a cafe. Review a cafe, a cafe review.", True),  # the most relevant by far
        ("A calm cafe with good coffee and kind staff.", True),
        ("The cafe was loud, the coffee was cold and the chairs were hard.", True),
    )
    r_hat = np.array([[1.0, 4.0], [1.0, 1.0], [-1.0, 0.0]])
    pair = preference_pair(samples, r_hat, "zscore", min_words=5, echo_words=8)
    assert (pair.chosen, pair.rejected) == (samples[1].text, samples[0].text)
    allowed = preference_pair(samples, r_hat, "zscore", min_words=5, echo_words=0)
    assert (allowed.chosen, allowed.rejected) == (samples[0].text, samples[2].text)


def test_an_off_topic_candidate_is_rejected_however_brief():
    samples = candidates(
        ("Hey there! I hope you are doing well today.", True),  # the briefest: the best at W
        ("A calm cafe with good coffee and kind staff.", True),
        ("The cafe was loud, the coffee was cold and the chairs were hard to sit on.", True),
    )
    groups = [(samples, np.array([[1.0, 4.0], [1.0, 1.0], [-1.0, 0.0]]))]
    # the real MiniLM: the greeting is far from "Review a cafe.", the two reviews are not
    [far] = off_topic(groups, 0.2)
    assert far.tolist() == [True, False, False]
    pair = preference_pair(*groups[0], "zscore", min_words=5, echo_words=8, off_topic=far)
    assert (pair.chosen, pair.rejected) == (samples[1].text, samples[0].text)
    assert off_topic(groups, 0.0) == [None]  # the rule off: the greeting wins as before
    allowed = preference_pair(*groups[0], "zscore", min_words=5, echo_words=8)
    assert (allowed.chosen, allowed.rejected) == (samples[0].text, samples[2].text)


def test_an_offer_of_help_or_a_restatement_is_rejected_when_asked():
    samples = candidates(
        ("I'm happy to help you with the cafe.", True),  # brief, positive, on topic: the best
        ("A calm cafe with good coffee and kind staff.", True),
        ("The cafe was loud, the coffee was cold and the chairs were hard.", True),
    )
    r_hat = np.array([[2.0, 3.0], [1.0, 1.0], [-1.0, 0.0]])
    offered = preference_pair(samples, r_hat, "zscore", 5, 8)
    assert (offered.chosen, offered.rejected) == (samples[0].text, samples[2].text)
    pair = preference_pair(samples, r_hat, "zscore", 5, 8, kinds=("offer",))
    assert (pair.chosen, pair.rejected) == (samples[1].text, samples[0].text)
    # a restatement is not an offer: only --reject restatement refuses it
    asked = "Write a review for a plumber who fixed my leak quickly but charged more."
    restated = [
        Candidate(asked, text, 0, W, True)
        for text in (
            "A plumber fixed my leak quick but charged more.",  # one new word in nine
            "He came fast and the pipe holds, but the bill was steep.",
            "Terrible.  Slow, rude and the leak came back within a day.",
        )
    ]
    offer_only = preference_pair(restated, r_hat, "zscore", 5, 8, kinds=("offer",))
    assert offer_only.chosen == restated[0].text
    both = preference_pair(restated, r_hat, "zscore", 5, 8, kinds=("offer", "restatement"))
    assert (both.chosen, both.rejected) == (restated[1].text, restated[0].text)


def test_the_same_candidates_pair_differently_at_another_weighting():
    samples = candidates(
        ("A calm cafe with good coffee and kind staff.", True),  # positive, long
        ("Good coffee, kind staff, calm room.", True),  # brief
        ("The cafe was loud, the coffee was cold and the chairs were hard.", True),
    )
    r_hat = np.array([[2.0, 0.0], [1.0, 2.0], [-1.0, -1.0]])
    drawn = preference_pair(samples, r_hat, "zscore", min_words=5, echo_words=8)
    assert (drawn.chosen, drawn.weights) == (samples[1].text, W)  # 1.8 against 0.4
    positive = preference_pair(samples, r_hat, "zscore", 5, 8, weights=np.array([1.0, 0.0]))
    assert (positive.chosen, positive.rejected) == (samples[0].text, samples[2].text)
    assert positive.weights == (1.0, 0.0)  # the pair is conditioned on the weighting it used


def test_a_selection_floor_chooses_the_pareto_better_of_two_answers_a_corner_ties():
    samples = candidates(
        ("Good coffee and a calm, kind room.", True),  # brief, positive
        ("Cold coffee and a loud, rude room.", True),  # as brief, negative
        ("The cafe was loud, the coffee was cold and the chairs were hard.", True),
    )
    r_hat = np.array([[1.0, 2.0], [-1.0, 2.0], [-1.0, -1.0]])
    brevity = np.array([0.0, 1.0])
    plain = preference_pair(samples, r_hat, "zscore", 5, 8, weights=brevity)
    assert plain.chosen == samples[0].text  # argmax of the tie: the first, whatever it says
    r_hat_swapped = r_hat[[1, 0, 2]]
    swapped = [samples[i] for i in (1, 0, 2)]
    tied = preference_pair(swapped, r_hat_swapped, "zscore", 5, 8, weights=brevity)
    assert tied.chosen == swapped[0].text == samples[1].text  # the negative one
    floored = preference_pair(
        swapped, r_hat_swapped, "zscore", 5, 8, weights=brevity, selection_floor=0.2
    )
    # compared by (0.1, 0.9): 1.9 against 1.7; the pair is still conditioned on the corner
    assert (floored.chosen, floored.rejected) == (samples[0].text, samples[2].text)
    assert floored.weights == (0.0, 1.0)
    # a floor of 1 compares by the uniform weighting, whatever w is
    uniform = preference_pair(
        swapped, r_hat_swapped, "zscore", 5, 8, weights=np.array([1.0, 0.0]), selection_floor=1
    )
    assert (uniform.chosen, uniform.weights) == (samples[0].text, (1.0, 0.0))
    # floored only at mixed weightings, the corner's tie goes to the first again ...
    mixed_only = {"selection_floor": 0.2, "floor_at": "mixed"}
    cornered = preference_pair(
        swapped, r_hat_swapped, "zscore", 5, 8, weights=brevity, **mixed_only
    )
    assert cornered.chosen == samples[1].text
    # ... and a mixed weighting's candidates are still compared by the floored weighting:
    # at (0.05, 0.95) the negative answer, a little briefer, is 2.04 against 1.95 by w; by
    # (0.14, 0.86) it is 1.75 against 1.86
    r_hat_mixed = np.array([[-1.0, 2.2], [1.0, 2.0], [-1.0, -1.0]])
    near = np.array([0.05, 0.95])
    by_w = preference_pair(swapped, r_hat_mixed, "zscore", 5, 8, weights=near)
    assert by_w.chosen == samples[1].text
    mixed = preference_pair(swapped, r_hat_mixed, "zscore", 5, 8, weights=near, **mixed_only)
    assert (mixed.chosen, mixed.weights) == (samples[0].text, (0.05, 0.95))


def test_relabelled_weightings():
    rng = np.random.default_rng(0)
    assert relabelled("clp", (0.3, 0.7), 0, 0.5, rng).tolist() == [[0.3, 0.7]]
    rows = relabelled("clp", (0.2, 0.3, 0.5), 4, 0.5, rng)
    assert rows.shape == (5, 3) and rows[0].tolist() == [0.2, 0.3, 0.5]
    assert np.allclose(rows.sum(axis=1), 1.0) and (rows >= 0).all()
    assert len({tuple(r) for r in rows}) == 5  # fresh draws, none repeating the drawn one
    # soups samples at a corner; the extra weightings are the other corners, each once
    corners = relabelled("soups", (0.0, 1.0, 0.0), 1, 0.5, rng)
    assert corners.shape == (2, 3) and corners[0].tolist() == [0.0, 1.0, 0.0]
    assert corners[1].tolist() in ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    every = relabelled("soups", (0.0, 1.0, 0.0), 5, 0.5, rng)  # at most K - 1 more
    assert sorted(map(tuple, every[1:].tolist())) == [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0)]
    # clp with --corner-share 1: the extra weightings are corners too, the drawn one is kept
    cornered = relabelled("clp", (0.2, 0.3, 0.5), 6, 0.5, rng, corner_share=1.0)
    assert cornered[0].tolist() == [0.2, 0.3, 0.5]
    assert set(map(tuple, cornered[1:].tolist())) <= set(map(tuple, np.eye(3).tolist()))


@pytest.mark.parametrize("method", ["clp", "soups"])
def test_relabelling_forms_more_pairs_from_the_same_samples(
    tmp_path, prompts_file, fresh_base, method
):
    plain = Trainer(
        online_config(tmp_path / "a", prompts_file, method=method, rounds=1), fresh_base()
    )
    plain.run()
    relabel = online_config(
        tmp_path / "b", prompts_file, method=method, rounds=1, relabel_weightings=2
    )
    more = Trainer(relabel, fresh_base())
    more.run()
    [a], [b] = (
        [json.loads(p.read_text()) for p in sorted((t.out / "rounds").glob("*.json"))]
        for t in (plain, more)
    )
    assert a["samples"] == b["samples"]  # the same seed samples the same round

    def pairs(record):
        return {
            (p["prompt"], p["chosen"], p["rejected"], tuple(p["weights"])) for p in record["pairs"]
        }

    # the pairs at the weightings the samples were drawn at, and more at other weightings
    drawn = {(s["prompt"], tuple(s["weights"])) for s in b["samples"]}
    assert {p for p in pairs(b) if (p[0], p[3]) in drawn} == pairs(a)
    extra = [p for p in pairs(b) if (p[0], p[3]) not in drawn]
    assert extra and len(pairs(b)) == len(b["pairs"]) == b["metrics"]["pairs"]
    per_prompt = {prompt: sum(p[0] == prompt for p in pairs(b)) for prompt, _ in drawn}
    assert max(per_prompt.values()) <= (2 if method == "soups" else 3)  # soups: K - 1 = 1 more
    if method == "soups":
        assert {p[3] for p in extra} <= {(1.0, 0.0), (0.0, 1.0)}
    assert "losses/dpo" in metrics_lines(more)[0]


def test_a_corner_share_trains_clp_at_corners_too(tmp_path, prompts_file, fresh_base):
    """--corner-share 1: every round of a clp run samples and pairs at a corner, one objective
    alone, and the run records the share it was trained with."""
    config = online_config(tmp_path, prompts_file, rounds=2, prompts_per_step=4, corner_share=1.0)
    trainer = Trainer(config, fresh_base())
    trainer.run()
    records = [json.loads(p.read_text()) for p in sorted((trainer.out / "rounds").glob("*.json"))]
    drawn = {tuple(s["weights"]) for r in records for s in r["samples"]}
    paired = {tuple(p["weights"]) for r in records for p in r["pairs"]}
    assert drawn == {(1.0, 0.0), (0.0, 1.0)}  # 8 weightings drawn, all corners
    assert paired and paired <= drawn
    assert read_metadata(trainer.out).training["corner_share"] == 1.0


def test_no_pair_without_an_answer_to_choose_or_a_preference():
    samples = candidates(("Dear Mr.", True), ("", True), ("An answer cut off by the", False))
    assert (
        preference_pair(samples, np.array([[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]]), "zscore", 5, 8)
        is None
    )
    same = candidates(("The same good answer, twice over.", True)) * 2
    assert preference_pair(same, np.array([[1.0, 1.0], [1.0, 1.0]]), "zscore", 5, 8) is None
    # a too-short candidate is rejected even when it scores as well as the answer
    with_short = candidates(("The same good answer, twice over.", True), ("Fine.", True))
    pair = preference_pair(with_short, np.array([[1.0, 1.0], [1.0, 1.0]]), "zscore", 5, 8)
    assert (pair.chosen, pair.rejected) == (with_short[0].text, "Fine.")


@pytest.mark.parametrize("method", ["clp", "prompt", "soups"])
def test_two_rounds_change_the_adapters_and_not_the_base(
    tmp_path, prompts_file, fresh_base, method
):
    base = fresh_base()
    frozen = {n: p.detach().clone() for n, p in base.model.named_parameters()}
    trainer = Trainer(online_config(tmp_path, prompts_file, method=method), base)
    before = [p.detach().clone() for p in trainer.parameters]
    trainer.run()
    assert trainer.state.step == 2
    assert_only_the_bank_trained(base.model, method, before, frozen)
    lines = metrics_lines(trainer)
    assert [(m["step"], m["round"]) for m in lines] == [(1, 1), (2, 2)]
    expected = {
        "rewards/positivity",
        "rewards/conciseness",
        "losses/kl",
        "quality/degenerate",
        "quality/echo",
        "quality/offer",
    }
    assert expected | {"losses/dpo", "losses/sft", "pairs"} <= set(lines[0])
    # every sample ran into the token limit: all of them are degenerate by the floor's definition
    assert all(m["quality/degenerate"] == 1.0 and m["pairs"] > 0 for m in lines)
    record = json.loads((trainer.out / "rounds" / "round-0002.p0.json").read_text())
    assert len(record["samples"]) == 2 * 2  # --prompts-per-step 2, --samples 2
    assert {s["prompt"] for s in record["samples"]} <= set(PROMPTS)


def test_the_floor_leaves_a_round_of_unfinished_samples_untrained(
    tmp_path, prompts_file, fresh_base
):
    trainer = Trainer(online_config(tmp_path, prompts_file, min_words=5, rounds=1), fresh_base())
    before = [p.detach().clone() for p in trainer.parameters]
    trainer.run()
    for b, a in zip(before, trainer.parameters, strict=True):
        assert torch.equal(b, a)
    [line] = metrics_lines(trainer)
    assert line["pairs"] == 0 and line["quality/degenerate"] == 1.0 and "losses/dpo" not in line


def test_a_round_far_from_its_prompts_is_left_untrained(tmp_path, prompts_file, fresh_base):
    # the tiny random model's samples are strings of unrelated tokens: none is near its prompt
    config = online_config(tmp_path, prompts_file, off_topic_similarity=0.5, rounds=1)
    trainer = Trainer(config, fresh_base())
    before = [p.detach().clone() for p in trainer.parameters]
    trainer.run()
    assert all(torch.equal(b, a) for b, a in zip(before, trainer.parameters, strict=True))
    [line] = metrics_lines(trainer)
    assert line["pairs"] == 0 and "losses/dpo" not in line
    trained = Trainer(online_config(tmp_path / "on", prompts_file, rounds=1), fresh_base())
    trained.run()  # the same round without the rule trains
    assert metrics_lines(trained)[0]["pairs"] > 0


def test_reject_leaves_a_round_without_offers_or_restatements_as_it_was(
    tmp_path, prompts_file, fresh_base
):
    # the tiny random model's samples are strings of unrelated tokens: neither kind
    plain = Trainer(online_config(tmp_path / "a", prompts_file, rounds=1), fresh_base())
    plain.run()
    config = online_config(tmp_path / "b", prompts_file, rounds=1, reject="offer,restatement")
    rejecting = Trainer(config, fresh_base())
    rejecting.run()
    [a], [b] = metrics_lines(plain), metrics_lines(rejecting)
    assert a["pairs"] == b["pairs"] > 0 and b["quality/offer"] == 0.0
    pairs = json.loads((rejecting.out / "rounds" / "round-0001.p0.json").read_text())["pairs"]
    assert pairs == json.loads((plain.out / "rounds" / "round-0001.p0.json").read_text())["pairs"]


def test_a_sample_that_stopped_is_ended(tmp_path, prompts_file, fresh_base):
    base = fresh_base()
    # every token stops: each response is its stop token alone, an empty finished answer
    base.model.generation_config.eos_token_id = list(range(len(base.tokenizer)))
    trainer = Trainer(online_config(tmp_path, prompts_file), base)
    sampled = trainer.sample_responses(step_rng(0, 0), temperature=1.0)
    assert sampled.ended == [True] * 4 and sampled.texts == [""] * 4
    base.model.generation_config.eos_token_id = 2  # back to the one stop token: never drawn
    assert trainer.sample_responses(step_rng(0, 0), temperature=1.0).ended == [False] * 4


def test_sample_min_words_samples_rounds_with_the_decoding_floor(
    tmp_path, prompts_file, fresh_base
):
    base = fresh_base()
    stop_at_once_else_word(base)
    plain = Trainer(online_config(tmp_path / "plain", prompts_file), base)
    assert plain.sample_responses(step_rng(0, 0), temperature=1.0).texts == [""] * 4
    floored = Trainer(online_config(tmp_path / "floor", prompts_file, sample_min_words=3), base)
    sampled = floored.sample_responses(step_rng(0, 0), temperature=1.0)
    assert sampled.texts == ["word word word"] * 4 and sampled.ended == [True] * 4


def test_resume_in_the_middle_of_a_round_reproduces_an_uninterrupted_run(
    tmp_path, prompts_file, fresh_base, monkeypatch
):
    def config(directory, **overrides):
        return online_config(
            directory, prompts_file, updates_per_round=2, batch_size=1, **overrides
        )

    straight = Trainer(config(tmp_path / "a"), fresh_base())
    straight.run()
    interrupted = Trainer(config(tmp_path / "b"), fresh_base())
    stop_at_step(monkeypatch, interrupted, 3)  # Ctrl-C in the second update of round 2
    with pytest.raises(SystemExit):
        interrupted.run()
    resumed = Trainer(config(tmp_path / "b", resume=True), fresh_base())
    assert resumed.state.step == 3
    resumed.run()
    for a, b in zip(straight.parameters, resumed.parameters, strict=True):
        assert_close(a, b)
    lines = metrics_lines(resumed)
    assert [(m["step"], m["round"]) for m in lines] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert all("losses/dpo" in m for m in lines)  # every step trained
    assert lines == metrics_lines(straight)


def test_a_finished_run_resumed_with_more_rounds_ends_where_a_longer_run_does(
    tmp_path, prompts_file, fresh_base
):
    straight = Trainer(online_config(tmp_path / "a", prompts_file, rounds=2), fresh_base())
    straight.run()
    first = online_config(tmp_path / "b", prompts_file, rounds=1, checkpoint_every=1)
    Trainer(first, fresh_base()).run()
    longer = Trainer(
        online_config(tmp_path / "b", prompts_file, rounds=2, resume=True), fresh_base()
    )
    assert longer.state.step == straight.config.updates_per_round  # round 1 is done
    longer.run()
    for a, b in zip(straight.parameters, longer.parameters, strict=True):
        assert_close(a, b)
    assert metrics_lines(longer) == metrics_lines(straight)


def test_init_from_starts_from_saved_adapters(tmp_path, prompts_file, fresh_base):
    first = Trainer(online_config(tmp_path / "a", prompts_file, rounds=1), fresh_base())
    saved = first.run()
    # at learning rate 0 a round changes nothing: the run ends where it started
    second = Trainer(
        online_config(tmp_path / "b", prompts_file, lr=0.0, init_from=str(saved)), fresh_base()
    )
    assert all(not p.any() for p in second.parameters[1::2])  # fresh: every B is zero
    # the saved adapters' calibration is kept, and no base pool is sampled for a new one
    assert second.calibration == first.calibration
    assert not (tmp_path / "b" / "pool.jsonl").exists()
    second.run()
    assert load_calibration(tmp_path / "b" / "run") == first.calibration
    assert "losses/dpo" in metrics_lines(second)[0]
    for a, b in zip(first.parameters, second.parameters, strict=True):
        assert torch.equal(a, b)
    other_rank = Trainer(
        online_config(tmp_path / "c", prompts_file, rank=3, init_from=str(saved)), fresh_base()
    )
    with pytest.raises(UserError, match="rank 2, alpha 8, not the .* rank 3"):
        other_rank.run()


def test_init_from_adapters_trained_on_other_objectives(tmp_path, prompts_file, fresh_base, capsys):
    first = Trainer(online_config(tmp_path / "a", prompts_file, rounds=1), fresh_base())
    saved = first.run()
    # the same bank shape on redefined objectives: adapter k starts objective k, said on stderr,
    # and the saved calibration, which does not cover the new objectives, gives way to one fit
    # on a base pool
    renamed = Trainer(
        online_config(
            tmp_path / "b",
            prompts_file,
            objectives="positivity,brevity",
            init_from=str(saved),
            lr=0.0,
        ),
        fresh_base(),
    )
    assert set(renamed.calibration.objectives) == {"positivity", "brevity"}
    assert (tmp_path / "b" / "pool.jsonl").exists()
    renamed.run()
    assert f"--init-from {saved}: positivity from positivity, brevity from conciseness" in (
        capsys.readouterr().err
    )
    for a, b in zip(first.parameters, renamed.parameters, strict=True):
        assert torch.equal(a, b)
    # a bank with another number of objectives is still refused
    three = Trainer(
        online_config(
            tmp_path / "c",
            prompts_file,
            objectives="positivity,brevity,answer_relevance",
            init_from=str(saved),
        ),
        fresh_base(),
    )
    with pytest.raises(UserError, match="objectives positivity, conciseness, variant"):
        three.run()


def test_bad_online_config_is_refused():
    with pytest.raises(UserError, match="at least 2 samples per prompt to form a pair"):
        TrainConfig(algo="online-dpo", samples=1)
    with pytest.raises(UserError, match="updates_per_round must be at least 1, got 0"):
        TrainConfig(algo="online-dpo", updates_per_round=0)
    with pytest.raises(UserError, match="rounds must be at least 1"):
        TrainConfig(algo="online-dpo", rounds=0)
    with pytest.raises(UserError, match="min_words must not be negative"):
        TrainConfig(algo="online-dpo", min_words=-1)
    with pytest.raises(UserError, match="echo_words must not be negative"):
        TrainConfig(algo="online-dpo", echo_words=-1)
    with pytest.raises(UserError, match=r"off_topic_similarity must be in \[0, 1\) \(0: off\)"):
        TrainConfig(algo="online-dpo", off_topic_similarity=1.5)
    with pytest.raises(
        UserError, match="reject 'refusal' is unknown; choose from offer, restatement"
    ):
        TrainConfig(algo="online-dpo", reject="offer,refusal")
    with pytest.raises(UserError, match="reject is used only by online-dpo"):
        TrainConfig(algo="dpo", reject="offer")
    with pytest.raises(UserError, match="relabel_weightings must not be negative"):
        TrainConfig(algo="online-dpo", relabel_weightings=-1)
    with pytest.raises(UserError, match=r"selection_floor must be in \[0, 1\] \(0: off\), got 1.5"):
        TrainConfig(algo="online-dpo", selection_floor=1.5)
    with pytest.raises(UserError, match="selection_floor is used only by online-dpo"):
        TrainConfig(algo="dpo", selection_floor=0.2)
    with pytest.raises(UserError, match="selection_floor_at 'corners' is unknown; choose one of"):
        TrainConfig(algo="online-dpo", selection_floor=0.5, selection_floor_at="corners")
    with pytest.raises(UserError, match="selection_floor_at needs a selection_floor above 0"):
        TrainConfig(algo="online-dpo", selection_floor_at="mixed")
    with pytest.raises(UserError, match="relabel_weightings is used only by online-dpo"):
        TrainConfig(algo="dpo", relabel_weightings=2)
    with pytest.raises(UserError, match="init_from is used only by online-dpo"):
        TrainConfig(algo="dpo", init_from="assets/adapters/clp")
    with pytest.raises(UserError, match="sample_min_words must not be negative, got -1"):
        TrainConfig(algo="online-dpo", sample_min_words=-1)
    with pytest.raises(UserError, match="sample_min_words is used only by rloo and online-dpo"):
        TrainConfig(algo="dpo", sample_min_words=5)
    with pytest.raises(UserError, match="sampler is used only by online-dpo"):
        TrainConfig(algo="rloo", sampler="llamacpp")
    with pytest.raises(UserError, match="sampler 'vllm' is unknown; choose one of torch, llamacpp"):
        TrainConfig(algo="online-dpo", sampler="vllm")


def test_a_cut_off_sample_offers_its_complete_sentences(fresh_base, prompts_file, tmp_path):
    """Every sample cut by the token limit is degenerate, but its first sentences are complete
    answers: the round still forms a pair, and its chosen answer is such a prefix."""
    trainer = Trainer(online_config(tmp_path, prompts_file), fresh_base())
    cut = "The cafe was warm and the coffee was strong. The staff smiled at every guest. And then"
    short = "Cold and slow service, sadly not worth"
    samples = [
        Candidate(PROMPTS[0], cut, 8, (0.5, 0.5), ended=False),
        Candidate(PROMPTS[0], short, 8, (0.5, 0.5), ended=False),
    ]
    r_hat = np.array([[0.0, 0.0], [1.0, 1.0]])
    groups = with_prefixes(trainer, samples, r_hat, k=2)
    assert len(groups) == 1
    candidates, rows = groups[0]
    assert [c.text for c in candidates[2:]] == [
        "The cafe was warm and the coffee was strong.",
        "The cafe was warm and the coffee was strong. The staff smiled at every guest.",
    ]
    assert rows.shape == (4, 2) and all(c.ended for c in candidates[2:])
    # nothing finished
    assert preference_pair(samples, r_hat, "zscore", min_words=5, echo_words=8) is None
    pair = preference_pair(candidates, rows, "zscore", min_words=5, echo_words=8)
    assert pair is not None and pair.chosen in [c.text for c in candidates[2:]]
