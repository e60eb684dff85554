"""Concurrent-rating benchmark: many raters voting at once, on SQLite and then on PostgreSQL.

    python -m storage bench                  # 16 threads x 200 ratings on each backend
    python -m storage bench --json           # {"sqlite": {...}, "postgresql": {...}}

Each thread is one rater voting on the same 200 comparisons in its own random order, as fast as
it can; every 8th vote is sent a second time with the same UUID, as a client retrying after a
lost reply would. Afterwards the database is counted: `stored` must equal `expected` (one row per
distinct vote), `duplicates` (extra rows for a UUID or for a rater's vote on a comparison) must be 0,
and `errors` counts failed writes plus acknowledged votes missing from the database.
SQLite runs in a temporary directory; PostgreSQL in a scratch database on --postgres-url, or in a
throwaway cluster when the PostgreSQL binaries are installed. Setup is not timed.

Each backend runs twice, side by side: as the database alone, and with the ratings log on
(`+log`: every acknowledged vote is also read back and appended, fsynced, to an append-only log
shard before it counts as acknowledged, as the app does; storage.journal).
"""

import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select

from storage.engine import make_engine, read_session, upgrade
from storage.journal import Journal, rating_record
from storage.models import Rating
from storage.pg_cluster import postgres_bin_dir, scratch_database, throwaway_cluster
from storage.repository import add_comparison, add_generation, add_rating, ensure_rater

RESUBMIT_EVERY = 8
_OBJECTIVES = ("positivity", "brevity")


@dataclass(frozen=True)
class BenchResult:
    stored: int
    expected: int
    errors: int
    duplicates: int
    per_s: float  # distinct ratings stored per second of wall-clock time
    resubmitted: int


def _prepare(engine: Engine, comparisons: int, raters: int) -> tuple[list[int], list[int]]:
    comparison_ids = []
    for c in range(comparisons):
        prompt = f"Benchmark prompt {c // 10}: describe the weather."
        generation_ids = [
            add_generation(
                engine,
                prompt,
                f"Generation {c}-{side}.",
                method,
                f"bench/{method}",
                [w, 1.0 - w],
                list(_OBJECTIVES),
                seed=c,
                decoding={"temperature": 0.7, "top_p": 0.95},
                tokens=12,
                latency_s=0.1,
                scores={"positivity": (w, w), "brevity": (12.0, 1.0 - w)},
            )
            for side, method, w in (("a", "clp", 0.75), ("b", "soups", 0.25))
        ]
        comparison_ids.append(add_comparison(engine, *generation_ids))
    rater_ids = [ensure_rater(engine, f"bench-rater-{r}") for r in range(raters)]
    return comparison_ids, rater_ids


def run(url: str, threads: int = 16, per_thread: int = 200, log: Path | None = None) -> BenchResult:
    """Benchmark the empty database at `url` (it is migrated first), with the ratings log in
    the directory `log` when given."""
    upgrade(url)
    engine = make_engine(url)
    journal = Journal(log) if log is not None else None
    try:
        comparison_ids, rater_ids = _prepare(engine, per_thread, threads)
        acknowledged: list[uuid.UUID] = []
        errors: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(threads + 1)

        def rater(index: int) -> None:
            rng = random.Random(index)
            order = rng.sample(comparison_ids, len(comparison_ids))
            start.wait()
            for k, comparison_id in enumerate(order):
                key = uuid.uuid4()
                vote = {
                    "choice": rng.choice(["a", "b", "tie", "both_bad"]),
                    "per_objective": {"positivity": rng.choice(["a", "b", "tie"])},
                    "likert": {"brevity": rng.randint(1, 5)},
                }
                try:
                    rating_id = add_rating(
                        engine, comparison_id, rater_ids[index], rating_uuid=key, **vote
                    )
                    if journal is not None:
                        journal.append(rating_record(engine, key))
                    if k % RESUBMIT_EVERY == 0 and rating_id != add_rating(
                        engine, comparison_id, rater_ids[index], rating_uuid=key, **vote
                    ):
                        raise AssertionError(f"resubmitting {key} returned another id")
                except Exception as exc:  # counted and reported: the benchmark must not stop early
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    acknowledged.append(key)

        workers = [threading.Thread(target=rater, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        start.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began

        votes = (
            select(func.count(Rating.id).label("rows"))
            .group_by(Rating.comparison_id, Rating.rater_id)
            .subquery()
        )
        with read_session(engine) as session:
            stored_uuids = set(session.scalars(select(Rating.uuid)))
            stored = session.scalar(select(func.count(Rating.id)))
            # int(): PostgreSQL sums integers as NUMERIC, which arrives as a Decimal.
            extra_votes = int(session.scalar(select(func.coalesce(func.sum(votes.c.rows - 1), 0))))
        missing = len(set(acknowledged) - stored_uuids)
        return BenchResult(
            stored=stored,
            expected=threads * per_thread,
            errors=len(errors) + missing,
            duplicates=(stored - len(stored_uuids)) + extra_votes,
            per_s=len(stored_uuids) / elapsed,
            resubmitted=len(range(0, per_thread, RESUBMIT_EVERY)) * threads,
        )
    finally:
        if journal is not None:
            journal.close()
        engine.dispose()


def run_sqlite(threads: int, per_thread: int, logged: bool = False) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="steering-bench-") as directory:
        log = Path(directory) / "log" if logged else None
        return run(f"sqlite:///{Path(directory) / 'bench.db'}", threads, per_thread, log)


def run_postgresql(
    threads: int, per_thread: int, server_url: str | None, logged: bool = False
) -> BenchResult | str:
    """The result, or the reason PostgreSQL was skipped."""
    with tempfile.TemporaryDirectory(prefix="steering-bench-") as directory:
        log = Path(directory) / "log" if logged else None
        if server_url is not None:
            with scratch_database(server_url) as url:
                return run(url, threads, per_thread, log)
        if postgres_bin_dir() is None:
            return "no --postgres-url and PostgreSQL is not installed"
        with throwaway_cluster(durable=True) as server, scratch_database(server) as url:
            return run(url, threads, per_thread, log)
