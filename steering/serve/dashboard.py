"""What the dashboard shows of everything stored: counts, win rates, Bradley-Terry strengths,
human steerability and every stored point (without its text: the dashboard is public); plus the
ratings export, which the page offers to admins only.

Cached for a few seconds, because every open dashboard polls it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from steering.errors import UserError
from steering.serve.frontier import PlotPoint
from steering.serve.service import SteeringService
from storage import queries
from storage.export import export_preferences
from storage.records import MethodStrength, Steerability, WinRate

DASHBOARD_TTL_S = 10.0


@dataclass(frozen=True)
class Dashboard:
    generations: int
    prompts: int
    ratings: int
    raters: int  # raters with at least one rating
    wins: list[WinRate]
    strengths: list[MethodStrength]
    steerability: list[tuple[str, Steerability]]  # (objective, agreement) per objective
    points: list[PlotPoint]


class DashboardQueries:
    """The dashboard of one service's database, computed at most every DASHBOARD_TTL_S."""

    def __init__(self, service: SteeringService, ttl_s: float = DASHBOARD_TTL_S):
        self.service = service
        self.ttl_s = ttl_s
        self._cached: tuple[float, Dashboard] | None = None

    def get(self, fresh: bool = False) -> Dashboard:
        now = time.monotonic()
        if not fresh and self._cached and now - self._cached[0] < self.ttl_s:
            return self._cached[1]
        engine = self.service.engine
        raters = queries.rater_counts(engine)
        everything = queries.frontier_points(engine)
        dashboard = Dashboard(
            generations=len(everything),
            prompts=len({p.prompt for p in everything}),
            ratings=sum(r.ratings for r in raters),
            raters=sum(1 for r in raters if r.ratings),
            wins=queries.win_rates(engine, by="method"),
            strengths=queries.bradley_terry(engine),
            steerability=[
                (o, queries.human_steerability(engine, o)) for o in self.service.objectives
            ],
            # every visitor sees the dashboard: the points, never anyone's text
            points=[replace(p, text="") for p in self.service.plot_points(None)],
        )
        self._cached = (now, dashboard)
        return dashboard

    def export_file(self, objective: str | None = None) -> Path:
        """Every rating as JSON Lines in a new temporary file."""
        target = Path(tempfile.mkdtemp(prefix="ratings-")) / "ratings.jsonl"
        try:
            export_preferences(self.service.engine, target, "jsonl", objective or None)
        except ValueError as error:
            raise UserError(str(error)) from None
        return target
