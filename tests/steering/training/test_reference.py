import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close
from training_fixtures import metrics_lines, online_config, stop_at_step

from steering.errors import UserError
from steering.model.mixing import ADAPTER_FILE, bank_parameters, load_bank
from steering.training.config import TrainConfig
from steering.training.online import PolicySampler, start_from
from steering.training.records import sample_request, split_request
from steering.training.reference import REFERENCE_BANK
from steering.training.trainer import Trainer, step_rng


@pytest.fixture
def saved(tmp_path, prompts_file, fresh_base):
    """Adapters trained for a round: what a run starts --init-from."""
    return Trainer(online_config(tmp_path / "a", prompts_file, rounds=1), fresh_base()).run()


def started_from(saved, directory, prompts_file, fresh_base, **overrides) -> Trainer:
    config = online_config(directory, prompts_file, init_from=str(saved), **overrides)
    return Trainer(config, fresh_base())


@pytest.mark.parametrize("reference", ["base", "init"])
def test_the_first_pairs_are_measured_against_the_reference(
    saved, tmp_path, prompts_file, fresh_base, reference
):
    run = started_from(saved, tmp_path / "b", prompts_file, fresh_base, reference=reference)
    run.run()
    first = metrics_lines(run)[0]
    if reference == "init":
        # the policy is its reference before its first update: no margin, DPO's loss is log 2
        assert first["rewards/margin"] == pytest.approx(0.0, abs=1e-6)
        assert first["losses/dpo"] == pytest.approx(math.log(2), abs=1e-6)
        # and once it has trained, its margin against the frozen reference is no longer 0
        assert abs(metrics_lines(run)[-1]["rewards/margin"]) > 1e-4
    else:  # the trained adapters already prefer some answers to others, as the base does not
        assert abs(first["rewards/margin"]) > 1e-4
        assert first["losses/dpo"] != pytest.approx(math.log(2), abs=1e-4)


def banks(directory, fresh_base) -> list[torch.Tensor]:
    """The adapters saved in `directory`, loaded into a fresh model, in the model's order."""
    base = fresh_base()
    load_bank(base.model, "saved", directory, base.identity)
    return bank_parameters(base.model, "saved")


def test_the_reference_stays_the_saved_adapters_and_is_not_saved(
    saved, tmp_path, prompts_file, fresh_base
):
    run = started_from(saved, tmp_path / "b", prompts_file, fresh_base, reference="init")
    out = run.run()
    reference = bank_parameters(run.unwrapped, REFERENCE_BANK)
    assert all(not p.requires_grad for p in reference)
    assert_close(reference, banks(saved, fresh_base))
    trained = [p.detach() for p in run.parameters]
    assert any(not torch.equal(a, b) for a, b in zip(reference, trained, strict=True))
    # the run's adapter file holds its own bank only, as a run on the base reference's does
    assert load_file(str(out / ADAPTER_FILE)).keys() == load_file(str(saved / ADAPTER_FILE)).keys()
    assert_close(banks(out, fresh_base), trained)


def test_a_resumed_run_keeps_the_reference(saved, tmp_path, prompts_file, fresh_base, monkeypatch):
    overrides = dict(reference="init", updates_per_round=2, batch_size=1)
    straight = started_from(saved, tmp_path / "b", prompts_file, fresh_base, **overrides)
    straight.run()
    interrupted = started_from(saved, tmp_path / "c", prompts_file, fresh_base, **overrides)
    stop_at_step(monkeypatch, interrupted, 3)
    with pytest.raises(SystemExit):
        interrupted.run()
    resumed = started_from(
        saved, tmp_path / "c", prompts_file, fresh_base, resume=True, **overrides
    )
    resumed.run()
    for a, b in zip(straight.parameters, resumed.parameters, strict=True):
        assert_close(a, b)
    assert metrics_lines(resumed) == metrics_lines(straight)


