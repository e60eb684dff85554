import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from training_fixtures import OBJECTIVES, PROMPTS, assert_only_the_bank_trained, tiny_config

from steering.errors import UserError
from steering.model.generate import sequence_logprobs
from steering.model.mixing import conditioned, read_metadata
from steering.training.config import TrainConfig
from steering.training.losses import (
    dpo_loss,
    percentile_ranks,
    rloo_advantages,
    scalarise,
    sequence_kl,
    sft_loss,
)
from steering.training.records import PreferencePair, SftExample
from steering.training.trainer import Trainer


def test_percentile_ranks_by_hand():
    rewards = np.array([[0.1, 5.0], [0.3, 5.0], [0.2, -1.0], [0.9, 7.0]])
    # column 0 ranks 1, 3, 2, 4; column 1: -1 first, the two 5.0 share ranks 2 and 3, 7 last
    expected = np.array([[0, 1.5], [2, 1.5], [1, 0], [3, 3]]) / 3
    np.testing.assert_allclose(percentile_ranks(rewards), expected)
    np.testing.assert_allclose(percentile_ranks(rewards[:1]), [[0.5, 0.5]])


def test_rank_selection_balances_objectives_of_different_spread():
    # objective 2's z-scores spread 10x wider: with zscore it wins even at w = (0.8, 0.2);
    # with rank both objectives span [0, 1] and w = (0.8, 0.2) picks the best on objective 1
    r_hat = np.array([[1.0, 0.0], [0.0, 10.0], [0.9, 1.0]])
    w = np.array([0.8, 0.2])
    assert int(np.argmax(r_hat @ w)) == 1
    assert int(np.argmax(percentile_ranks(r_hat) @ w)) == 0
    with pytest.raises(UserError, match="selection 'best' is unknown"):
        TrainConfig(selection="best")


def test_sft_loss_modes_by_hand():
    # a one-token target with log-prob -3 and a three-token target with log-probs -1 each
    logprobs = torch.tensor([[-3.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    # sequence: mean of the per-target means (3 and 1) = 2; token: 6 nats over 4 tokens = 1.5
    assert_close(sft_loss(logprobs, mask, "sequence"), torch.tensor(2.0))
    assert_close(sft_loss(logprobs, mask, "token"), torch.tensor(1.5))
    with pytest.raises(UserError, match="sft_loss 'sum' is unknown"):
        TrainConfig(sft_loss="sum")


def test_rloo_advantages_by_hand():
    # k = 3 rewards 1, 2, 3: each baseline is the mean of the other two,
    # A = (1 - 2.5, 2 - 2, 3 - 1.5) = (-1.5, 0, 1.5)
    assert_close(rloo_advantages(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[-1.5, 0.0, 1.5]]))
    # k = 2: A_i = R_i - R_other, so (4 - 0, 0 - 4)
    assert_close(rloo_advantages(torch.tensor([[4.0, 0.0]])), torch.tensor([[4.0, -4.0]]))


def test_sequence_kl_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, -9.0]])
    mask = torch.tensor([[1, 1, 0]])
    # (−1 − −1.5) + (−2 − −1) = 0.5 − 1 = −0.5; the third token is padding
    assert_close(sequence_kl(logp, ref, mask), torch.tensor([-0.5]))


def test_dpo_loss_by_hand():
    # pair 1: the policy raised the chosen by 2 nats over the reference and lowered the rejected
    # by 1, margin 3; pair 2: margin 0. With beta 0.5: (-log sigmoid(1.5) - log sigmoid(0)) / 2
    chosen, rejected = torch.tensor([-8.0, -5.0]), torch.tensor([-11.0, -6.0])
    ref_chosen, ref_rejected = torch.tensor([-10.0, -5.0]), torch.tensor([-10.0, -6.0])
    expected = (np.log1p(np.exp(-1.5)) + np.log(2.0)) / 2
    loss = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    assert_close(loss, torch.tensor(expected, dtype=torch.float32))


def test_dpo_pairs_prefer_the_best_candidate_for_w_over_the_worst(
    tiny_base, tmp_path, prompts_file
):
    config = tiny_config(tmp_path, prompts_file, algo="dpo", selection="rank")
    trainer = Trainer(config, tiny_base)
    candidates, r_hat = trainer.round_pool(0)
    examples = trainer.select(candidates, r_hat, 0)
    assert len(examples) == len(PROMPTS) * trainer.config.weightings_per_prompt
    text_rows = {(c.prompt, c.text): i for i, c in enumerate(candidates)}
    for pair in examples:
        assert isinstance(pair, PreferencePair)
        rows = [i for i, c in enumerate(candidates) if c.prompt == pair.prompt]
        value = percentile_ranks(r_hat[rows]) @ np.array(pair.weights)
        assert value[rows.index(text_rows[pair.prompt, pair.chosen])] == value.max()
        assert value[rows.index(text_rows[pair.prompt, pair.rejected])] == value.min()


