"""Writes: idempotency, one vote per rater, all-or-nothing, and one ValueError for bad input."""

import math
import re
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event

from storage import engine as storage_engine
from storage import models
from storage.engine import make_engine
from storage.queries import frontier_points, rater_counts
from storage.repository import (
    DuplicateVoteError,
    add_comparison,
    add_prompt,
    add_rating,
    add_scores,
    ensure_rater,
)


def test_generation_round_trip_with_scores(build):
    gid = build.generation(
        text="Sunny and warm.",
        weights=[0.75, 0.25],
        seed=7,
        scores={"positivity": (0.9, 0.8), "brevity": (3.0, 0.6)},
        adapter_sha256="ab" * 32,
    )
    (point,) = frontier_points(build.engine)
    assert point.generation_id == gid
    assert (point.prompt, point.text, point.method) == ("Say something.", "Sunny and warm.", "clp")
    assert point.objectives == ("positivity", "brevity")
    assert point.weights == (0.75, 0.25)
    assert point.scores == {"positivity": 0.8, "brevity": 0.6}


def test_prompts_are_stored_once(build):
    first = add_prompt(build.engine, "Tell a joke.")
    build.generation("Tell a joke.")
    build.generation("Tell a joke.")
    assert add_prompt(build.engine, "Tell a joke.") == first
    assert build.counts()["prompts"] == 1


def test_scores_can_follow_but_not_repeat(build):
    gid = build.generation()
    add_scores(build.engine, gid, {"positivity": (0.1, 0.2)})
    with pytest.raises(ValueError, match="already has scores for \\['positivity'\\]"):
        add_scores(build.engine, gid, {"brevity": (1.0, 0.5), "positivity": (0.3, 0.4)})
    (point,) = frontier_points(build.engine)
    assert point.scores == {"positivity": 0.2}


def test_resubmitted_rating_is_stored_once(build):
    cid, rid, key = build.comparison(), build.rater(), uuid.uuid4()
    vote = {"choice": "a", "per_objective": {"positivity": "a"}, "likert": {"brevity": 2}}
    first = add_rating(build.engine, cid, rid, rating_uuid=key, **vote)
    assert add_rating(build.engine, cid, rid, rating_uuid=str(key), **vote) == first
    counts = build.counts()
    assert (counts["ratings"], counts["rating_objectives"]) == (1, 2)


def test_a_uuid_cannot_be_reused_for_another_vote(build):
    cid, rid, key = build.comparison(), build.rater(), uuid.uuid4()
    add_rating(build.engine, cid, rid, "a", key)
    with pytest.raises(ValueError, match="already used for a different vote"):
        add_rating(build.engine, cid, rid, "b", key)


def test_second_vote_by_the_same_rater_is_a_duplicate_vote(build):
    cid, rid = build.comparison(), build.rater()
    add_rating(build.engine, cid, rid, "a", uuid.uuid4())
    with pytest.raises(DuplicateVoteError, match="already voted on comparison") as raised:
        add_rating(build.engine, cid, rid, "b", uuid.uuid4())
    assert isinstance(raised.value, ValueError)
    assert build.counts()["ratings"] == 1
    # Another rater may still vote on it.
    add_rating(build.engine, cid, build.rater("anon-2"), "b", uuid.uuid4())


def test_concurrent_resubmissions_and_double_votes(build):
    """Eight clients at once: the same UUID is stored once; different UUIDs from one rater on
    one comparison give one vote and seven DuplicateVoteErrors (the race path of PostgreSQL)."""
    same, double = build.comparison(), build.comparison()
    rid, key = build.rater(), uuid.uuid4()
    barrier = threading.Barrier(8)

    def resubmit(_) -> int:
        barrier.wait()
        return add_rating(build.engine, same, rid, "tie", key)

    def vote_again(_) -> str:
        barrier.wait()
        try:
            add_rating(build.engine, double, rid, "a", uuid.uuid4())
        except DuplicateVoteError:
            return "duplicate"
        return "stored"

    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(resubmit, range(8)))) == 1
        assert sorted(pool.map(vote_again, range(8))) == ["duplicate"] * 7 + ["stored"]
    assert build.counts()["ratings"] == 2


