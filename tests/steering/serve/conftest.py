"""A ratings log with real votes in it, for the tests of what keeps the log."""

import uuid

import pytest

from storage.engine import make_engine, upgrade
from storage.journal import Journal, rating_record
from storage.queries import stats
from storage.repository import add_comparison, add_generation, add_rating, ensure_rater


@pytest.fixture
def logged_votes(tmp_path):
    """(log directory, the stats of the database it was logged from): two raters, three votes."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    upgrade(url)
    engine = make_engine(url)
    journal = Journal(tmp_path / "log")
    for n, rater in enumerate(["anon:a", "anon:b", "anon:a"]):
        ids = [
            add_generation(
                engine,
                f"Prompt {n}",
                f"{side} {n}",
                "clp",
                "test",
                [0.5, 0.5],
                ["positivity", "relevance"],
                0,
                {},
                3,
                0.1,
            )
            for side in ("a", "b")
        ]
        key = str(uuid.uuid4())
        add_rating(engine, add_comparison(engine, *ids), ensure_rater(engine, rater), "a", key)
        journal.append(rating_record(engine, key))
    journal.close()
    expected = stats(engine)
    engine.dispose()
    return tmp_path / "log", expected