def test_dpo_sft_weight_adds_the_chosen_responses_nll(make_tiny, tokenizer, tmp_path, prompts_file):
    from steering.model.policy import BaseModel, BaseModelIdentity

    def trainer(weight):
        base = BaseModel(make_tiny(), tokenizer, BaseModelIdentity("tiny-llama", "0" * 64))
        return Trainer(tiny_config(tmp_path, prompts_file, algo="dpo", sft_weight=weight), base)

    plain, anchored = trainer(0.0), trainer(1.0)
    examples = plain.select(*plain.round_pool(0), 0)[:4]
    args, conditioning = anchored.encode_examples(
        [e.prompt for e in examples],
        np.stack([e.weights for e in examples]),
        [e.chosen for e in examples],
        [e.chosen_ended for e in examples],
    )
    with torch.no_grad(), conditioned(anchored.unwrapped, anchored.bank, conditioning.weights):
        expected = sft_loss(sequence_logprobs(anchored.model, *args), args[3], "sequence")
    plain_metrics, anchored_metrics = plain.dpo_step(examples), anchored.dpo_step(examples)
    assert anchored_metrics["losses/sft"] == pytest.approx(float(expected), rel=1e-5)
    # the same model and batch: the preference term is the same, the update is not
    assert plain_metrics["losses/dpo"] == pytest.approx(anchored_metrics["losses/dpo"], rel=1e-6)
    assert any(
        not torch.equal(a, b) for a, b in zip(plain.parameters, anchored.parameters, strict=True)
    )


def test_soups_trains_on_fewer_corners_when_the_budget_asks(tiny_base, tmp_path, prompts_file):
    config = tiny_config(tmp_path, prompts_file, method="soups", weightings_per_prompt=1)
    trainer = Trainer(config, tiny_base)
    pool = trainer.round_pool(0)
    examples = trainer.select(*pool, 0)
    assert len(examples) == len(PROMPTS)  # one corner per prompt, not both
    assert all(isinstance(e, SftExample) for e in examples)
    assert len(trainer.rsf_schedule()) == 1  # 4 examples, batch 4
    corners = set()
    for seed in range(4):  # the corner is drawn per prompt and seed: both get drawn
        trainer.config.seed = seed
        corners |= {e.weights for e in trainer.select(*pool, 0)}
    assert corners == {(1.0, 0.0), (0.0, 1.0)}
    trainer.config.weightings_per_prompt = 5  # more than K: every corner once
    assert len(trainer.select(*pool, 0)) == 2 * len(PROMPTS)


def test_scalarise_by_hand():
    # 0.25 * 2 + 0.75 * (-1) = -0.25
    assert_close(
        scalarise(torch.tensor([[0.25, 0.75]]), torch.tensor([[2.0, -1.0]])), torch.tensor([-0.25])
    )


@pytest.mark.parametrize(
    "method,algo",
    [("clp", "rloo"), ("clp", "rsf"), ("prompt", "rsf"), ("soups", "rloo"), ("clp", "dpo")],
)
def test_two_steps_change_adapters_and_not_the_base(
    tiny_base, tmp_path, prompts_file, method, algo
):
    # rsf and dpo: 4 prompts x 3 weightings = 12 examples in batches of 6 -> two steps
    config = tiny_config(tmp_path, prompts_file, method=method, algo=algo, steps=2, batch_size=6)
    frozen = {n: p.detach().clone() for n, p in tiny_base.model.named_parameters()}
    trainer = Trainer(config, tiny_base)
    before = [p.detach().clone() for p in trainer.parameters]
    if algo == "rloo":
        trainer.run_rloo()
    else:
        assert len(trainer.rsf_schedule()) == 2
        trainer.run_rsf()
    assert trainer.state.step == 2
    assert_only_the_bank_trained(tiny_base.model, method, before, frozen)


def test_run_writes_adapter_calibration_and_metrics(tiny_base, tmp_path, prompts_file):
    config = tiny_config(tmp_path, prompts_file, algo="rloo", steps=2)
    out = Trainer(config, tiny_base).run()
    meta = read_metadata(out)
    assert meta.spec.objectives == ("positivity", "conciseness")
    assert meta.training["seed"] == 0 and meta.training["steps_done"] == 2
    assert (out / "calibration.json").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    assert {"rewards/positivity", "rewards/conciseness", "losses/kl"} <= set(lines[0])


