"""Alembic: an empty database and one at the previous revision both reach the models' schema."""

import sqlite3
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage.engine import alembic_config, check_current, head_revision, make_engine, upgrade
from storage.models import Base
from storage.queries import preference_records, rater_counts
from storage.repository import add_rating, ensure_rater

PREVIOUS = "0001"


def _revision(engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _schema_differences(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_empty_database_upgrades_to_the_models(url):
    upgrade(url)
    upgrade(url)  # a second start is a no-op
    engine = make_engine(url)
    assert _revision(engine) == head_revision()
    assert _schema_differences(engine) == []
    check_current(engine)
    engine.dispose()


def test_concurrent_upgrades_of_one_database(url):
    # Two app processes starting at once: the migration lock makes one wait, then find no work.
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "storage", "upgrade", "--db", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for start in starts:
        out, err = start.communicate(timeout=60)
        assert start.returncode == 0, err
        assert f"is at revision {head_revision()} (head)" in out
    engine = make_engine(url)
    assert _revision(engine) == head_revision()
    assert _schema_differences(engine) == []
    engine.dispose()


def test_opening_a_file_another_connection_holds_before_wal_waits(tmp_path):
    # The window the concurrent upgrade above can hit: a write lock on a new file still in rollback
    # mode. SQLite refuses the switch to WAL at once there; the engine waits it out instead.
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE held (x)")
    release = threading.Timer(0.3, other.execute, ["COMMIT"])
    release.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"
    finally:
        release.join()
        other.close()
        engine.dispose()


def _table(name: str, **typed: sa.types.TypeEngine) -> sa.TableClause:
    """A lightweight table: untyped columns come from the rows inserted, typed ones are named."""
    return sa.table(name, *(sa.column(c, t) for c, t in typed.items()))


def _insert_at_previous_revision(engine) -> uuid.UUID:
    """One rated comparison written with the 0001 schema (raters had no user_name yet)."""
    when = sa.DateTime(timezone=True)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    key = uuid.uuid4()
    rows = [
        (_table("prompts", created_at=when), {"id": 1, "sha256": "0" * 64, "text": "Old prompt."}),
        *(
            (
                _table("generations", objectives=sa.JSON(), weights=sa.JSON(),
                       decoding=sa.JSON(), created_at=when),
                {"id": gid, "prompt_id": 1, "text": text, "method": "clp", "adapter_id": "old",
                 "seed": 0, "tokens": 2, "latency_s": 0.1, "objectives": ["positivity"],
                 "weights": [1.0], "decoding": {}},
            )
            for gid, text in ((1, "old a"), (2, "old b"))
        ),
        (
            _table("comparisons", created_at=when),
            {"id": 1, "prompt_id": 1, "generation_a_id": 1, "generation_b_id": 2},
        ),
        (_table("raters", created_at=when), {"id": 1, "anonymous_id": "veteran"}),
        (
            _table("ratings", uuid=sa.Uuid(), created_at=when),
            {"id": 1, "uuid": key, "comparison_id": 1, "rater_id": 1, "choice": "a"},
        ),
    ]  # fmt: skip
    with engine.begin() as connection:
        for table, values in rows:
            for column in values:
                if column not in table.c:
                    table.append_column(sa.column(column))
            connection.execute(table.insert().values(values | {"created_at": now}))
    if engine.dialect.name == "postgresql":
        # Explicit ids leave the sequences behind; the app's later inserts need them moved on.
        with engine.begin() as connection:
            for name in ("prompts", "generations", "comparisons", "raters", "ratings"):
                connection.execute(
                    sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), 10)")
                )
    return key


def test_database_at_previous_revision_upgrades_and_keeps_its_ratings(url):
    upgrade(url, PREVIOUS)
    engine = make_engine(url)
    key = _insert_at_previous_revision(engine)
    with pytest.raises(ValueError, match=f"at revision {PREVIOUS}, not {head_revision()}"):
        check_current(engine)

    upgrade(url)
    assert _revision(engine) == head_revision()
    assert _schema_differences(engine) == []
    (record,) = preference_records(engine)
    assert (record.rating_uuid, record.chosen, record.rejected) == (str(key), "old a", "old b")
    # The new column works for old raters, and new ratings go in next to the old one.
    assert ensure_rater(engine, "veteran", "ada") == 1
    assert [(c.anonymous_id, c.user_name, c.ratings) for c in rater_counts(engine)] == [
        ("veteran", "ada", 1)
    ]
    add_rating(engine, 1, ensure_rater(engine, "newcomer"), "b", uuid.uuid4())
    assert len(preference_records(engine)) == 2

    # And back: the downgrade keeps the ratings (it drops only what 0002 added).
    engine.dispose()
    command.downgrade(alembic_config(url), PREVIOUS)
    assert _revision(engine) == PREVIOUS
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM ratings")).scalar() == 2
    upgrade(url)
    assert len(preference_records(engine)) == 2
    engine.dispose()
