import math

import pytest
import torch
from torch.testing import assert_close
from training_fixtures import online_config, stop_at_step, tiny_config

from steering.errors import UserError
from steering.training.config import TrainConfig
from steering.training.schedule import learning_rate
from steering.training.trainer import Trainer


def test_the_schedules_by_hand():
    assert [learning_rate(0.1, "constant", s, 4) for s in range(4)] == [0.1] * 4
    assert [learning_rate(1.0, "linear", s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    cosine = [learning_rate(1.0, "cosine", s, 4) for s in range(4)]
    half = 0.5 * (1 + math.cos(math.pi / 4))
    assert cosine == pytest.approx([1.0, half, 0.5, 1.0 - half])
    assert learning_rate(1.0, "cosine", 3, 4) > 0  # the last step still learns
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        learning_rate(1.0, "step", 0, 4)


def record_rates(monkeypatch, trainer) -> list[float]:
    rates = []
    step = trainer.optimizer.step

    def recording(*args, **kwargs):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", recording)
    return rates


def test_each_step_takes_its_rate_in_every_loop(tmp_path, prompts_file, fresh_base, monkeypatch):
    online = Trainer(
        online_config(
            tmp_path / "online",
            prompts_file,
            updates_per_round=2,
            batch_size=1,
            lr=0.2,
            lr_schedule="linear",
        ),
        fresh_base(),
    )
    rates = record_rates(monkeypatch, online)
    online.run()
    assert online.total_steps() == 4
    assert rates == pytest.approx([0.2, 0.15, 0.1, 0.05])

    rloo = Trainer(
        tiny_config(tmp_path / "rloo", prompts_file, algo="rloo", steps=2, lr_schedule="cosine"),
        fresh_base(),
    )
    rates = record_rates(monkeypatch, rloo)
    rloo.run()
    assert rates == pytest.approx([1e-2, 0.5e-2])

    dpo = Trainer(
        tiny_config(tmp_path / "dpo", prompts_file, algo="dpo", lr_schedule="linear"), fresh_base()
    )
    rates = record_rates(monkeypatch, dpo)
    dpo.run()
    total = len(dpo.rsf_schedule())
    assert dpo.total_steps() == total >= 2
    assert rates == pytest.approx([1e-2 * (1 - s / total) for s in range(total)])


def test_resume_continues_the_schedule(tmp_path, prompts_file, fresh_base, monkeypatch):
    def config(name, **overrides):
        values = dict(updates_per_round=2, batch_size=1, lr_schedule="cosine")
        return online_config(tmp_path / name, prompts_file, **{**values, **overrides})

    straight = Trainer(config("a"), fresh_base())
    straight.run()
    interrupted = Trainer(config("b"), fresh_base())
    stop_at_step(monkeypatch, interrupted, 3)
    with pytest.raises(SystemExit):
        interrupted.run()
    resumed = Trainer(config("b", resume=True), fresh_base())
    assert resumed.state.step == 3
    resumed.run()
    constant = Trainer(config("c", lr_schedule="constant"), fresh_base())
    constant.run()
    for a, b in zip(straight.parameters, resumed.parameters, strict=True):
        assert_close(a, b)
    # the schedule changes what is learned: the same run at a constant rate ends elsewhere
    assert any(
        not torch.allclose(a, b)
        for a, b in zip(straight.parameters, constant.parameters, strict=True)
    )


def test_an_unknown_schedule_is_refused():
    with pytest.raises(UserError, match="lr_schedule 'step' is unknown; choose one of constant"):
        TrainConfig(lr_schedule="step")
