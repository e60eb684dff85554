"""Weight repacking: decided per machine by a probe in a child process, cached, overridable."""

import json
import os

import numpy as np
import pytest

from steering.serve.repack_probe import cache_file, machine_key, probe, repack_enabled


class Probe:
    def __init__(self, answer: bool):
        self.answer, self.calls = answer, 0

    def __call__(self, path) -> bool:
        self.calls += 1
        return self.answer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("STEERING_LLAMACPP_REPACK", raising=False)
    return tmp_path / "steering" / "llamacpp-repack.json"


def test_the_answer_is_probed_once_per_machine_and_cached(cache, tmp_path):
    said_yes = Probe(True)
    assert repack_enabled(tmp_path / "model.gguf", said_yes) is True
    assert repack_enabled(tmp_path / "model.gguf", said_yes) is True
    assert said_yes.calls == 1 and cache_file() == cache
    assert json.loads(cache.read_text()) == {machine_key(tmp_path / "model.gguf"): True}
    # another machine's answer is kept beside this one's
    cache.write_text(
        json.dumps({"other-machine": False, machine_key(tmp_path / "model.gguf"): True})
    )
    assert repack_enabled(tmp_path / "model.gguf", Probe(False)) is True


def write_model(path, dtype) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch="llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_models_of_other_weight_types_are_probed_apart(cache, tmp_path):
    # in the tests a float32 copy of the base model was probed first: repacking leaves float32
    # alone, so it survived, and the cached yes then crashed the Q4_1 model with an adapter
    write_model(tmp_path / "f32.gguf", np.float32)
    write_model(tmp_path / "f16.gguf", np.float16)
    write_model(tmp_path / "f32-again.gguf", np.float32)
    assert repack_enabled(tmp_path / "f32.gguf", Probe(True)) is True
    assert repack_enabled(tmp_path / "f16.gguf", Probe(False)) is False
    same_types = Probe(False)
    assert repack_enabled(tmp_path / "f32-again.gguf", same_types) is True
    assert same_types.calls == 0


def test_a_crashing_probe_keeps_repacking_off(cache, tmp_path):
    said_no = Probe(False)
    assert repack_enabled(tmp_path / "model.gguf", said_no) is False
    assert repack_enabled(tmp_path / "model.gguf", said_no) is False and said_no.calls == 1


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False)])
def test_the_environment_decides_without_a_probe(cache, tmp_path, monkeypatch, value, expected):
    monkeypatch.setenv("STEERING_LLAMACPP_REPACK", value)
    never = Probe(not expected)
    assert repack_enabled(tmp_path / "model.gguf", never) is expected and never.calls == 0
    assert not cache.exists()


def test_a_probe_of_a_file_that_is_no_model_fails_in_the_child(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    assert probe(bad) is False  # the child failed; this process goes on


SERVE_WITH_AN_ADAPTER = """
import sys
from steering.model.generate import Decoding
from steering.serve.backends import Backends
from steering.weights import Weights
fast = Backends().llamacpp("clp", sys.argv[1], threads=1)
weights = Weights.parse(fast.objectives, [0.5, 0.3, 0.2])
(answer,) = fast.generate(["Name a fruit."], weights, Decoding(4, temperature=0))
print(fast.runtime.repack, answer.text)
"""


@pytest.mark.slow
def test_serving_an_adapter_survives_with_the_probes_answer(cache, tmp_path):
    # a Xeon with AMX decoded repacked weights but died with SIGSEGV once an adapter was active,
    # while an adapter-less probe said yes: the probe has to try what serving does
    import subprocess
    import sys

    from steering.model.policy import resolve_base_model_path

    answer = probe(resolve_base_model_path())
    served = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_AN_ADAPTER, "assets/adapters/clp"],
        capture_output=True,
        text=True,
        env={**os.environ, "STEERING_LLAMACPP_REPACK": str(int(answer))},
        timeout=300,
    )
    assert served.returncode == 0, served.stderr[-2000:]
    assert served.stdout.split()[0] == str(answer)
