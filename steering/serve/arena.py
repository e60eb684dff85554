"""The arena: pairs of generations shown side by side, and the votes people cast on them, made
trustworthy for a public Space.

- Identity: every request names a server-signed rater token (`session`) or a Hub sign-in.
- Tickets: a pair comes with a signed, expiring ticket bound to its rater; a vote takes the
  ticket, so a comparison is voted once, by the rater it was shown to.
- Rate limits per rater and per client address on pairs and votes.
- Undo of one's own last vote within a short window, recorded.
- Every acknowledged vote is appended to the service's ratings log before it is acknowledged.
- Other people's data (the export) needs the admin token or an admin's Hub sign-in; `stats` is
  public and holds only counts.
"""

from __future__ import annotations

import hmac
import logging
import os
import random
import uuid
from dataclasses import dataclass, replace

from steering.errors import UserError
from steering.evaluation.pareto import sample_dirichlet
from steering.model.generate import Decoding
from steering.serve.identity import Identity, Rater, server_secret, shown_digest
from steering.serve.limits import RateLimits
from steering.serve.service import ScoredGeneration, SteeringService
from steering.weights import Weights
from storage import queries
from storage import repository as repo
from storage.journal import rating_record, undo_record

log = logging.getLogger(__name__)

VOTE_CHOICES = ("a", "b", "tie", "both_bad")
ADMIN_TOKEN_ENV = "STEERING_ADMIN_TOKEN"
ADMINS_ENV = "STEERING_ADMINS"
UNDO_WINDOW_S = 120.0


@dataclass(frozen=True)
class Pair:
    comparison_id: int
    prompt: str
    a: ScoredGeneration
    b: ScoredGeneration
    ticket: str  # what the rater sends back with the vote


@dataclass(frozen=True)
class VoteCount:
    rating_id: int | None
    yours: int
    total: int


