"""Rater tokens and tickets: signed by the server, bound to a rater, expiring."""

import pytest

from steering.errors import UserError
from steering.serve.identity import Identity, Rater, server_secret


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def identity(clock):
    return Identity(b"k" * 32, ticket_ttl_s=60, clock=clock)


def test_a_token_this_server_signed_names_one_rater(identity):
    token = identity.new_rater_token()
    rater = identity.rater(token)
    assert rater.key.startswith("anon:") and identity.rater(token) == rater
    assert identity.rater(identity.new_rater_token()) != rater  # every session is new


@pytest.mark.parametrize("forged", ["", None, 42, "abc", "a.b.c", "eyJyIjoiYWJjIn0.AAAA"])
def test_a_token_the_server_did_not_sign_is_refused(identity, forged):
    with pytest.raises(UserError, match="not issued by this server"):
        identity.rater(forged)


def test_another_servers_token_and_a_tampered_one_are_refused(identity):
    other = Identity(b"o" * 32).new_rater_token()
    with pytest.raises(UserError, match="not issued by this server"):
        identity.rater(other)
    body, mac = identity.new_rater_token().split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    with pytest.raises(UserError, match="not issued by this server"):
        identity.rater(tampered)


def test_a_hub_sign_in_is_the_identity(identity):
    assert identity.rater("not even a token", hub_user="alice") == Rater("hf:alice", "alice")


def test_a_ticket_is_for_its_rater_and_expires(identity, clock):
    alice, bob = identity.rater(identity.new_rater_token()), Rater("hf:bob", "bob")
    ticket = identity.ticket(7, alice, "digest-of-texts")
    assert identity.check_ticket(ticket, alice) == (7, "digest-of-texts")
    with pytest.raises(UserError, match="issued to another rater"):
        identity.check_ticket(ticket, bob)
    clock.now += 61
    with pytest.raises(UserError, match="expired"):
        identity.check_ticket(ticket, alice)
    # a rater token is no ticket, and a ticket no rater token: each is signed for its kind
    with pytest.raises(UserError, match="ticket was not issued"):
        identity.check_ticket(identity.new_rater_token(), alice)
    with pytest.raises(UserError, match="rater token was not issued"):
        identity.rater(identity.ticket(7, alice))


def test_the_secret_comes_from_the_environment_or_is_made_once(tmp_path, monkeypatch):
    monkeypatch.delenv("STEERING_SECRET", raising=False)
    first = server_secret(tmp_path)
    assert len(first) == 64 and server_secret(tmp_path) == first
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no partial file left
    monkeypatch.setenv("STEERING_SECRET", "from the environment, long enough")
    assert server_secret(tmp_path) == b"from the environment, long enough"


def test_a_short_or_empty_secret_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_SECRET", "short")
    with pytest.raises(UserError, match="shorter than 16 bytes"):
        server_secret(tmp_path)
    monkeypatch.delenv("STEERING_SECRET")
    (tmp_path / "secret.key").write_bytes(b"")  # a crash left it empty: anyone could sign
    with pytest.raises(UserError, match="shorter than 16 bytes"):
        server_secret(tmp_path)
