"""Choosing a backend: argument, environment, installation; the fallback to torch, logged."""

import logging

import pytest

from steering.errors import UserError
from steering.serve import backends
from steering.serve.backends import Backends


def test_backend_comes_from_argument_then_environment_then_installation(monkeypatch):
    monkeypatch.delenv(backends.BACKEND_ENV, raising=False)
    monkeypatch.setattr(backends, "llamacpp_available", lambda: True)
    assert backends.resolve_backend() == "llamacpp"
    monkeypatch.setattr(backends, "llamacpp_available", lambda: False)
    assert backends.resolve_backend() == "torch"
    monkeypatch.setenv(backends.BACKEND_ENV, "llamacpp")
    assert backends.resolve_backend() == "llamacpp"
    assert backends.resolve_backend("torch") == "torch"
    with pytest.raises(UserError, match="choose one of torch, llamacpp"):
        backends.resolve_backend("onnx")


class TorchStub:
    """Stands in for the torch models, so that fallback tests need no model."""

    def __init__(self):
        self.calls = []

    def steerer(self, method, adapter_dir=None, base_path=None, dtype="auto"):
        self.calls.append(method)
        return "torch steerer"


@pytest.fixture
def torch_stub() -> TorchStub:
    return TorchStub()


def test_falls_back_to_torch_and_logs_why(monkeypatch, caplog, torch_stub):
    monkeypatch.setattr(backends, "llamacpp_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="steering.serve.backends"):
        steerer = Backends(torch_stub).load("clp", backend="llamacpp")
    assert steerer == "torch steerer" and torch_stub.calls == ["clp"]
    assert "llama-cpp-python is not installed" in caplog.text
    assert "Using the torch backend" in caplog.text


def test_logit_mixing_stays_on_torch(caplog, torch_stub):
    with caplog.at_level(logging.INFO, logger="steering.serve.backends"):
        assert Backends(torch_stub).load("logits", backend="llamacpp") == "torch steerer"
    assert "torch backend only" in caplog.text


def test_directory_base_model_is_refused_by_llamacpp(tmp_path):
    with pytest.raises(UserError, match="needs a .gguf base model"):
        Backends().llamacpp("base", base_path=str(tmp_path))