class Arena:
    """Pairs and votes on one service's model and database."""

    def __init__(
        self,
        service: SteeringService,
        identity: Identity | None = None,
        limits: RateLimits | None = None,
        undo_window_s: float = UNDO_WINDOW_S,
        admin_token: str | None = None,
        admins: tuple[str, ...] | None = None,
    ):
        self.service = service
        self._identity = identity
        self.limits = limits or RateLimits()
        self.undo_window_s = undo_window_s
        self.admin_token = (
            admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
        )
        if admins is None:
            admins = tuple(
                a.strip() for a in os.environ.get(ADMINS_ENV, "").split(",") if a.strip()
            )
        self.admins = admins

    @property
    def identity(self) -> Identity:
        """Made on first use: reading or writing the secret touches the data directory."""
        if self._identity is None:
            self._identity = Identity(server_secret(self.service.data_dir))
        return self._identity

    def session(self, address: str | None = None) -> str:
        """A new signed anonymous rater token (a few a minute per client address)."""
        self.limits.check("sessions", None, address)
        return self.identity.new_rater_token()

    def rater(self, rater_token: object, hub_user: str | None = None) -> Rater:
        return self.identity.rater(rater_token, hub_user)

    def token_or_new(self, rater_token: object) -> str:
        """The browser's rater token if this server signed it, else a new one."""
        try:
            self.identity.rater(rater_token)
        except UserError:
            return self.session()
        return rater_token

    def new_pair(
        self,
        prompt: str | None,
        decoding: Decoding,
        rater: Rater,
        address: str | None = None,
        seed: int | None = None,
    ) -> Pair:
        """Two fresh generations for one prompt with random weightings and methods, compared,
        and the ticket that lets `rater` vote on them."""
        self.limits.check("pairs", rater.key, address)
        service = self.service
        rng = random.Random(seed)
        prompt = prompt or rng.choice(service.example_prompts())
        methods = service.available_methods()
        method_a, method_b = rng.choice(methods), rng.choice(methods)
        drawn = sample_dirichlet(len(service.objectives), 2, rng=rng.randrange(2**32)).tolist()
        w_a, w_b = Weights.rows(service.objectives, drawn)
        decoding = replace(decoding, seed=rng.randrange(2**31))
        if method_a == method_b:
            a, b = service.generate(prompt, method_a, [w_a, w_b], decoding)
        else:
            (a,) = service.generate(prompt, method_a, [w_a], decoding)
            (b,) = service.generate(prompt, method_b, [w_b], decoding)
        try:
            comparison_id = repo.add_comparison(service.engine, a.generation_id, b.generation_id)
        except ValueError as error:
            raise UserError(str(error)) from None
        ticket = self.identity.ticket(comparison_id, rater, shown_digest(a.text, b.text))
        return Pair(comparison_id, prompt, a, b, ticket)

    def rate(
        self,
        ticket: object,
        choice: str,
        rater: Rater,
        rating_uuid: str | None = None,
        per_objective: dict | None = None,
        address: str | None = None,
    ) -> VoteCount:
        """Store the vote the ticket allows, log it, then acknowledge it. Resending the same
        `rating_uuid` with the same vote is a no-op with the same answer."""
        self.limits.check("votes", rater.key, address)
        comparison_id, digest = self.identity.check_ticket(ticket, rater)
        if choice not in VOTE_CHOICES:
            raise UserError(f"choice must be one of {', '.join(VOTE_CHOICES)}, got {choice!r}")
        if per_objective is not None and not isinstance(per_objective, dict):
            raise UserError("per_objective must map objective names to a, b or tie")
        answers = {o: c for o, c in (per_objective or {}).items() if c}
        for objective, answer in answers.items():
            if objective not in self.service.objectives:
                raise UserError(f"{objective!r} is not one of {', '.join(self.service.objectives)}")
            if answer not in ("a", "b", "tie"):
                raise UserError(f"the answer for {objective} must be a, b or tie, got {answer!r}")
        engine = self.service.engine
        texts = queries.comparison_texts(engine, comparison_id)
        if texts is None or shown_digest(*texts) != digest:
            raise UserError("That ticket's pair is no longer stored; ask for a new pair.")
        key = rating_uuid or str(uuid.uuid4())
        try:
            rater_id = repo.ensure_rater(engine, rater.key, rater.user_name)
            rating_id = repo.add_rating(
                engine, comparison_id, rater_id, choice, rating_uuid=key, per_objective=answers
            )
        except repo.DuplicateVoteError:
            raise UserError("This comparison has already been voted: one vote per pair.") from None
        except ValueError as error:
            raise UserError(str(error)) from None
        try:
            self.service.journal.append(rating_record(engine, key))
        except OSError:
            # not in the log, so not kept: a restart could lose it, and the rater must know
            repo.discard_rating(engine, key)
            log.exception("the ratings log could not be written")
            raise UserError("The vote could not be saved; please vote again.") from None
        yours, total = self.vote_counts(rater)
        return VoteCount(rating_id, yours, total)

    def undo(self, rater: Rater, address: str | None = None) -> VoteCount:
        """Take back the rater's last vote if it is recent; the undo is stored and logged.
        An undo counts against the vote limits, so repeated undos cannot run away."""
        self.limits.check("votes", rater.key, address)
        engine = self.service.engine
        try:
            rater_id = repo.ensure_rater(engine, rater.key, rater.user_name)
            undone = repo.undo_last_rating(engine, rater_id, self.undo_window_s)
        except ValueError as error:
            raise UserError(str(error)) from None
        self.service.journal.append(undo_record(undone))
        yours, total = self.vote_counts(rater)
        return VoteCount(None, yours, total)

    def vote_counts(self, rater: Rater | None) -> tuple[int, int]:
        counts = queries.rater_counts(self.service.engine)
        key = rater.key if rater else None
        return sum(c.ratings for c in counts if c.anonymous_id == key), sum(
            c.ratings for c in counts
        )

    def stats(self) -> dict[str, int]:
        """Counts only: generations, ratings and raters who have rated."""
        return queries.stats(self.service.engine)

    def check_admin(self, admin_token: object = "", hub_user: str | None = None) -> None:
        """Refuse, in one sentence, anyone but an admin."""
        if hub_user and hub_user in self.admins:
            return
        if (
            self.admin_token
            and isinstance(admin_token, str)
            and hmac.compare_digest(admin_token.encode(), self.admin_token.encode())
        ):
            return
        raise UserError(
            "Only an admin may read other people's data: send the admin token "
            f"({ADMIN_TOKEN_ENV}) or sign in as one of {ADMINS_ENV}."
        )
