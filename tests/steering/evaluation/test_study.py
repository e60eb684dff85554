"""`python -m steering study`: the objectives' correlations over a pool, for the built-in set,
a file's objectives, or those an adapter was trained with."""

import json

import pytest

from steering.__main__ import main

ANSWERS = [
    "What a wonderful, lovely day it was!",
    "Terrible. I hated every minute of this awful, boring, endless afternoon.",
    "Fine.",
    "It was a good day with nice people and great food at a lovely little place.",
    "Bad.",
    "Great!",
]


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [{"prompt": "How was your day?", "text": t, "tokens": len(t.split())} for t in ANSWERS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_files_objectives_are_studied_under_their_names(tmp_path, pool, capsys):
    declared = tmp_path / "mine.toml"
    declared.write_text(
        '[objectives.upbeat]\nkind = "builtin"\nobjective = "positivity"\n'
        '[objectives.brief]\nkind = "builtin"\nobjective = "conciseness"\n'
    )
    out = tmp_path / "study.md"
    code = main(
        ["study", "--pool", str(pool), "--out", str(out), "--objectives-file", str(declared)]
    )
    assert code == 0
    text = out.read_text()
    assert "| upbeat / brief |" in text and "## Default set" not in text
    assert f"--objectives-file {declared}" in text  # the report names the command that made it
    assert capsys.readouterr().out == text + "\n"  # printed as well


def test_the_builtin_set_and_a_bad_name(tmp_path, pool, capsys):
    out = tmp_path / "study.md"
    argv = ["study", "--pool", str(pool), "--out", str(out)]
    assert main([*argv, "--objectives", "positivity,brevity"]) == 0
    assert "## Default set: positivity, brevity" in out.read_text()
    assert main([*argv, "--objectives", "positivity,nope"]) == 2
    assert "unknown objective 'nope'" in capsys.readouterr().err


def test_an_adapters_objectives_are_studied(tiny_env, tmp_path, pool, monkeypatch):
    monkeypatch.setenv("STEERING_ADAPTERS", str(tiny_env / "adapters"))  # restored afterwards
    out = tmp_path / "study.md"
    argv = [
        "study",
        "--pool",
        str(pool),
        "--out",
        str(out),
        "--adapters",
        str(tiny_env / "adapters"),
    ]
    assert main(argv) == 0
    assert "| positivity / conciseness |" in out.read_text()  # the tiny clp adapter's objectives
