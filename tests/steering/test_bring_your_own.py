"""A new user's own models from the command line: a tiny base model and two tiny reward models
made by tests/make_tiny_models.py, declared in an objectives file; then the loop from ratings
stored by the app's storage to a retrained policy. Every step runs the CLI in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli
from make_tiny_models import make_tiny_models
from stored_ratings import store_polite_ratings

TRAIN = ["--algo", "rloo", "--steps", "2", "--prompts-per-step", "2", "--samples", "2"]
SMALL = ["--pool-samples", "2", "--max-new-tokens", "6", "--rank", "2", "--dtype", "float32"]


ROOT = Path(__file__).resolve().parents[2]


def test_the_script_runs_as_the_readme_says(tmp_path):
    """`python tests/make_tiny_models.py OUT` from the checkout, as a script, not imported."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "tests/make_tiny_models.py", str(tmp_path / "own")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    made = {path.name for path in (tmp_path / "own").iterdir()}
    assert made == {"objectives.toml", "policy", "prompts.jsonl", "rm-harmless", "rm-helpful"}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("own"))


def train(own, out, objectives_file):
    return run_cli(
        "train",
        "--base-model", str(own / "policy"),
        "--objectives-file", str(objectives_file),
        "--prompts", str(own / "prompts.jsonl"),
        "--pool", str(out.parent / f"{out.name}-pool.jsonl"),
        "--out", str(out),
        *TRAIN,
        *SMALL,
    )  # fmt: skip


def evaluate(own, adapters, objectives_file, out):
    return run_cli(
        "evaluate",
        "--prompts", str(own / "prompts.jsonl"),
        "--limit", "2",
        "--methods", "clp,base",
        "--grid", "0.5",
        "--max-new-tokens", "6",
        "--adapters", str(adapters),
        "--base-model", str(own / "policy"),
        "--objectives-file", str(objectives_file),
        "--out", str(out),
    )  # fmt: skip


def test_train_evaluate_and_generate_with_declared_reward_models(own):
    trained = train(own, own / "adapters" / "clp", own / "objectives.toml")
    assert trained.returncode == 0, trained.stderr
    metadata = json.loads((own / "adapters" / "clp" / "adapter.json").read_text())
    specs = metadata["training"]["objective_specs"]
    assert [s["name"] for s in specs] == ["helpful", "harmless"]
    assert all(s["kind"] == "reward-model" and len(s["sha256"]) == 64 for s in specs)

    evaluated = evaluate(own, own / "adapters", own / "objectives.toml", own / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((own / "eval.json").read_text())
    assert results["objectives"] == ["helpful", "harmless"]
    assert set(results["methods"]) == {"clp", "base"} and results["prompts"] == 2
    assert len(results["methods"]["clp"]["points"]) == 3  # the grid of step 0.5 on 2 objectives
    assert [s["name"] for s in results["objective_specs"]] == ["helpful", "harmless"]

    generated = run_cli(
        "generate",
        "--prompt", "Review a cafe.",
        "--weights", "0.8,0.2",
        "--adapters", str(own / "adapters"),
        "--base-model", str(own / "policy"),
        "--objectives-file", str(own / "objectives.toml"),
        "--max-new-tokens", "5",
        "--json",
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    answer = json.loads(generated.stdout)
    assert answer["objectives"] == ["helpful", "harmless"]
    assert answer["weights"] == pytest.approx([0.8, 0.2])
    assert set(answer["scores"]) == {"helpful", "harmless"}


def test_a_changed_reward_model_is_refused_by_evaluate(own, tmp_path):
    trained = train(own, tmp_path / "adapters" / "clp", own / "objectives.toml")
    assert trained.returncode == 0, trained.stderr
    (own / "rm-harmless" / "extra.json").write_text("{}")  # the model directory changed
    try:
        refused = evaluate(own, tmp_path / "adapters", own / "objectives.toml", tmp_path / "e.json")
    finally:
        (own / "rm-harmless" / "extra.json").unlink()
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "objective 'harmless' was trained with" in refused.stderr
    assert "which now holds other files" in refused.stderr


def test_from_ratings_to_a_retrained_policy(own, tmp_path):
    """Ratings in the database -> train-reward -> an objectives file with the human reward ->
    train -> evaluate: the documented loop (docs/objectives.md)."""
    url = store_polite_ratings(tmp_path / "ratings.db", 30)
    rewarded = run_cli("train-reward", "--db", url, "--out", str(tmp_path / "human"))
    assert rewarded.returncode == 0, rewarded.stderr
    objectives = tmp_path / "loop.toml"
    objectives.write_text(
        f'[objectives.people]\nkind = "human"\nmodel = "{tmp_path / "human"}"\n'
        '[objectives.short]\nkind = "builtin"\nobjective = "conciseness"\n'
    )
    trained = train(own, tmp_path / "adapters" / "clp", objectives)
    assert trained.returncode == 0, trained.stderr
    evaluated = evaluate(own, tmp_path / "adapters", objectives, tmp_path / "loop.json")
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((tmp_path / "loop.json").read_text())
    assert results["objectives"] == ["people", "short"]
    assert results["objective_specs"][0]["kind"] == "human"
    points = results["methods"]["clp"]["points"]
    assert all(set(p["raw"]) == {"people", "short"} for p in points)