class Boom(RuntimeError):
    pass


@pytest.fixture
def fail_inserting():
    """fail_inserting(Model) makes flushes raise Boom just before inserting Model rows, after the
    rows they depend on were inserted in the same transaction; it returns a function undoing that."""
    installed = []

    def install(model):
        def boom(*_):
            raise Boom(f"injected failure before inserting {model.__tablename__}")

        event.listen(model, "before_insert", boom)
        installed.append((model, boom))
        return lambda: event.remove(model, "before_insert", boom) or installed.remove((model, boom))

    yield install
    for model, boom in installed:
        event.remove(model, "before_insert", boom)


def test_failed_generation_write_leaves_nothing(build, fail_inserting):
    before = build.counts()
    fail_inserting(models.Score)
    with pytest.raises(Boom):
        build.generation("A brand new prompt.", scores={"positivity": (1.0, 1.0)})
    assert build.counts() == before


def test_failed_rating_write_leaves_nothing(build, fail_inserting):
    cid, rid = build.comparison(), build.rater()
    before = build.counts()
    repair = fail_inserting(models.RatingObjective)
    key = uuid.uuid4()
    with pytest.raises(Boom):
        add_rating(build.engine, cid, rid, "a", key, per_objective={"positivity": "a"})
    assert build.counts() == before
    # Nothing half-stored gets in the way of the client's retry.
    repair()
    add_rating(build.engine, cid, rid, "a", key, per_objective={"positivity": "a"})
    assert build.counts()["ratings"] == before["ratings"] + 1


def _bad_calls():
    long_text = "x" * (models.MAX_TEXT_CHARS + 1)
    generation = {
        "wrong number of weights": ({"weights": [1.0]}, "got 1 weights for 2 objectives"),
        "weights off the simplex": ({"weights": [0.7, 0.7]}, "must sum to 1"),
        "negative weight": ({"weights": [1.5, -0.5]}, "finite number >= 0"),
        "NaN weight": ({"weights": [math.nan, 1.0]}, "finite number"),
        "text over the limit": ({"text": long_text}, "the limit is 32000"),
        "prompt over the limit": ({"prompt": "p" * 8_001}, "the limit is 8000"),
        "empty prompt": ({"prompt": "  "}, "the prompt is empty"),
        "NUL in text": ({"text": "a\x00b"}, "NUL"),
        "empty method": ({"method": ""}, "method is empty"),
        "objective twice": ({"objectives": ["brevity", "brevity"]}, "twice"),
        "negative token count": ({"tokens": -1}, "tokens must be between 0"),
        "boolean seed": ({"seed": True}, "seed must be an integer"),
        "infinite latency": ({"latency_s": math.inf}, "latency_s"),
        "unserialisable decoding": ({"decoding": {"stop": object()}}, "decoding parameters"),
        "malformed score": ({"scores": {"positivity": (1.0,)}}, "(raw, normalised) pair"),
        "malformed adapter hash": ({"adapter_sha256": "xyz"}, "64 lowercase hex"),
    }
    for name, (overrides, message) in generation.items():
        yield name, lambda b, ids, o=overrides: b.generation(**o), message
    yield (
        "comparison of an unknown generation",
        lambda b, ids: add_comparison(b.engine, ids["gen"], 999_999),
        "no generation with id 999999",
    )
    yield (
        "comparison across prompts",
        lambda b, ids: add_comparison(b.engine, ids["gen"], ids["other_prompt_gen"]),
        "different prompts",
    )
    yield (
        "comparison across objective sets",
        lambda b, ids: add_comparison(b.engine, ids["gen"], ids["other_objectives_gen"]),
        "different objectives",
    )
    yield (
        "scores for an unknown generation",
        lambda b, ids: add_scores(b.engine, 999_999, {"positivity": (1.0, 1.0)}),
        "no generation with id 999999",
    )
    rating = {
        "unknown comparison": ({"comparison_id": 999_999}, "no comparison with id 999999"),
        "unknown rater": ({"rater_id": 999_999}, "no rater with id 999999"),
        "choice outside the set": ({"choice": "c"}, "choice must be one of a, b, tie, both_bad"),
        "Likert 0": ({"likert": {"brevity": 0}}, "integer 1-5"),
        "Likert 6": ({"likert": {"brevity": 6}}, "integer 1-5"),
        "fractional Likert": ({"likert": {"brevity": 2.5}}, "integer 1-5"),
        "per-objective both_bad": ({"per_objective": {"brevity": "both_bad"}}, "one of a, b, tie"),
        "objective not compared": ({"per_objective": {"humour": "a"}}, "not on ['humour']"),
        "Likert contradicting the choice": (
            {"per_objective": {"brevity": "a"}, "likert": {"brevity": 5}},
            "contradicts",
        ),
        "malformed UUID": ({"rating_uuid": "not-a-uuid"}, "must be a UUID"),
        "string id": ({"comparison_id": "1"}, "must be an integer"),
    }
    for name, (overrides, message) in rating.items():
        yield (
            name,
            lambda b, ids, o=overrides: add_rating(
                b.engine,
                **{
                    "comparison_id": ids["comparison"],
                    "rater_id": ids["rater"],
                    "choice": "a",
                    "rating_uuid": uuid.uuid4(),
                }
                | o,
            ),
            message,
        )
    yield "empty rater id", lambda b, ids: ensure_rater(b.engine, ""), "rater id is empty"
    yield (
        "user name over the limit",
        lambda b, ids: ensure_rater(b.engine, "anon-9", "u" * 129),
        "the limit is 128",
    )


