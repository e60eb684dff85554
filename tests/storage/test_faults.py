"""Faults: a writer killed with SIGKILL, and backups taken while a writer is busy."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.backup import backup
from storage.engine import make_engine, upgrade
from storage.models import Rating
from storage.queries import rater_counts
from storage.repository import add_rating, ensure_rater

WRITER = Path(__file__).with_name("sigkill_writer.py")
ACKNOWLEDGED_BEFORE_KILL = 40


def test_writer_killed_mid_stream_loses_no_acknowledged_rating(build):
    cid = build.comparison()
    url = build.engine.url.render_as_string(hide_password=False)
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), url, str(cid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged = []
    while len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL:
        line = writer.stdout.readline()
        assert line, f"the writer died early: {writer.stderr.read()}"
        acknowledged.append(line.strip())
    # Killed right after an acknowledgement: most likely in the middle of the next transaction.
    os.kill(writer.pid, signal.SIGKILL)
    rest, _ = writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    # Lines printed before the kill are acknowledged too; a torn last line is not.
    acknowledged += [line for line in rest.split("\n")[:-1] if line]

    if build.engine.dialect.name == "sqlite":
        path = build.engine.url.database
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert check.execute("PRAGMA foreign_key_check").fetchall() == []
    with build.engine.connect() as connection:
        stored = {str(u) for u in connection.scalars(select(Rating.uuid))}
    assert set(acknowledged) <= stored
    # All or nothing: every stored rating has both of its per-objective rows.
    counts = build.counts()
    assert counts["rating_objectives"] == 2 * counts["ratings"]


@pytest.fixture
def busy_writer(sqlite_build):
    """A thread voting continuously on the SQLite database; yields its acknowledged UUIDs."""
    cid = sqlite_build.comparison()
    acknowledged: list[str] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            rater_id = ensure_rater(sqlite_build.engine, f"busy-{n}")
            key = uuid.uuid4()
            add_rating(sqlite_build.engine, cid, rater_id, "b", key, {"positivity": "b"})
            acknowledged.append(str(key))
            n += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield acknowledged
    finally:
        stop.set()
        thread.join()


def _wait_for(acknowledged: list[str], count: int) -> None:
    deadline = time.monotonic() + 30
    while len(acknowledged) < count:
        assert time.monotonic() < deadline, "the writer thread stalled"
        time.sleep(0.01)


def test_backup_while_a_writer_is_active_then_restore(sqlite_path, busy_writer, tmp_path):
    _wait_for(busy_writer, 20)
    before = list(busy_writer)
    summary = backup(f"sqlite:///{sqlite_path}", tmp_path / "copy.db")
    _wait_for(busy_writer, len(before) + 10)  # the writer was never blocked for long

    assert summary.path == tmp_path / "copy.db"
    assert not (tmp_path / "copy.db-wal").exists()
    with closing(sqlite3.connect(summary.path)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        stored = {str(uuid.UUID(u)) for (u,) in copy.execute("SELECT uuid FROM ratings")}
        objective_rows = copy.execute("SELECT count(*) FROM rating_objectives").fetchone()[0]
    # A consistent snapshot: everything acknowledged before the backup, each rating whole.
    assert set(before) <= stored
    assert summary.ratings == len(stored) == objective_rows

    # Restoring (docs/storage.md) is copying the file into place while the app is stopped.
    restored = tmp_path / "restored" / "steering.db"
    restored.parent.mkdir()
    shutil.copyfile(summary.path, restored)
    upgrade(f"sqlite:///{restored}")
    engine = make_engine(f"sqlite:///{restored}")
    assert sum(c.ratings for c in rater_counts(engine)) == summary.ratings
    engine.dispose()


def test_backup_refuses_what_it_cannot_copy(sqlite_path, tmp_path):
    with pytest.raises(ValueError, match="pg_dump"):
        backup("postgresql://localhost/steering", tmp_path / "x.db")
    with pytest.raises(ValueError, match="there is no database at"):
        backup(f"sqlite:///{tmp_path / 'missing.db'}", tmp_path / "x.db")
    with pytest.raises(ValueError, match="does not exist"):
        backup(f"sqlite:///{sqlite_path}", tmp_path / "no" / "x.db")
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("hello")
    with pytest.raises(ValueError, match="not a readable steering database"):
        backup(f"sqlite:///{not_a_database}", tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists()
