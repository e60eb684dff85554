"""Who is voting, and on what: server-signed rater tokens and tickets.

A rater token is an anonymous identity the server issued (`/session`); a ticket is a signed,
expiring reference to one comparison, bound to the rater it was issued to. Both are HMAC-SHA256
signatures with the server's secret (`STEERING_SECRET`, else a random secret written once beside
the data), so a client can neither invent an identity nor vote on a comparison it was not shown.
A Hugging Face sign-in, when there is one, is the identity instead of the anonymous token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from steering.errors import UserError

SECRET_ENV = "STEERING_SECRET"
SECRET_FILE = "secret.key"
TICKET_TTL_S = 15 * 60


def server_secret(directory: Path) -> bytes:
    """STEERING_SECRET, else the secret kept in `directory`, made (readable by the owner only)
    the first time; every process of one deployment then signs alike."""
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    path = directory / SECRET_FILE
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Rater:
    """A verified identity: `key` is what storage records as the rater's id."""

    key: str
    user_name: str | None = None


class Identity:
    """Issues and checks rater tokens and tickets with one server secret."""

    def __init__(self, secret: bytes, ticket_ttl_s: float = TICKET_TTL_S, clock=time.time):
        self._secret = secret
        self.ticket_ttl_s = ticket_ttl_s
        self._clock = clock

    def _sign(self, kind: str, payload: dict) -> str:
        body = _b64(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
        mac = hmac.new(self._secret, f"{kind}.{body}".encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def _open(self, kind: str, token: object) -> dict | None:
        """The payload of a token this server signed for `kind`, else None."""
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 1024:
            return None
        body, mac = token.split(".")
        expected = hmac.new(self._secret, f"{kind}.{body}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(mac), expected):
                return None
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeDecodeError):
            return None
        return payload if isinstance(payload, dict) else None

    def new_rater_token(self) -> str:
        return self._sign("rater", {"r": uuid.uuid4().hex})

    def rater(self, token: object, hub_user: str | None = None) -> Rater:
        """The rater behind a request: the signed-in Hub user, else the anonymous token's."""
        if hub_user:
            return Rater(f"hf:{hub_user}", hub_user)
        payload = self._open("rater", token)
        if payload is None or not isinstance(payload.get("r"), str):
            raise UserError(
                "That rater token was not issued by this server; ask /session for a new one."
            )
        return Rater(f"anon:{payload['r']}")

    def ticket(self, comparison_id: int, rater: Rater) -> str:
        expires = int(self._clock() + self.ticket_ttl_s)
        return self._sign("ticket", {"c": int(comparison_id), "r": rater.key, "e": expires})

    def check_ticket(self, ticket: object, rater: Rater) -> int:
        """The comparison a ticket stands for, if it is genuine, unexpired and this rater's."""
        payload = self._open("ticket", ticket)
        if payload is None or not {"c", "r", "e"} <= set(payload):
            raise UserError("That ticket was not issued by this server; ask for a new pair.")
        if payload["r"] != rater.key:
            raise UserError("That ticket was issued to another rater; ask for a pair of your own.")
        if self._clock() > payload["e"]:
            raise UserError("That ticket has expired; ask for a new pair.")
        return int(payload["c"])
