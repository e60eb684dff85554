"""Ratings stored through the real storage layer, as the app stores them (shared by the tests of
`train-reward` and of the loop from ratings to a retrained policy)."""

from pathlib import Path
from uuid import uuid4

from storage.engine import make_engine, upgrade
from storage.repository import add_comparison, add_generation, add_rating, ensure_rater

POLITE = [
    "Thank you so much, I would be glad to help you with that.",
    "Happy to help, here is a kind answer.",
]
RUDE = [
    "Figure it out yourself, this is a stupid question.",
    "Go away, I am not answering that.",
]


def store_polite_ratings(path: Path, pairs: int) -> str:
    """A SQLite database at `path` where one rater preferred the polite answer in every pair;
    returns its URL."""
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    rater = ensure_rater(engine, "rater-1")
    for k in range(pairs):
        prompt = f"Question number {k}: can you help me with my homework?"
        ids = [
            add_generation(
                engine,
                prompt,
                text,
                "clp",
                "test",
                [0.5, 0.5],
                ["positivity", "relevance"],
                0,
                {},
                10,
                0.1,
            )
            for text in (POLITE[k % 2], RUDE[k % 2])
        ]
        comparison = add_comparison(engine, ids[0], ids[1])
        # the polite answer, shown as A, wins every comparison
        add_rating(engine, comparison, rater, "a", str(uuid4()), likert={"positivity": 1 + k % 2})
    return url
