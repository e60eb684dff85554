"""The CLI end to end in subprocesses, on a tiny model and adapters saved to disk."""

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args, root=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if root is not None:
        env.update(
            STEERING_BASE_MODEL=str(root / "tiny-base"), STEERING_ADAPTERS=str(root / "adapters")
        )
    return subprocess.run(
        [sys.executable, "-m", "steering", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_generate_json_prints_normalised_weights(tiny_env):
    out = run_cli(
        "generate",
        "--prompt",
        "Say hello",
        "--weights",
        "3,1",
        "--max-new-tokens",
        "5",
        "--json",
        root=tiny_env,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["weights"] == [0.75, 0.25]
    assert 1 <= result["tokens"] <= 5 and result["seconds"] > 0 and isinstance(result["text"], str)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "", "--weights", "1,1"], "the prompt is empty"),
        (["--prompt", "hi", "--weights", "1,1,1"], "expected 2 weights"),
        (["--prompt", "hi", "--weights", "1,nan"], "finite"),
        (["--prompt", "hi", "--weights", "1,-1"], "negative"),
        (["--prompt", "hi", "--weights", "0,0"], "all be zero"),
        (["--prompt", "hi", "--weights", "a,b"], "not comma-separated numbers"),
        (["--prompt", "hi", "--adapter", "/nonexistent/adapter"], "not an adapter directory"),
        (["--prompt", "word " * 400, "--weights", "1,1"], "exceeds the model's context"),
        (["--prompt", "hi", "--method", "magic"], "method 'magic' is unknown"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_env, args, message):
    out = run_cli("generate", *args, root=tiny_env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_objectives_json_lists_the_registry():
    out = run_cli("objectives", "--json")
    assert out.returncode == 0, out.stderr
    names = {row["name"] for row in json.loads(out.stdout)}
    assert {
        "positivity",
        "harmlessness",
        "relevance",
        "conciseness",
        "readability",
        "fluency",
        "classifier",
        "human",
    } <= names


def test_train_help_shows_field_docs():
    out = run_cli("train", "--help")
    assert out.returncode == 0
    assert "leave-one-out" in out.stdout and "--dirichlet-alpha" in out.stdout
