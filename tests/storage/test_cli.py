"""`python -m storage`: commands work, and a user's mistake is one line on stderr, exit 2."""

import dataclasses
import json
import subprocess
import sys
import uuid

import pytest

from storage import bench
from storage.__main__ import main
from storage.engine import head_revision, upgrade
from storage.journal import read_journal
from storage.repository import add_rating


def test_upgrade_creates_the_database_and_its_directory(tmp_path, capsys):
    path = tmp_path / "data" / "steering.db"
    assert main(["upgrade", "--db", f"sqlite:///{path}"]) == 0
    assert capsys.readouterr().out == f"sqlite:///{path} is at revision {head_revision()} (head).\n"
    assert path.is_file()


def test_export_command(rated, tmp_path, capsys):
    engine, _, _ = rated
    db = engine.url.render_as_string(hide_password=False)
    out = tmp_path / "p.parquet"
    assert main(["export", "--format", "parquet", "--out", str(out), "--db", db]) == 0
    assert capsys.readouterr().out == f"wrote 5 preference pairs to {out}.\n"
    assert out.stat().st_size > 0


def test_backup_command(sqlite_build, sqlite_path, tmp_path, capsys):
    add_rating(
        sqlite_build.engine, sqlite_build.comparison(), sqlite_build.rater(), "a", uuid.uuid4()
    )
    out = tmp_path / "copy.db"
    assert main(["backup", str(out), "--db", f"sqlite:///{sqlite_path}"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("backed up 1 ratings (") and printed.endswith(f"to {out}.\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "--format", "jsonl", "--out", "{tmp}/x.jsonl", "--db", "sqlite:///{tmp}/nope.db"],
         "error: there is no database at {tmp}/nope.db."),
        (["export", "--format", "jsonl", "--out", "{tmp}/no/x.jsonl", "--db", "sqlite:///{tmp}/old.db"],
         "error: the database at sqlite:///{tmp}/old.db is at revision 0001, not 0003; "
         "run `python -m storage upgrade` first."),
        (["backup", "{tmp}/copy.db", "--db", "postgresql://localhost/steering"],
         "error: backup copies SQLite databases; back up PostgreSQL with "
         "`pg_dump --format=custom --file FILE URL` and restore with `pg_restore`."),
        (["upgrade", "--db", "mysql://localhost/steering"],
         "error: unsupported database 'mysql'; use sqlite:///PATH or postgresql://..."),
        (["export", "--format", "jsonl", "--out", "{tmp}/x.jsonl", "--db",
          "postgresql://nobody@127.0.0.1:1/none"],
         "error: cannot use the database: "),
        (["bench", "--threads", "0"], "error: --threads and --ratings must be at least 1."),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    upgrade(f"sqlite:///{tmp_path / 'old.db'}", "0001")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message.format(tmp=tmp_path))
    assert captured.err.count("\n") == 1


def test_bench_json_shape(monkeypatch, capsys):
    # The benchmark itself is a script (python -m storage bench); here only its output contract,
    # on a tiny run with PostgreSQL skipped.
    monkeypatch.setattr(bench, "postgres_bin_dir", lambda: None)
    assert main(["bench", "--json", "--threads", "2", "--ratings", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"sqlite", "sqlite+log", "postgresql", "postgresql+log"}
    for name in ("sqlite", "sqlite+log"):
        assert {k: result[name][k] for k in ("stored", "expected", "errors", "duplicates")} == {
            "stored": 6,
            "expected": 6,
            "errors": 0,
            "duplicates": 0,
        }
        assert result[name]["per_s"] > 0
    skipped = {"skipped": "no --postgres-url and PostgreSQL is not installed"}
    assert result["postgresql"] == result["postgresql+log"] == skipped


def test_bench_counts_on_each_backend(url, tmp_path):
    result = bench.run(url, threads=3, per_thread=4, log=tmp_path / "log")
    assert (result.stored, result.expected, result.errors, result.duplicates) == (12, 12, 0, 0)
    # every acknowledged vote is in the log too (the resubmissions are not logged twice)
    assert len(read_journal(tmp_path / "log").records) == 12
    assert result.resubmitted == 3  # the first vote of each thread goes twice
    json.dumps(dataclasses.asdict(result))  # plain numbers, whatever the backend returns


def test_storage_never_imports_torch():
    # The root conftest imports torch into this process, so ask a fresh interpreter.
    code = (
        "import sys, storage.__main__, storage.repository, storage.export, storage.backup, "
        "storage.journal, storage.queries; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
