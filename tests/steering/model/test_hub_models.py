"""Models named by Hub id: downloaded through huggingface_hub (its HTTP layer answered by a fake
Hub), read from the cache afterwards, and refused in one sentence offline."""

import numpy as np
import pytest
import torch
from fake_hub import FakeHub, intercepted_hub
from huggingface_hub import constants
from tiny_models import build_tiny_llama, build_tiny_reward_model

from steering.errors import UserError
from steering.model.policy import load_base
from steering.objectives.declared import read_objectives_file


def repository_files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return tmp_path / "hub-cache"


def go_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_a_base_model_by_hub_id_downloads_once_then_loads_offline(
    tmp_path, tokenizer, hub_cache, monkeypatch
):
    model = build_tiny_llama(len(tokenizer))
    model.save_pretrained(tmp_path / "repo")
    tokenizer.save_pretrained(tmp_path / "repo")
    fake = FakeHub("someone/tiny-llm", "model", repository_files(tmp_path / "repo"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with intercepted_hub(monkeypatch, fake):
        base = load_base("someone/tiny-llm", "float32")
    assert base.identity.name == "someone/tiny-llm"
    assert any(call.startswith("GET /someone/tiny-llm/resolve/") for call in fake.calls)
    ids = torch.tensor([[1, 7, 9, 4]])
    with torch.no_grad():
        torch.testing.assert_close(base.model(ids).logits, model(ids).logits)
    go_offline(monkeypatch)
    calls = len(fake.calls)
    again = load_base("someone/tiny-llm", "float32")  # from the cache, no request
    assert again.identity == base.identity and len(fake.calls) == calls
    with pytest.raises(UserError) as caught:
        load_base("someone/never-downloaded", "float32")
    message = str(caught.value)
    assert message == (
        "base model: model someone/never-downloaded is neither a local path nor in the Hub "
        "cache, and the Hub is offline (HF_HUB_OFFLINE=1); download it or unset HF_HUB_OFFLINE"
    )


def test_a_reward_model_by_hub_id_is_recorded_by_its_id(
    tmp_path, tokenizer, hub_cache, monkeypatch
):
    build_tiny_reward_model(len(tokenizer), seed=3).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    fake = FakeHub("someone/tiny-rm", "model", repository_files(tmp_path / "rm"))
    path = tmp_path / "objectives.toml"
    path.write_text(
        '[objectives.helpful]\nkind = "reward-model"\nmodel = "someone/tiny-rm"\n'
        '[objectives.short]\nkind = "builtin"\nobjective = "conciseness"\n'
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with intercepted_hub(monkeypatch, fake):
        declared = read_objectives_file(path)
    spec = declared.specs[0]
    assert spec.model == "someone/tiny-rm" and len(spec.sha256) == 64
    scores = declared.score(["Hi."], ["Hello there."])["helpful"]
    assert scores.shape == (1,) and np.isfinite(scores).all()
    go_offline(monkeypatch)
    missing = tmp_path / "missing.toml"
    missing.write_text(path.read_text().replace("someone/tiny-rm", "someone/other-rm"))
    with pytest.raises(
        UserError,
        match=r"objective 'helpful': model someone/other-rm is neither a local path nor in the Hub cache, and the Hub is offline",
    ):
        read_objectives_file(missing)