def test_a_run_resumes_only_against_the_reference_it_started_with(
    saved, tmp_path, prompts_file, fresh_base
):
    overrides = dict(rounds=1, checkpoint_every=1)
    first = started_from(saved, tmp_path / "b", prompts_file, fresh_base, **overrides)
    first.run()  # with the base reference
    with pytest.raises(UserError, match="trained against another DPO reference"):
        started_from(
            saved, tmp_path / "b", prompts_file, fresh_base, reference="init", resume=True
        ).run()
    second = started_from(saved, tmp_path / "c", prompts_file, fresh_base, reference="init")
    second.run()
    with pytest.raises(UserError, match="trained against another DPO reference"):
        started_from(saved, tmp_path / "c", prompts_file, fresh_base, resume=True).run()
    # the adapters it started from changed since (here: overwritten by the run's own, as a run
    # started from its own --out would be): a reference other than the one it trained against
    shutil.copy(second.out / ADAPTER_FILE, saved / ADAPTER_FILE)
    again = dict(reference="init", resume=True, rounds=2)
    with pytest.raises(UserError, match="trained against another DPO reference"):
        started_from(saved, tmp_path / "c", prompts_file, fresh_base, **again).run()


def test_reference_samples_come_from_the_reference_and_compete_for_the_pairs(
    saved, tmp_path, prompts_file, fresh_base
):
    overrides = dict(reference="init", reference_samples=1)

    def peaked():  # the tiny model's next-token distribution is nearly flat: sharpen it
        base = fresh_base()
        with torch.no_grad():
            base.model.lm_head.weight.mul_(1000.0)
        return base

    trainer = started_from(saved, tmp_path / "b", prompts_file, peaked, **overrides)
    start_from(trainer, saved)
    with torch.no_grad():  # a policy far from its reference, so the two sample differently
        generator = torch.Generator().manual_seed(0)
        for p in trainer.parameters:
            p.add_(torch.randn(p.shape, generator=generator))
    sampled = PolicySampler().samples(trainer, 1)
    texts = [s.text for s in sampled.samples]
    request = sample_request(trainer.config, trainer.prompts, 2, step_rng(0, 1))
    own, theirs = split_request(request, 2, 1)
    temperature = trainer.config.temperature
    assert [s.prompt for s in sampled.samples] == request.prompts  # two prompts, two rows each
    assert texts[1::2] == trainer.sample_rows(theirs, temperature, REFERENCE_BANK).texts
    assert texts[0::2] == trainer.sample_rows(own, temperature).texts
    assert texts[0::2] != trainer.sample_rows(own, temperature, REFERENCE_BANK).texts
    # a whole run: every round's pairs are formed from both, and says how often the reference won
    run = started_from(saved, tmp_path / "c", prompts_file, fresh_base, **overrides)
    run.run()
    for index, line in enumerate(metrics_lines(run), start=1):
        record = json.loads((run.out / "rounds" / f"round-{index:04d}.p0.json").read_text())
        theirs_texts = {s["text"] for s in record["samples"][1::2]}
        won = [p["chosen"] in theirs_texts for p in record["pairs"]]
        assert line["pairs/reference"] == pytest.approx(sum(won) / len(won))


def test_a_bad_reference_is_refused():
    with pytest.raises(UserError, match="reference 'sft' is unknown; choose one of base, init"):
        TrainConfig(algo="online-dpo", reference="sft")
    with pytest.raises(UserError, match="reference init needs --init-from"):
        TrainConfig(algo="online-dpo", reference="init")
    with pytest.raises(UserError, match="reference is used only by online-dpo"):
        TrainConfig(algo="dpo", reference="init")
    init = dict(algo="online-dpo", reference="init", init_from="runs/a")
    with pytest.raises(UserError, match=r"reference_samples must be in \[0, samples\) so the"):
        TrainConfig(**init, samples=4, reference_samples=4)
    with pytest.raises(UserError, match="reference_samples must be in"):
        TrainConfig(**init, reference_samples=-1)
    with pytest.raises(UserError, match="reference_samples needs --reference init"):
        TrainConfig(algo="online-dpo", reference_samples=1)
    with pytest.raises(UserError, match="reference_samples needs --sampler torch"):
        TrainConfig(**init, reference_samples=1, sampler="llamacpp")
    with pytest.raises(UserError, match="reference_samples is used only by online-dpo"):
        TrainConfig(algo="dpo", reference_samples=1)
