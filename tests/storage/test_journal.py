"""The ratings log: appended before a vote is acknowledged, read back past a torn last line, and
restored into an empty database idempotently, on SQLite and PostgreSQL."""

import json
import os
import uuid

import pytest

from storage.engine import make_engine, upgrade
from storage.journal import Journal, rating_record, read_journal, restore, shards, undo_record
from storage.queries import preference_records, rater_counts, stats
from storage.repository import add_comparison, add_rating, undo_last_rating


def votes(engine, records):
    return sorted(
        (r.prompt, r.chosen, r.rejected) for r in preference_records(engine, None)
    ), stats(engine)


@pytest.fixture
def fresh(backend):
    """A second, empty database at the head revision: a Space restarted with a new disk."""
    url = backend.empty()
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()
    backend.drop(url)


@pytest.fixture
def logged(build, tmp_path):
    """Three votes by two raters, one undone, every step appended to a log as the arena does."""
    journal = Journal(tmp_path / "log")
    keys = []
    for n, (rater, choice) in enumerate([("anon-1", "a"), ("anon-2", "b"), ("anon-1", "tie")]):
        a = build.generation(f"Prompt {n}.", text=f"first {n}", scores={"positivity": (0.5, 0.1)})
        b = build.generation(f"Prompt {n}.", text=f"second {n}", method="soups")
        key = str(uuid.uuid4())
        add_rating(
            build.engine,
            add_comparison(build.engine, a, b),
            build.rater(rater),
            choice,
            key,
            per_objective={"positivity": "a"} if n == 0 else None,
        )
        journal.append(rating_record(build.engine, key))
        keys.append(key)
    undone = undo_last_rating(build.engine, build.rater("anon-1"), within_s=60)
    journal.append(undo_record(undone))
    journal.close()
    return build.engine, tmp_path / "log", keys


def test_a_log_restores_an_empty_database(logged, fresh):
    engine, log, keys = logged
    report = restore(fresh, log)
    assert (report.restored, report.undone, report.torn) == (3, 1, [])
    assert stats(fresh) == stats(engine) == {"generations": 6, "ratings": 2, "raters": 2}
    assert preference_records(fresh) == preference_records(engine)
    assert [(c.anonymous_id, c.ratings) for c in rater_counts(fresh)] == [
        (c.anonymous_id, c.ratings) for c in rater_counts(engine)
    ]
    # restoring again, or into the database the log came from, stores nothing twice
    again = restore(fresh, log)
    assert (again.restored, again.undone, again.present) == (0, 0, 4)
    assert restore(engine, log).present == 4 and stats(engine)["generations"] == 6


def test_an_undone_vote_is_not_restored_and_its_uuid_stays_used(logged, build):
    engine, _, keys = logged
    rater = build.rater("anon-1")
    with pytest.raises(ValueError, match="was undone"):
        add_rating(engine, 3, rater, "tie", keys[2])


def test_a_torn_last_line_is_skipped_and_reported(logged, fresh):
    engine, log, _ = logged
    (shard,) = shards(log)
    with open(shard, "ab") as handle:
        handle.write(b'{"kind": "rating", "rating_uu')  # a kill in the middle of a write
    read = read_journal(log)
    assert len(read.records) == 4 and read.torn == [f"{shard.name}:5"]
    report = restore(fresh, log)
    assert report.restored == 3 and report.torn == [f"{shard.name}:5"]
    assert "skipped 1 unreadable line" in str(report)


def test_shards_are_only_created_and_appended(tmp_path):
    first, second = Journal(tmp_path), Journal(tmp_path)  # two processes, one directory
    first.append({"kind": "undo", "n": 1})
    second.append({"kind": "undo", "n": 2})
    first.append({"kind": "undo", "n": 3})
    names = [p.name for p in shards(tmp_path)]
    assert len(names) == 2 and all(n.startswith("ratings-") and n.endswith(".jsonl") for n in names)
    lines = [json.loads(line) for p in shards(tmp_path) for line in p.read_text().splitlines()]
    assert sorted(r["n"] for r in lines) == [1, 2, 3]
    assert all(os.stat(p).st_size > 0 for p in shards(tmp_path))


def test_undo_is_only_for_a_recent_vote(build):
    rater = build.rater("slow")
    with pytest.raises(ValueError, match="no vote from the last 60 seconds"):
        undo_last_rating(build.engine, rater, within_s=60)
    a, b = build.generation(text="x"), build.generation(text="y")
    add_rating(build.engine, add_comparison(build.engine, a, b), rater, "a", uuid.uuid4())
    with pytest.raises(ValueError, match="no vote from the last 0 seconds"):
        undo_last_rating(build.engine, rater, within_s=0)


def test_an_undo_before_its_rating_and_a_malformed_record_are_handled(logged, fresh, tmp_path):
    engine, log, keys = logged
    # another process's shard sorts first and holds an undo of a vote logged later
    early = Journal(tmp_path / "merged")
    early.append(undo_record(keys[0]))
    early.append({"kind": "rating", "v": 1, "rating_uuid": str(uuid.uuid4())})  # no content
    early.close()
    (later,) = shards(log)
    (tmp_path / "merged" / "ratings-z-later.jsonl").write_bytes(later.read_bytes())
    report = restore(fresh, tmp_path / "merged")
    assert report.restored == 3 and report.undone == 2  # its own undo, and the early one
    assert stats(fresh)["ratings"] == 1
    assert len(report.torn) == 1 and "a rating record" in report.torn[0]


def test_a_failed_append_starts_a_new_shard(tmp_path, monkeypatch):
    journal = Journal(tmp_path)
    journal.append({"kind": "undo", "n": 1})
    real_write = os.write

    def half(fd, data):
        real_write(fd, data[:5])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(OSError):
        journal.append({"kind": "undo", "n": 2})
    monkeypatch.undo()
    journal.append({"kind": "undo", "n": 3})
    read = read_journal(tmp_path)
    assert [r["n"] for r in read.records] == [1, 3] and len(read.torn) == 1
    assert len(shards(tmp_path)) == 2
