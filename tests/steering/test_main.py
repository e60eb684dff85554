"""The CLI end to end in subprocesses, on a tiny model and adapters saved to disk."""

import json

import pytest
from cli_runner import run_cli
from stored_ratings import store_polite_ratings


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
        (["--prompt", "hi", "--min-words", "-2"], "min_words must not be negative"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_env, args, message):
    out = run_cli("generate", *args, root=tiny_env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_evaluate_score_with_reaches_the_sweep(tiny_env, tmp_path):
    prompts = tmp_path / "eval.jsonl"
    prompts.write_text('{"prompt": "Review a bicycle."}\n')
    args = ["evaluate", "--prompts", str(prompts), "--methods", "base", "--out"]
    out = run_cli(
        *args, str(tmp_path / "r.json"), "--score-with", "positivity,brevity", root=tiny_env
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: the calibration of the clp adapter has no statistics for objective 'brevity'; "
        "give --calibration with an adapter directory or file that calibrates positivity, brevity"
    ]
    out = run_cli(*args, str(tmp_path / "r.json"), "--calibration", "nowhere", root=tiny_env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "no calibration file at nowhere" in lines[0]


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
    url = store_polite_ratings(tmp_path / "ratings.db", 30)
    out = run_cli("train-reward", "--db", url, "--out", str(tmp_path / "reward"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["pairs"] == 30 and report["heldout_accuracy"] >= 0.8
    refused = run_cli(
        "train-reward", "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--out", str(tmp_path / "r2")
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
