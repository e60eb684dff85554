"""The asynchronous online-dpo sampler: its rounds, the files the learner and the sampler meet
in, and its lag. The sampler loop runs on a thread with the torch backend (the file protocol does
not depend on the backend); one slow test runs it on llama.cpp in its own process."""

import json
import threading

import pytest
import torch
from torch.testing import assert_close
from training_fixtures import metrics_lines, stop_at_once_else_word, stop_at_step
from training_fixtures import online_config as two_round_config

from steering.model.mixing import load_bank
from steering.model.steerer import TorchSteerer
from steering.serve.llamacpp_sampler import (
    AsyncSampler,
    policy_path,
    sample_round_with,
    sample_rounds,
    samples_path,
    train_on_llamacpp,
    wait_for,
)
from steering.training.trainer import Trainer, step_rng


def online_config(tmp_path, prompts_file, **overrides):
    return two_round_config(tmp_path, prompts_file, **{"rounds": 3, **overrides})


def test_the_sampler_draws_and_samples_what_the_learner_would(tmp_path, prompts_file, tiny_base):
    trainer = Trainer(online_config(tmp_path, prompts_file), tiny_base)
    steerer = TorchSteerer("clp", tiny_base, trainer.objectives, "clp", None, None)
    sampled = sample_round_with(steerer, trainer.config, trainer.prompts, 2, trainer.objective_set)
    own = trainer.sample_responses(step_rng(0, 2), trainer.config.temperature)
    assert [s.prompt for s in sampled.samples] == own.prompts
    assert [s.weights for s in sampled.samples] == [tuple(w) for w in own.weights.tolist()]
    assert [s.text for s in sampled.samples] == own.texts  # the same policy, the same seed
    assert [s.ended for s in sampled.samples] == own.ended == [False] * 4
    assert sampled.policy_rounds == 1  # round 2 samples from the policy after round 1
    assert set(sampled.raw) == set(trainer.objectives)


def test_the_sampler_decodes_with_the_rounds_floor(tmp_path, prompts_file, fresh_base):
    base = fresh_base()
    stop_at_once_else_word(base)
    config = online_config(tmp_path, prompts_file, sample_min_words=3)
    trainer = Trainer(config, base)
    steerer = TorchSteerer("clp", base, trainer.objectives, "clp", None, None)
    sampled = sample_round_with(steerer, config, trainer.prompts, 0, trainer.objective_set)
    assert [(s.text, s.ended) for s in sampled.samples] == [("word word word", True)] * 4


def test_the_learner_stops_waiting_for_a_sampler_that_stopped(tmp_path):
    assert not wait_for(tmp_path / "never.json", lambda: False)
    (tmp_path / "late.json").write_text("{}")
    assert wait_for(tmp_path / "late.json", lambda: False)  # written, then it stopped


def run_async(trainer: Trainer, backend_for) -> Trainer:
    """Train with a sampler thread beside the learner."""
    config = trainer.config
    stop = threading.Event()
    start = trainer.state.step // config.updates_per_round
    sampler = threading.Thread(
        target=sample_rounds, args=(config, start, backend_for, lambda: not stop.is_set())
    )
    sampler.start()
    try:
        trainer.run(AsyncSampler(sampler.is_alive))
    finally:
        stop.set()
        sampler.join()
    return trainer


@pytest.fixture
def backend_for(fresh_base):
    """Each published policy on a tiny torch model of its own, as llama.cpp would load it."""

    def backend(policy):
        base = fresh_base()
        metadata = load_bank(base.model, "clp", policy, base.identity)
        return TorchSteerer("clp", base, ("positivity", "conciseness"), "clp", metadata, policy)

    return backend


def test_rounds_sampled_one_round_behind_train_the_adapters(
    tmp_path, prompts_file, fresh_base, backend_for
):
    trainer = Trainer(online_config(tmp_path, prompts_file), fresh_base())
    before = [p.detach().clone() for p in trainer.parameters]
    run_async(trainer, backend_for)
    assert any(not torch.equal(b, a) for b, a in zip(before, trainer.parameters, strict=True))
    lines = metrics_lines(trainer)
    assert [m["rounds/lag"] for m in lines] == [0, 1, 1]
    assert all(m["pairs"] > 0 and "losses/dpo" in m for m in lines)
    written = [json.loads(samples_path(trainer.out, i).read_text()) for i in range(3)]
    assert [w["policy_rounds"] for w in written] == [0, 0, 1]
    # the first policy went when the third was published: the sampler was done with it
    published = sorted(p.name for p in policy_path(trainer.out, 0).parent.iterdir())
    assert published == ["after-0001", "after-0002"]


def test_an_asynchronous_run_resumed_mid_round_ends_where_the_uninterrupted_one_does(
    tmp_path, prompts_file, fresh_base, backend_for, monkeypatch
):
    def config(directory, **overrides):
        return online_config(directory, prompts_file, updates_per_round=2, **overrides)

    straight = run_async(Trainer(config(tmp_path / "a"), fresh_base()), backend_for)
    interrupted = Trainer(config(tmp_path / "b"), fresh_base())
    stop_at_step(monkeypatch, interrupted, 3)  # Ctrl-C in the second update of round 2
    with pytest.raises(SystemExit):
        run_async(interrupted, backend_for)
    resumed = Trainer(config(tmp_path / "b", resume=True), fresh_base())
    assert resumed.state.step == 3
    run_async(resumed, backend_for)
    for a, b in zip(straight.parameters, resumed.parameters, strict=True):
        assert_close(a, b)
    logged = [(r.out / "metrics.jsonl").read_text().splitlines() for r in (straight, resumed)]
    assert logged[0] == logged[1] and len(logged[0]) == 6


@pytest.mark.slow
def test_train_on_llamacpp_with_the_shipped_model(tmp_path, prompts_file):
    """Three rounds on the real model: llama.cpp samples in a process of its own, the third
    round from a newer policy than the first two (the older one's adapters are released)."""
    config = online_config(tmp_path, prompts_file, base_model="", max_new_tokens=12, rank=4)
    out = train_on_llamacpp(config)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["rounds/lag"] for m in lines] == [0, 1, 1]
    written = [json.loads(samples_path(out, i).read_text()) for i in range(3)]
    assert [w["policy_rounds"] for w in written] == [0, 0, 1]
    assert (out / "adapter.safetensors").is_file()
