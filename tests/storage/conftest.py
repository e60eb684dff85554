"""Storage fixtures: every test taking `url` or `engine` runs on SQLite and on PostgreSQL.

PostgreSQL comes from TEST_POSTGRES_URL (a superuser URL; .ci/postgres.sh sets it), else from a
throwaway cluster started here when the binaries are installed, else those tests are skipped.
Every test starts from an empty database of its own (see SqliteBackend and PostgresBackend).
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from storage import models
from storage.engine import make_engine, upgrade
from storage.pg_cluster import create_database, drop_database, postgres_bin_dir, throwaway_cluster
from storage.repository import add_comparison, add_generation, add_rating, ensure_rater

OBJECTIVES = ["positivity", "brevity"]


class SqliteBackend:
    """Each test gets its own file; migrated ones are copies of a file migrated once."""

    name = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        upgrade(f"sqlite:///{self.template}")

    def empty(self) -> str:
        return f"sqlite:///{self.root / uuid.uuid4().hex}.db"

    def drop(self, url: str) -> None:
        """Files go with pytest's temporary directory."""

    def migrated(self) -> str:
        path = self.root / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"

    def release(self, url: str) -> None:
        """Files go with pytest's temporary directory."""


class PostgresBackend:
    """Empty databases are created per test; migrated tests share one database, emptied after
    each test (TRUNCATE takes milliseconds where CREATE DATABASE takes a few hundred)."""

    name = "postgresql"

    def __init__(self, server: str) -> None:
        self.server = server
        self.shared = create_database(server)
        upgrade(self.shared)

    def empty(self) -> str:
        return create_database(self.server)

    def drop(self, url: str) -> None:
        drop_database(url)

    def migrated(self) -> str:
        return self.shared

    def release(self, url: str) -> None:
        tables = ", ".join(table.name for table in models.Base.metadata.sorted_tables)
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY")
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"]
    elif postgres_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed and TEST_POSTGRES_URL is not set")
    else:
        with throwaway_cluster(durable=False) as server:
            yield server


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request, tmp_path_factory) -> Iterator[SqliteBackend | PostgresBackend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path_factory.mktemp("sqlite"))
    else:
        backend = PostgresBackend(request.getfixturevalue("postgres_server"))
        yield backend
        drop_database(backend.shared)


@pytest.fixture
def url(backend) -> Iterator[str]:
    """URL of a new, empty database."""
    new = backend.empty()
    yield new
    backend.drop(new)


@pytest.fixture
def engine(backend) -> Iterator[Engine]:
    """Engine on an empty database at the head revision."""
    url = backend.migrated()
    engine = make_engine(url)
    yield engine
    engine.dispose()
    backend.release(url)


@pytest.fixture
def sqlite_path(tmp_path) -> Path:
    """A migrated SQLite database file, for tests of SQLite-only behaviour."""
    path = tmp_path / "steering.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_build(sqlite_path) -> Iterator["Builder"]:
    """A Builder on a SQLite file (the `sqlite_path` database), for SQLite-only tests."""
    engine = make_engine(f"sqlite:///{sqlite_path}")
    yield Builder(engine)
    engine.dispose()


class Builder:
    """Valid test data in few words: keyword arguments override add_generation's defaults."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def generation(self, prompt: str = "Say something.", **overrides) -> int:
        arguments = {
            "prompt": prompt,
            "text": "Something.",
            "method": "clp",
            "adapter_id": "assets/adapters/clp",
            "weights": [0.5, 0.5],
            "objectives": OBJECTIVES,
            "seed": 0,
            "decoding": {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 64},
            "tokens": 3,
            "latency_s": 0.25,
        } | overrides
        return add_generation(self.engine, **arguments)

    def comparison(self, a: dict | None = None, b: dict | None = None) -> int:
        """Two generations of one prompt, side by side; a and b override their arguments."""
        return add_comparison(
            self.engine, self.generation(**(a or {})), self.generation(**(b or {}))
        )

    def rater(self, anonymous_id: str = "anon-1") -> int:
        return ensure_rater(self.engine, anonymous_id)

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        tables = (
            models.Prompt,
            models.Generation,
            models.Score,
            models.Comparison,
            models.Rater,
            models.Rating,
            models.RatingObjective,
        )
        with self.engine.connect() as connection:
            return {
                t.__tablename__: connection.scalar(select(func.count()).select_from(t))
                for t in tables
            }


@pytest.fixture
def build(engine) -> Builder:
    return Builder(engine)


@pytest.fixture
def rated(build):
    """One prompt, four generations, four comparisons, seven ratings by three raters.

    g1 clp   w=(0.8, 0.2)  region positivity
    g2 soups w=(0.2, 0.8)  region brevity
    g3 base  w=(0.5, 0.5)  region positivity+brevity
    g4 clp   w=(0.6, 0.4)  region positivity
    Weights are on (positivity, brevity).
    """
    g = {
        1: build.generation(text="one", method="clp", weights=[0.8, 0.2],
                            scores={"positivity": (0.9, 0.9), "brevity": (40.0, 0.2)}),
        2: build.generation(text="two", method="soups", weights=[0.2, 0.8],
                            scores={"positivity": (0.1, 0.1)}),
        3: build.generation(text="three", method="base", weights=[0.5, 0.5]),
        4: build.generation(text="four", method="clp", weights=[0.6, 0.4]),
    }  # fmt: skip
    c = {
        (i, j): add_comparison(build.engine, g[i], g[j])
        for i, j in [(1, 2), (1, 3), (2, 3), (1, 4)]
    }
    r = {n: build.rater(f"anon-{n}") for n in (1, 2, 3)}

    def vote(pair, rater, choice, per_objective=None, likert=None):
        add_rating(build.engine, c[pair], r[rater], choice, uuid.uuid4(), per_objective, likert)

    vote((1, 2), 1, "a", {"positivity": "a"})
    vote((1, 2), 2, "a", {"positivity": "b"})
    vote((1, 2), 3, "b", likert={"positivity": 3})
    vote((1, 3), 1, "tie", {"positivity": "a"})
    vote((1, 3), 2, "both_bad")
    vote((2, 3), 1, "b", likert={"positivity": 5})
    vote((1, 4), 1, "a", {"positivity": "a"})
    return build.engine, g, r
