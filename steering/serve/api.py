"""The named endpoints gradio_client calls (docs/app.md), as plain typed methods: the parameter
names and docstrings are the API's; the page registers each with `gr.api`.

Each parses what the client sent (untrusted) at the border, calls the service and returns JSON
values; a mistake raises UserError, which the page turns into the client's AppError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

from steering.serve.dashboard import DashboardQueries
from steering.serve.frontier import DEFAULT_REFERENCE, fronts_by_method, hypervolumes
from steering.serve.service import SteeringService, parse_decoding


class ApiEndpoints:
    """The endpoints of one service."""

    def __init__(self, service: SteeringService, dashboard: DashboardQueries):
        self.service = service
        self.dashboard = dashboard

    def generate(
        self,
        prompt: str,
        weights: list[float],
        method: str = "clp",
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        seed: int = 0,
    ) -> Iterator[dict]:
        """Stream {"text", "done": false} after every token, then the stored generation with
        "done": true, its id, the normalised weights used and raw and normalised scores."""
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
        """Generate over the simplex grid with this step for each method; return the new
        generations, every stored point of the prompt and the hypervolume per method."""
        prompt, _ = self.service.clean_prompt(prompt)
        decoding = parse_decoding(max_new_tokens, temperature, seed)
        made = []
        for _, _, batch in self.service.sweep(prompt, list(methods or []), step, decoding):
            made += [g.to_json() for g in batch]
        return {"generations": made, **self.frontier(prompt)}

    def score(self, prompt: str, response: str) -> dict:
        """Raw and normalised (null without a calibration) scores of one response."""
        prompt, _ = self.service.clean_prompt(prompt)
        raw, normalised = self.service.score_texts(prompt, [response])[0]
        return {
            o: {"raw": raw[o], "normalised": normalised[o] if normalised else None}
            for o in self.service.objectives
        }

    def pair(self, prompt: str = "", max_new_tokens: int = 64, temperature: float = 0.7) -> dict:
        """A new comparison: two responses to one prompt, their weights and methods hidden."""
        decoding = parse_decoding(max_new_tokens, temperature, 0)
        pair = self.service.new_pair(self.service.optional_prompt(prompt), decoding)
        return {
            "comparison_id": pair.comparison_id,
            "prompt": pair.prompt,
            "a": pair.a.text,
            "b": pair.b.text,
        }

    def rate(
        self,
        comparison_id: int,
        choice: str,
        rater_id: str,
        rating_uuid: str = "",
        per_objective: dict[str, str] | None = None,
    ) -> dict:
        """Vote a, b, tie or both_bad; a second vote by the same rater on a pair is refused.
        Resending the same rating_uuid with the same vote is a no-op."""
        counts = self.service.rate(
            comparison_id, choice, rater_id, rating_uuid or None, per_objective
        )
        return {
            "rating_id": counts.rating_id,
            "your_votes": counts.yours,
            "total_votes": counts.total,
        }

    def frontier(self, prompt: str = "") -> dict:
        """Stored points of a prompt (all prompts when empty) with their method's front flag."""
        points = self.service.plot_points(self.service.optional_prompt(prompt))
        front = {points[i].generation_id for idx in fronts_by_method(points).values() for i in idx}
        return {
            "objectives": list(self.service.objectives),
            "reference": DEFAULT_REFERENCE,
            "hypervolume": hypervolumes(points, DEFAULT_REFERENCE),
            "points": [{**asdict(p), "non_dominated": p.generation_id in front} for p in points],
        }

    def export(self, objective: str = "") -> str:
        """Every rating as JSON Lines (prompt, chosen, rejected, weights, scores, votes)."""
        return self.dashboard.export_file(objective or None).read_text(encoding="utf-8")
