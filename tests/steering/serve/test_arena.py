"""The arena without a page: tickets, one vote per comparison, undo, the ratings log and the
restore on start, admin-only data; on the tiny model of tests/app_fixtures.py."""

import pytest
from app_fixtures import OBJECTIVES

from steering.errors import UserError
from steering.model.generate import Decoding
from steering.serve.arena import Arena
from steering.serve.identity import Identity
from steering.serve.limits import RateLimits
from steering.serve.service import SteeringService
from storage.journal import read_journal

SHORT = Decoding(4, 0.7, seed=0)


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock():
    return Clock()


@pytest.fixture(scope="module")
def arena(tiny_env, clock):  # noqa: F811
    service = SteeringService(
        database_url=f"sqlite:///{tiny_env / 'arena.db'}", sweep_batch=2, dtype="float32"
    )
    identity = Identity(b"s" * 32, ticket_ttl_s=600, clock=clock)
    return Arena(service, identity, RateLimits(pairs=50, votes=50), admin_token="let-me-in")


def rater_and_pair(arena, seed=1):
    rater = arena.rater(arena.session())
    return rater, arena.new_pair(None, SHORT, rater, seed=seed)


def test_a_pair_is_voted_once_by_its_rater(arena):
    rater, pair = rater_and_pair(arena)
    assert pair.prompt in arena.service.example_prompts()
    assert pair.a.prompt == pair.b.prompt == pair.prompt
    first = arena.rate(
        pair.ticket, "tie", rater, rating_uuid="0b6c9f1e-8d3a-4c1b-9a54-0f5e7b0c2d11"
    )
    assert first.yours == 1
    again = arena.rate(
        pair.ticket, "tie", rater, rating_uuid="0b6c9f1e-8d3a-4c1b-9a54-0f5e7b0c2d11"
    )
    assert again == first  # the same vote resent: the same answer, stored once
    with pytest.raises(UserError, match="already been voted"):
        arena.rate(pair.ticket, "a", rater)
    total = arena.stats()["ratings"]
    for _ in range(30):  # thirty invented identities: none of them was shown the pair
        with pytest.raises(UserError, match="issued to another rater"):
            arena.rate(pair.ticket, "b", arena.rater(arena.session()))
    assert arena.stats()["ratings"] == total


def test_bad_votes_store_nothing(arena, clock):
    rater, pair = rater_and_pair(arena, seed=2)
    before = arena.stats()
    with pytest.raises(UserError, match="choice must be one of"):
        arena.rate(pair.ticket, "maybe", rater)
    with pytest.raises(UserError, match="is not one of"):
        arena.rate(pair.ticket, "a", rater, per_objective={"humour": "a"})
    with pytest.raises(UserError, match="ticket was not issued"):
        arena.rate(pair.ticket[:-3] + "AAA", "a", rater)
    clock.now += 601
    with pytest.raises(UserError, match="expired"):
        arena.rate(pair.ticket, "a", rater)
    clock.now -= 601
    assert arena.stats()["ratings"] == before["ratings"]


def test_every_vote_and_undo_is_in_the_log_before_it_is_acknowledged(arena):
    rater, pair = rater_and_pair(arena, seed=3)
    arena.rate(pair.ticket, "a", rater, per_objective={OBJECTIVES[0]: "b"})
    (record,) = [
        r
        for r in read_journal(arena.service.journal.directory).records
        if r["kind"] == "rating" and r["rater"]["anonymous_id"] == rater.key
    ]
    assert record["choice"] == "a" and record["objectives"] == {OBJECTIVES[0]: ["b", None]}
    assert record["comparison"]["a"]["text"] == pair.a.text
    assert record["comparison"]["b"]["weights"] == list(pair.b.weights)
    counts = arena.undo(rater)
    assert counts.yours == 0
    undos = [
        r for r in read_journal(arena.service.journal.directory).records if r["kind"] == "undo"
    ]
    assert undos[-1]["rating_uuid"] == record["rating_uuid"]
    with pytest.raises(UserError, match="no vote from the last"):
        arena.undo(rater)
    assert arena.rate(pair.ticket, "b", rater).yours == 1  # voted again after the undo


def test_a_new_database_is_restored_from_the_log_on_start(arena, tmp_path):
    rater, pair = rater_and_pair(arena, seed=4)
    arena.rate(pair.ticket, "b", rater)
    expected = arena.stats()
    # the same log directory, an empty database: a Space restarted on a new disk
    restarted = SteeringService(
        database_url=f"sqlite:///{tmp_path / 'new.db'}", log_dir=arena.service.journal.directory
    )
    ratings = Arena(restarted, arena.identity).stats()
    assert ratings["ratings"] == expected["ratings"] and ratings["raters"] == expected["raters"]
    assert restarted.restored.restored == expected["ratings"] + restarted.restored.undone


def test_other_peoples_data_needs_an_admin(arena):
    with pytest.raises(UserError, match="Only an admin"):
        arena.check_admin("")
    with pytest.raises(UserError, match="Only an admin"):
        arena.check_admin("let-me-inx")
    arena.check_admin("let-me-in")
    nobody = Arena(arena.service, arena.identity, admin_token="", admins=("carol",))
    with pytest.raises(UserError, match="Only an admin"):
        nobody.check_admin("")  # no token configured: no token opens it
    nobody.check_admin("", hub_user="carol")


def test_pairs_and_votes_are_rate_limited(arena):
    limited = Arena(arena.service, arena.identity, RateLimits(pairs=1, votes=1))
    rater = limited.rater(limited.session())
    pair = limited.new_pair("Say hi.", SHORT, rater, address="10.1.1.1")
    with pytest.raises(UserError, match="Too many pairs"):
        limited.new_pair("Say hi.", SHORT, rater, address="10.1.1.1")
    limited.rate(pair.ticket, "a", rater)
    with pytest.raises(UserError, match="Too many votes"):
        limited.rate(pair.ticket, "a", rater)


def test_a_ticket_is_refused_once_its_pair_is_gone(arena, tmp_path):
    rater, pair = rater_and_pair(arena, seed=5)
    # the same secret over a database rebuilt from the log: comparison ids are given anew
    rebuilt = SteeringService(
        database_url=f"sqlite:///{tmp_path / 'rebuilt.db'}", log_dir=tmp_path / "empty-log"
    )
    elsewhere = Arena(rebuilt, arena.identity, RateLimits(pairs=50, votes=50))
    other = elsewhere.new_pair(None, SHORT, elsewhere.rater(elsewhere.session()), seed=6)
    assert other.comparison_id == 1
    stale = arena.identity.ticket(other.comparison_id, rater, "0" * 16)
    with pytest.raises(UserError, match="no longer stored"):
        elsewhere.rate(stale, "a", rater)
    with pytest.raises(UserError, match="no longer stored"):
        elsewhere.rate(pair.ticket, "a", rater)  # the id of a pair this database never had
    assert elsewhere.stats()["ratings"] == 0


def test_a_vote_the_log_cannot_take_is_not_kept(arena, tmp_path, monkeypatch):
    rater, pair = rater_and_pair(arena, seed=7)
    before = arena.stats()["ratings"]

    def full_disk(record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(arena.service.journal, "append", full_disk)
    with pytest.raises(UserError, match="could not be saved; please vote again"):
        arena.rate(pair.ticket, "a", rater)
    assert arena.stats()["ratings"] == before
    monkeypatch.undo()
    assert arena.rate(pair.ticket, "a", rater).yours == 1  # and the vote can be cast again
