import pytest
import torch
from torch.testing import assert_close
from training_fixtures import online_config, stop_at_step

from steering.errors import UserError
from steering.model.mixing import read_bank_tensors, read_metadata
from steering.training.averaging import ParameterAverage
from steering.training.config import TrainConfig
from steering.training.trainer import Trainer


def test_the_average_by_hand():
    p = torch.tensor([1.0, 2.0])
    average = ParameterAverage([p], decay=0.75)
    p.copy_(torch.tensor([5.0, 6.0]))
    average.update()  # 0.75 * (1, 2) + 0.25 * (5, 6)
    assert_close(average.average[0], torch.tensor([2.0, 3.0]))
    p.copy_(torch.tensor([2.0, 3.0]))
    average.update()
    assert_close(average.average[0], torch.tensor([2.0, 3.0]))
    saved = average.state()
    average.update()
    saved[0].add_(100.0)  # a saved state is a copy
    assert_close(average.average[0], torch.tensor([2.0, 3.0]))
    average.load(None)  # a checkpoint without an average: restart it at the live parameters
    p.copy_(torch.tensor([9.0, 9.0]))
    average.copy_to_parameters()
    assert_close(p, torch.tensor([2.0, 3.0]))
    live = ParameterAverage([p], decay=0.0)
    p.copy_(torch.tensor([7.0, 8.0]))
    live.update()  # decay 0: the average is the live parameters
    assert_close(live.average[0], p)


def online(tmp_path, prompts_file, **overrides) -> TrainConfig:
    return online_config(tmp_path, prompts_file, updates_per_round=2, batch_size=1, **overrides)


def test_a_run_trains_the_live_parameters_and_saves_their_average(
    tmp_path, prompts_file, fresh_base, monkeypatch
):
    trainer = Trainer(online(tmp_path / "avg", prompts_file, ema_decay=0.6), fresh_base())
    plain = Trainer(online(tmp_path / "plain", prompts_file), fresh_base())
    expected = [p.detach().clone() for p in trainer.parameters]
    update = trainer.average.update

    def recording():
        for mean, p in zip(expected, trainer.parameters, strict=True):
            mean.mul_(0.6).add_(0.4 * p.detach())
        update()

    monkeypatch.setattr(trainer.average, "update", recording)
    out = trainer.run()
    plain.run()
    assert trainer.state.step == 4
    for mean, p in zip(expected, trainer.parameters, strict=True):
        assert_close(p, mean)
    # the live trajectory does not depend on the decay: the plain run saves its last step, which
    # differs from the average of the steps
    assert any(
        not torch.allclose(a, b) for a, b in zip(trainer.parameters, plain.parameters, strict=True)
    )
    saved = read_bank_tensors(out, read_metadata(out))  # the file holds the average too
    assert_close(
        torch.cat([t.flatten() for pair in saved.values() for t in pair]).sort().values,
        torch.cat([p.detach().flatten() for p in trainer.parameters]).sort().values,
    )


def test_resume_keeps_the_average(tmp_path, prompts_file, fresh_base, monkeypatch):
    straight = Trainer(online(tmp_path / "a", prompts_file, ema_decay=0.5), fresh_base())
    straight.run()
    interrupted = Trainer(online(tmp_path / "b", prompts_file, ema_decay=0.5), fresh_base())
    stop_at_step(monkeypatch, interrupted, 3)
    with pytest.raises(SystemExit):
        interrupted.run()
    resumed = Trainer(
        online(tmp_path / "b", prompts_file, ema_decay=0.5, resume=True), fresh_base()
    )
    assert resumed.state.step == 3
    resumed.run()
    for a, b in zip(straight.parameters, resumed.parameters, strict=True):
        assert_close(a, b)


def test_a_decay_outside_zero_to_one_is_refused():
    with pytest.raises(UserError, match=r"ema_decay must be in \[0, 1\) \(0: off\), got 1.0"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(UserError, match=r"ema_decay must be in \[0, 1\) \(0: off\), got -0.1"):
        TrainConfig(ema_decay=-0.1)


def test_the_average_starts_at_the_adapters_a_run_starts_from(tmp_path, prompts_file, fresh_base):
    first = Trainer(online(tmp_path / "a", prompts_file, rounds=1), fresh_base())
    saved = first.run()
    # at learning rate 0 the live parameters stay the saved adapters, and so does their average
    second = Trainer(
        online(tmp_path / "b", prompts_file, lr=0.0, ema_decay=0.5, init_from=str(saved)),
        fresh_base(),
    )
    second.run()
    for a, b in zip(first.parameters, second.parameters, strict=True):
        assert torch.equal(a, b)
