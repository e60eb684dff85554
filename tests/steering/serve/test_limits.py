"""Rate limits over a sliding minute, and the client address behind a proxy."""

import pytest

from steering.errors import UserError
from steering.serve.limits import ADDRESS_FACTOR, RateLimits, SlidingWindow, client_address


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_window_forgets_events_older_than_it():
    clock = Clock()
    window = SlidingWindow(2, window_s=60, clock=clock)
    assert window.allow("k") and window.allow("k") and not window.allow("k")
    assert window.allow("other")  # per key
    clock.now = 59.9
    assert not window.allow("k")
    clock.now = 60.0  # the first two are a minute old
    assert window.allow("k") and window.allow("k") and not window.allow("k")


def test_limits_per_rater_and_per_address():
    limits = RateLimits(pairs=2, votes=3, clock=Clock())
    limits.check("pairs", "alice", "10.0.0.1")
    limits.check("pairs", "alice", "10.0.0.1")
    with pytest.raises(
        UserError, match=r"Too many pairs for you in the last minute \(the limit is 2\)"
    ):
        limits.check("pairs", "alice", "10.0.0.1")
    limits.check("votes", "alice", "10.0.0.1")  # votes count apart from pairs
    # new identities from one address still meet the address's limit
    for n in range(2 * ADDRESS_FACTOR - 2):
        limits.check("pairs", f"sybil-{n}", "10.0.0.1")
    with pytest.raises(UserError, match="your network address"):
        limits.check("pairs", "one-more", "10.0.0.1")
    limits.check("pairs", "carol", None)  # no address known: the rater's limit alone


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("STEERING_VOTES_PER_MINUTE", "1")
    limits = RateLimits(clock=Clock())
    limits.check("votes", "alice", None)
    with pytest.raises(UserError, match="limit is 1"):
        limits.check("votes", "alice", None)
    monkeypatch.setenv("STEERING_PAIRS_PER_MINUTE", "many")
    with pytest.raises(UserError, match="must be a whole number"):
        RateLimits()


def test_the_address_behind_trusted_proxies(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("STEERING_TRUSTED_PROXIES", raising=False)
    headers = {"x-forwarded-for": "6.6.6.6, 1.2.3.4"}
    # no proxy in front: the header is whatever the client sent, the peer is the address
    assert client_address(headers, "9.9.9.9") == "9.9.9.9"
    monkeypatch.setenv("SPACE_ID", "user/space")  # the Space proxy appends what it saw
    assert client_address(headers, "10.0.0.2") == "1.2.3.4"
    monkeypatch.setenv("STEERING_TRUSTED_PROXIES", "2")
    assert client_address(headers, "10.0.0.2") == "6.6.6.6"
    assert client_address({}, "10.0.0.2") == "10.0.0.2"


def test_refused_requests_count_nowhere_and_old_keys_are_forgotten():
    clock = Clock()
    limits = RateLimits(pairs=1, votes=1, clock=clock)
    limits.check("pairs", "alice", "10.0.0.9")
    for _ in range(10):  # refused by the rater's window: the address's is not spent
        with pytest.raises(UserError):
            limits.check("pairs", "alice", "10.0.0.9")
    for n in range(ADDRESS_FACTOR - 1):
        limits.check("pairs", f"other-{n}", "10.0.0.9")
    window = limits._windows[("pairs", "rater")]
    clock.now = 61.0
    assert not window.full("alice") and "alice" not in window._events


def test_new_identities_are_limited_per_address():
    limits = RateLimits(clock=Clock())
    for _ in range(30):
        limits.check("sessions", None, "10.0.0.7")
    with pytest.raises(UserError, match="Too many sessions for your network address"):
        limits.check("sessions", None, "10.0.0.7")