BAD_CALLS = list(_bad_calls())


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_one_value_error_and_writes_nothing(build, call, message):
    ids = {
        "gen": build.generation(),
        "other_prompt_gen": build.generation("Another prompt."),
        "other_objectives_gen": build.generation(weights=[1.0], objectives=["humour"]),
        "comparison": build.comparison(),
        "rater": build.rater(),
    }
    before = build.counts()
    with pytest.raises(ValueError, match=re.escape(message)):
        call(build, ids)
    assert build.counts() == before


def test_ensure_rater_is_idempotent_and_records_a_later_sign_in(build):
    rid = ensure_rater(build.engine, "anon-7")
    assert ensure_rater(build.engine, "anon-7", "ada") == rid
    assert ensure_rater(build.engine, "anon-7") == rid
    (count,) = rater_counts(build.engine)
    assert (count.rater_id, count.anonymous_id, count.user_name, count.ratings) == (
        rid,
        "anon-7",
        "ada",
        0,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://localhost/steering", "unsupported database 'mysql'"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
        ("postgresql+psycopg2://localhost/x", "psycopg 3"),
        ("not a url", "is not a database URL"),
    ],
)
def test_unsupported_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        make_engine(url)


def test_sqlite_connections_are_configured(sqlite_path):
    engine = make_engine(f"sqlite:///{sqlite_path}")
    with engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        }
    engine.dispose()
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "synchronous": 2,
    }


def test_sqlite_write_retries_while_another_process_holds_the_lock(sqlite_path, monkeypatch):
    # A 50 ms busy timeout makes the first attempts fail with "database is locked"; the write
    # must retry until the other writer commits 0.5 s later, then succeed.
    monkeypatch.setattr(storage_engine, "BUSY_TIMEOUT_MS", 50)
    engine = make_engine(f"sqlite:///{sqlite_path}")
    holder = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(
        "INSERT INTO raters (anonymous_id, created_at) VALUES ('holder', '2025-01-01 00:00:00.000000')"
    )
    release = threading.Timer(0.5, holder.execute, args=("COMMIT",))
    lock_errors = []
    event.listen(
        engine, "handle_error", lambda context: lock_errors.append(str(context.original_exception))
    )
    release.start()
    try:
        rid = ensure_rater(engine, "patient")
    finally:
        release.join()
        holder.close()
    assert lock_errors and set(lock_errors) == {"database is locked"}
    assert {c.anonymous_id for c in rater_counts(engine)} == {"holder", "patient"}
    assert rid > 0
    engine.dispose()