def test_resume_reproduces_an_uninterrupted_run(make_tiny, tokenizer, tmp_path, prompts_file):
    from steering.model.policy import BaseModel, BaseModelIdentity

    def fresh():
        return BaseModel(make_tiny(), tokenizer, BaseModelIdentity("tiny-llama", "0" * 64))

    straight = Trainer(tiny_config(tmp_path / "a", prompts_file, algo="rloo", steps=4), fresh())
    straight.run_rloo()
    first = Trainer(
        tiny_config(tmp_path / "b", prompts_file, algo="rloo", steps=2, checkpoint_every=2), fresh()
    )
    first.run_rloo()
    resumed = Trainer(
        tiny_config(tmp_path / "b", prompts_file, algo="rloo", steps=4, resume=True), fresh()
    )
    assert resumed.state.step == 2
    resumed.run_rloo()
    for a, b in zip(straight.parameters, resumed.parameters, strict=True):
        assert_close(a, b)
    logged = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in logged] == [1, 2, 3, 4]


@pytest.fixture
def rloo_trainer(make_tiny, tokenizer, tmp_path, prompts_file):
    """A fresh rloo Trainer on a new tiny model, writing to the test's one run directory."""
    from steering.model.policy import BaseModel, BaseModelIdentity

    def trainer(**overrides):
        base = BaseModel(make_tiny(), tokenizer, BaseModelIdentity("tiny-llama", "0" * 64))
        return Trainer(tiny_config(tmp_path, prompts_file, algo="rloo", **overrides), base)

    return trainer


def test_resume_after_a_kill_logs_each_step_once(rloo_trainer, tmp_path):
    trainer = rloo_trainer
    # checkpoint at step 2, then killed after logging step 3: its checkpoint never came
    trainer(steps=3, checkpoint_every=2).run_rloo()
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [1, 2, 3]
    resumed = trainer(steps=4, resume=True)
    assert resumed.state.step == 2
    resumed.run_rloo()
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [1, 2, 3, 4]


def test_a_resumed_run_records_the_whole_time_and_the_first_command(
    rloo_trainer, tmp_path, monkeypatch
):
    trainer = rloo_trainer
    monkeypatch.setattr(sys, "argv", ["steering", "train", "--steps", "4"])
    first = trainer(steps=2, checkpoint_every=2)
    first.started -= 100.0  # as if the first piece had trained for 100 s before being stopped
    first.run_rloo()
    monkeypatch.setattr(sys, "argv", ["steering", "train", "--steps", "4", "--resume"])
    resumed = trainer(steps=4, resume=True)
    resumed.started -= 50.0
    resumed.run()
    training = json.loads((tmp_path / "run" / "adapter.json").read_text())["training"]
    assert 150.0 <= training["seconds"] < 200.0
    assert training["command"] == "python -m steering train --steps 4"
    assert training["resumes"] == 1


def test_a_run_resumed_for_longer_records_both_commands(rloo_trainer, tmp_path, monkeypatch):
    trainer = rloo_trainer
    first = "python -m steering train --steps 2"
    monkeypatch.setattr(sys, "argv", first.split(" ")[2:])
    trainer(steps=2, checkpoint_every=2).run()
    monkeypatch.setattr(sys, "argv", ["steering", "train", "--steps", "4", "--resume"])
    trainer(steps=4, resume=True).run()
    training = json.loads((tmp_path / "run" / "adapter.json").read_text())["training"]
    # the first command alone would train 2 steps: the record runs both pieces
    both = f"{first} && python -m steering train --steps 4 --resume"
    assert training["command"] == both
    assert training["steps_done"] == 4 and training["resumes"] == 1
    trainer(steps=4, resume=True).run()  # the same command again adds nothing to the record
    training = json.loads((tmp_path / "run" / "adapter.json").read_text())["training"]
    assert training["command"] == both and training["resumes"] == 2


def test_bad_config_is_refused():
    with pytest.raises(UserError, match="not trainable"):
        TrainConfig(method="logits")
    with pytest.raises(UserError, match="leave-one-out"):
        TrainConfig(algo="rloo", samples=1)
    for share in (-0.1, 1.5):
        with pytest.raises(UserError, match=r"corner_share must be in \[0, 1\]"):
            TrainConfig(corner_share=share)
    with pytest.raises(UserError, match="soups trains at the corners only"):
        TrainConfig(method="soups", corner_share=0.5)


@pytest.mark.slow
def test_accelerate_launch_two_processes(tmp_path, prompts_file, make_tiny, tokenizer):
    """`accelerate launch` runs the unchanged trainer on two CPU processes."""
    base_dir = tmp_path / "tiny-base"
    make_tiny().save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "steering", "train",
        "--method", "clp", "--algo", "rloo", "--steps", "2", "--objectives", OBJECTIVES,
        "--prompts", str(prompts_file), "--out", str(out), "--pool", str(tmp_path / "pool.jsonl"),
        "--pool-samples", "2", "--max-new-tokens", "6", "--prompts-per-step", "2", "--samples", "2",
        "--rank", "2", "--base-model", str(base_dir), "--dtype", "float32",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]  # one line per step, from the main process only
    assert read_metadata(out).training["steps_done"] == 2
