"""The CLI end to end in subprocesses, on a tiny model and adapters saved to disk."""

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args, root=None):
    """The CLI in a subprocess: on the tiny assets under `root`, else on the shipped ones (even
    while a module-scoped `tiny_env` has pointed this process's environment at tiny assets)."""
    shipped = ("STEERING_BASE_MODEL", "STEERING_ADAPTERS", "STEERING_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in shipped}
    env["HF_HUB_OFFLINE"] = "1"
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
    # llama.cpp reads only GGUF files: a transformers directory runs on torch, quietly
    assert result["backend"] == "torch" and out.stderr == ""


@pytest.mark.slow
def test_generate_on_llamacpp_with_the_shipped_model():
    out = run_cli(
        "generate",
        "--prompt",
        "Say hello",
        "--method",
        "base",
        "--backend",
        "llamacpp",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["backend"] == "llamacpp" and 1 <= result["tokens"] <= 6 and result["text"]


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
        (["--prompt", "hi", "--backend", "onnx"], "backend 'onnx' is unknown"),
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


def test_train_reward_reads_ratings_from_the_database(tmp_path):
    """`train-reward --db URL` trains the human reward from ratings stored by the app's storage."""
    from uuid import uuid4

    from storage.engine import make_engine, upgrade
    from storage.repository import add_comparison, add_generation, add_rating, ensure_rater

    url = f"sqlite:///{tmp_path / 'ratings.db'}"
    upgrade(url)
    engine = make_engine(url)
    rater = ensure_rater(engine, "rater-1")
    polite = [
        "Thank you so much, I would be glad to help you with that.",
        "Happy to help, here is a kind answer.",
    ]
    rude = [
        "Figure it out yourself, this is a stupid question.",
        "Go away, I am not answering that.",
    ]
    for k in range(30):
        prompt = f"Question number {k}: can you help me with my homework?"
        ids = [
            add_generation(
                engine,
                prompt,
                text,
                "clp",
                "test",
                [0.5, 0.5],
                ["positivity", "relevance"],
                0,
                {},
                10,
                0.1,
            )
            for text in (polite[k % 2], rude[k % 2])
        ]
        comparison = add_comparison(engine, ids[0], ids[1])
        # the polite answer wins; it is shown as A in even and as B in odd comparisons
        add_rating(engine, comparison, rater, "a", str(uuid4()), likert={"positivity": 1 + k % 2})
    out = run_cli("train-reward", "--db", url, "--out", str(tmp_path / "reward"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["pairs"] == 30 and report["heldout_accuracy"] >= 0.8
    refused = run_cli(
        "train-reward", "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--out", str(tmp_path / "r2")
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
