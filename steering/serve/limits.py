"""Rate limits on pairs and votes, per rater and per client address, over a sliding minute.

    STEERING_PAIRS_PER_MINUTE=20  STEERING_VOTES_PER_MINUTE=30   (per rater; 4x per address)

The defaults let one honest person read and vote as fast as they can; a script that asks for
pairs or votes in a loop meets one clear sentence.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict, deque

from steering.errors import UserError

PAIRS_ENV = "STEERING_PAIRS_PER_MINUTE"
VOTES_ENV = "STEERING_VOTES_PER_MINUTE"
DEFAULT_PAIRS = 20
DEFAULT_VOTES = 30
# several people may share one address (a household, an office behind one proxy)
ADDRESS_FACTOR = 4
SESSIONS_PER_ADDRESS = 30
WINDOW_S = 60.0


def _per_minute(env: str, default: int) -> int:
    value = os.environ.get(env, "").strip()
    if not value:
        return default
    try:
        limit = int(value)
    except ValueError:
        raise UserError(f"{env} must be a whole number, got {value!r}") from None
    if limit < 1:
        raise UserError(f"{env} must be at least 1, got {limit}")
    return limit


class SlidingWindow:
    """At most `limit` events per key within any `window_s` seconds."""

    def __init__(self, limit: int, window_s: float = WINDOW_S, clock=time.monotonic):
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def full(self, key: str) -> bool:
        """Whether `key` has used its limit in the current window (nothing is counted)."""
        now = self._clock()
        with self._lock:
            events = self._events.get(key)
            while events and now - events[0] >= self.window_s:
                events.popleft()
            if events is not None and not events:
                del self._events[key]  # forgotten keys take no memory
                events = None
            return events is not None and len(events) >= self.limit

    def count(self, key: str) -> None:
        with self._lock:
            self._events[key].append(self._clock())

    def allow(self, key: str) -> bool:
        """Count one event for `key` if it is within the limit; False (nothing counted) if not."""
        if self.full(key):
            return False
        self.count(key)
        return True


class RateLimits:
    """The limits of one service: pairs and votes, per rater and per client address."""

    def __init__(
        self,
        pairs: int | None = None,
        votes: int | None = None,
        sessions: int = SESSIONS_PER_ADDRESS,
        clock=time.monotonic,
    ):
        pairs = pairs or _per_minute(PAIRS_ENV, DEFAULT_PAIRS)
        votes = votes or _per_minute(VOTES_ENV, DEFAULT_VOTES)
        self._windows = {
            ("pairs", "rater"): SlidingWindow(pairs, clock=clock),
            ("pairs", "address"): SlidingWindow(pairs * ADDRESS_FACTOR, clock=clock),
            ("votes", "rater"): SlidingWindow(votes, clock=clock),
            ("votes", "address"): SlidingWindow(votes * ADDRESS_FACTOR, clock=clock),
            # new identities are free: an address may make a few a minute, not thousands
            ("sessions", "address"): SlidingWindow(sessions, clock=clock),
        }

    def check(self, what: str, rater: str | None, address: str | None) -> None:
        """Count a request for `what` ("pairs", "votes" or "sessions"); UserError once a limit
        is reached. Every window is checked before any counts, so a refused request costs none."""
        checks = ([("rater", rater)] if rater else []) + ([("address", address)] if address else [])
        windows = [(scope, key, self._windows[(what, scope)]) for scope, key in checks]
        for scope, key, window in windows:
            if window.full(key):
                who = "you" if scope == "rater" else "your network address"
                raise UserError(
                    f"Too many {what} for {who} in the last minute (the limit is "
                    f"{window.limit}); please wait a moment."
                )
        for _, key, window in windows:
            window.count(key)


PROXIES_ENV = "STEERING_TRUSTED_PROXIES"


def client_address(headers, peer: str | None) -> str | None:
    """The client's network address. Behind N trusted proxies (STEERING_TRUSTED_PROXIES; 1 on
    a Space, whose proxy appends the address it saw to x-forwarded-for; else 0) it is the Nth
    entry from the end of x-forwarded-for: entries before it are whatever the client sent."""
    default = "1" if os.environ.get("SPACE_ID") else "0"
    try:
        proxies = max(0, int(os.environ.get(PROXIES_ENV, default)))
    except ValueError:
        raise UserError(f"{PROXIES_ENV} must be a whole number") from None
    hops = [h.strip() for h in (headers.get("x-forwarded-for") or "").split(",") if h.strip()]
    if proxies and len(hops) >= proxies:
        return hops[-proxies]
    return peer


def request_identity(request, profile) -> tuple[str | None, str | None]:
    """(client address, Hub user name) of a web request (gradio's Request and OAuthProfile, or
    None): what the server, never the client, says about who is asking."""
    peer = getattr(getattr(request, "client", None), "host", None)
    address = client_address(request.headers if request is not None else {}, peer)
    return address, getattr(profile, "username", None)
