"""The named endpoints gradio_client calls (docs/app.md), as plain typed methods: the parameter
names and docstrings are the API's; the page registers each with `gr.api`.

Each parses what the client sent (untrusted) at the border, calls the service and returns JSON
values; a mistake raises UserError, which the page turns into the client's AppError. `address`
(the client's network address) and `hub_user` (a Hugging Face sign-in) are filled in by the page
from the request, never by the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from steering.errors import UserError
from steering.serve.arena import Arena
from steering.serve.dashboard import DashboardQueries
from steering.serve.frontier import DEFAULT_REFERENCE, fronts_by_method, hypervolumes
from steering.serve.service import SteeringService, parse_decoding

MAX_RESPONSE_CHARS = 32_000  # storage's limit on a generated text


class ApiEndpoints:
    """The endpoints of one service."""

    def __init__(self, service: SteeringService, arena: Arena, dashboard: DashboardQueries):
        self.service = service
        self.arena = arena
        self.dashboard = dashboard

    def session(self, address: str | None = None) -> dict:
        """A new anonymous rater identity, signed by the server: send it as `rater_token`."""
        return {"rater_token": self.arena.session(address)}

    def generate(
        self,
        prompt: str,
        weights: list[float],
        method: str = "clp",
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        seed: int = 0,
    ) -> Iterator[dict]:
        """Generate a response steered to a weighting of the objectives, streamed: {"text",
        "done": false} after every token, then the stored generation with "done": true, its id,
        the normalised weights used and raw and normalised scores.

        Args:
            prompt: what to ask the model.
            weights: one non-negative number per objective, in the order of /frontier's
                "objectives" (for example positivity, conciseness, relevance); normalised to
                sum 1.
            method: clp (the steerable policy), prompt, soups, logits or base.
            max_new_tokens: the longest answer, 1 to 256 tokens.
            temperature: 0 for greedy decoding, up to 2.
            seed: the sampling seed; the same seed, weights and prompt give the same text.
        """
        prompt, notice = self.service.clean_prompt(prompt)
        decoding = parse_decoding(max_new_tokens, temperature, seed)
        w = self.service.weights(weights)
        for item in self.service.stream(prompt, method, w, decoding):
            if isinstance(item, str):
                yield {"text": item, "done": False}
            else:
                yield {**item.to_json(), "done": True, "notice": notice}

    def sweep(
        self,
        prompt: str,
        methods: list[str] | None = None,
        step: float = 0.5,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        seed: int = 0,
    ) -> dict:
        """Sweep the trade-off: generate at every weighting of a simplex grid for each method
        and return the new generations, every stored point of the prompt (with its Pareto front
        flag) and the hypervolume per method.

        Args:
            prompt: what to ask the model.
            methods: the methods to sweep (default clp).
            step: the grid's step, 0.5, 0.25 or 0.2 (at most 128 generations in all).
            max_new_tokens: the longest answer, 1 to 256 tokens.
            temperature: 0 for greedy decoding, up to 2.
            seed: the sampling seed.
        """
        prompt, _ = self.service.clean_prompt(prompt)
        decoding = parse_decoding(max_new_tokens, temperature, seed)
        made = []
        for _, _, batch in self.service.sweep(prompt, list(methods or []), step, decoding):
            made += [g.to_json() for g in batch]
        return {"generations": made, **self.frontier(prompt)}

    def score(self, prompt: str, response: str) -> dict:
        """Score a response on every objective: raw scores and normalised ones (z-scores against
        the base model's answers; null without a calibration).

        Args:
            prompt: the prompt the response answers.
            response: the text to score.
        """
        prompt, _ = self.service.clean_prompt(prompt)
        if not isinstance(response, str) or len(response) > MAX_RESPONSE_CHARS:
            raise UserError(
                f"the response must be text of at most {MAX_RESPONSE_CHARS:,} characters"
            )
        raw, normalised = self.service.score_texts(prompt, [response])[0]
        return {
            o: {"raw": raw[o], "normalised": normalised[o] if normalised else None}
            for o in self.service.objectives
        }

    def pair(
        self,
        prompt: str = "",
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        rater_token: str = "",
        address: str | None = None,
        hub_user: str | None = None,
    ) -> dict:
        """A new comparison: two responses to one prompt, their weights and methods hidden, and
        the `ticket` to vote on it with (signed, expiring, for this rater only)."""
        rater = self.arena.rater(rater_token, hub_user)
        decoding = parse_decoding(max_new_tokens, temperature, 0)
        pair = self.arena.new_pair(self.service.optional_prompt(prompt), decoding, rater, address)
        return {
            "comparison_id": pair.comparison_id,
            "prompt": pair.prompt,
            "a": pair.a.text,
            "b": pair.b.text,
            "ticket": pair.ticket,
        }

    def rate(
        self,
        ticket: str,
        choice: str,
        rater_token: str = "",
        rating_uuid: str = "",
        per_objective: dict[str, str] | None = None,
        address: str | None = None,
        hub_user: str | None = None,
    ) -> dict:
        """Vote a, b, tie or both_bad on the comparison of a ticket from /pair; a comparison is
        voted once. Resending the same rating_uuid with the same vote is a no-op."""
        rater = self.arena.rater(rater_token, hub_user)
        counts = self.arena.rate(ticket, choice, rater, rating_uuid or None, per_objective, address)
        return {
            "rating_id": counts.rating_id,
            "your_votes": counts.yours,
            "total_votes": counts.total,
        }

    def undo(
        self, rater_token: str = "", address: str | None = None, hub_user: str | None = None
    ) -> dict:
        """Take back your last vote, if it is at most a couple of minutes old."""
        counts = self.arena.undo(self.arena.rater(rater_token, hub_user), address)
        return {"your_votes": counts.yours, "total_votes": counts.total}

    def stats(self) -> dict:
        """Counts only: {"generations": n, "ratings": n, "raters": n}."""
        return self.arena.stats()

    def frontier(
        self, prompt: str = "", admin_token: str = "", hub_user: str | None = None
    ) -> dict:
        """Stored points of a prompt with their method's front flag; every prompt's (other
        people's prompts) only with the admin token."""
        cleaned = self.service.optional_prompt(prompt)
        if cleaned is None:
            self.arena.check_admin(admin_token, hub_user)
        points = self.service.plot_points(cleaned)
        front = {points[i].generation_id for idx in fronts_by_method(points).values() for i in idx}
        return {
            "objectives": list(self.service.objectives),
            "reference": DEFAULT_REFERENCE,
            "hypervolume": hypervolumes(points, DEFAULT_REFERENCE),
            "points": [{**asdict(p), "non_dominated": p.generation_id in front} for p in points],
        }

    def export(
        self, admin_token: str = "", objective: str = "", hub_user: str | None = None
    ) -> str:
        """Every rating as JSON Lines (prompt, chosen, rejected, weights, scores, votes); for
        admins only (STEERING_ADMIN_TOKEN, or a Hub sign-in listed in STEERING_ADMINS)."""
        self.arena.check_admin(admin_token, hub_user)
        return self.dashboard.export_file(objective or None).read_text(encoding="utf-8")
