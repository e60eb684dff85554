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
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from steering.errors import UserError

SECRET_ENV = "STEERING_SECRET"
SECRET_FILE = "secret.key"
MIN_SECRET_BYTES = 16
TICKET_TTL_S = 15 * 60


def server_secret(directory: Path) -> bytes:
    """STEERING_SECRET, else the secret kept in `directory`, made (readable by the owner only)
    the first time; every process of one deployment then signs alike. A secret shorter than
    MIN_SECRET_BYTES is refused: with a guessable key anyone could sign."""
    if os.environ.get(SECRET_ENV):
        return _long_enough(os.environ[SECRET_ENV].encode(), SECRET_ENV)
    path = directory / SECRET_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        # written whole beside it, then linked into place: a reader never sees a half secret,
        # and of two processes starting at once the second keeps the first one's
        fd, partial = tempfile.mkstemp(dir=directory, prefix=".secret-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(partial, 0o600)
            try:
                os.link(partial, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(partial)
    return _long_enough(path.read_bytes().strip(), str(path))


def _long_enough(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise UserError(
            f"the signing secret in {where} is shorter than {MIN_SECRET_BYTES} bytes; "
            "set a long random STEERING_SECRET"
        )
    return secret


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

    def ticket(self, comparison_id: int, rater: Rater, content: str = "") -> str:
        """A ticket for one comparison and one rater; `content` (a digest of what was shown)
        ties it to that comparison's texts, not only to its id, which a database rebuilt from
        the ratings log may give to another comparison."""
        expires = int(self._clock() + self.ticket_ttl_s)
        payload = {"c": int(comparison_id), "r": rater.key, "e": expires, "d": content}
        return self._sign("ticket", payload)

    def check_ticket(self, ticket: object, rater: Rater) -> tuple[int, str]:
        """(comparison id, content digest) of a ticket, if it is genuine, unexpired and this
        rater's."""
        payload = self._open("ticket", ticket)
        if payload is None or not {"c", "r", "e", "d"} <= set(payload):
            raise UserError("That ticket was not issued by this server; ask for a new pair.")
        if payload["r"] != rater.key:
            raise UserError("That ticket was issued to another rater; ask for a pair of your own.")
        if self._clock() > payload["e"]:
            raise UserError("That ticket has expired; ask for a new pair.")
        return int(payload["c"]), str(payload["d"])


def shown_digest(a: str, b: str) -> str:
    """A short digest of the two texts a comparison showed."""
    return hashlib.sha256(f"{a}\0{b}".encode()).hexdigest()[:16]
