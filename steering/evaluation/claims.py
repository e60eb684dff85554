"""The evaluation's claims, each with a bootstrap interval over prompts (`intervals.bootstrap`).

Per method: the hypervolume, the steerability rho of every objective, and over the whole grid
the mean fluency (base-model log-probability per answer token), the mean answer length in tokens
and the shares of degenerate, unfinished, echoing, restating, off-topic and help-offering
answers (`quality`). Per pair of methods: the share of A's points dominated by B's front, and
the paired difference of their hypervolumes with the method it supports as higher. Every
statistic is computed on the same resamples of prompts, so the differences are paired.

Added to the results JSON (the fields `evaluate` writes stay as they are):

    "bootstrap": {"unit": "prompt", "resamples": R, "seed": s, "confidence": 0.95},
    "methods": {NAME: {..., "intervals": {
        "hypervolume": INTERVAL, "steerability": {objective: INTERVAL},
        "fluency": INTERVAL, "tokens": INTERVAL, "degenerate": INTERVAL, "unfinished": INTERVAL,
        "echo": INTERVAL, "restatement": INTERVAL, "off_topic": INTERVAL,
        "offer": INTERVAL}}},
    "dominance_intervals": {A: {B: INTERVAL}},            # the "dominance" shares' intervals
    "hypervolume_differences": [{"a": A, "b": B, **INTERVAL, "winner": A, B or null}]

where INTERVAL is {"estimate", "lower", "upper"} and "winner" is set only when the interval of
hypervolume(A) - hypervolume(B) lies wholly on one side of zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from steering.evaluation.intervals import CONFIDENCE, bootstrap, winner
from steering.evaluation.pareto import dominated_share, hypervolume, steerability
from steering.evaluation.quality import CATEGORIES, OFF_TOPIC_SIMILARITY, classify

ANSWER_MEANS = (*(c for c in CATEGORIES if c not in ("empty", "short")), "fluency", "tokens")
"""Per-answer values whose mean over the grid is a claim about a method: every quality category
but empty and short (degenerate is their sum), the fluency and the length in tokens."""


@dataclass(frozen=True)
class SweepTable:
    """One method's sweep as arrays indexed (grid point, prompt, sample)."""

    rewards: np.ndarray  # (G, P, S, K) normalised rewards
    answers: dict[str, np.ndarray]  # ANSWER_MEANS name -> (G, P, S)

    @classmethod
    def from_rows(cls, rows, shape, objectives, calibration, max_new_tokens) -> SweepTable:
        """From `sweep_method`'s rows, one for every (point, prompt, sample) of `shape`."""
        if len(rows) != int(np.prod(shape)):
            raise ValueError(f"{len(rows)} rows do not fill a sweep of shape {shape}")
        raw = np.empty((*shape, len(objectives)))  # (G, P, S, K)
        answers = {name: np.empty(shape) for name in ANSWER_MEANS}
        for row in rows:
            at = (row["point"], row["prompt"], row["sample"])
            raw[at] = [row["raw"][name] for name in objectives]
            quality = classify(
                row["text"],
                row["tokens"],
                max_new_tokens,
                row["prompt_text"],
                row.get("similarity"),
            )
            values = {"fluency": row["fluency"], "tokens": row["tokens"], **quality.flags()}
            for name in ANSWER_MEANS:
                answers[name][at] = values[name]
        normalised = calibration.normalise({n: raw[..., k] for k, n in enumerate(objectives)})
        return cls(np.stack([normalised[n] for n in objectives], axis=-1), answers)

    def point_rewards(self, prompts: np.ndarray) -> np.ndarray:
        """(G, K) mean normalised reward per grid point over these prompts and their samples."""
        return self.rewards[:, prompts].mean(axis=(1, 2))

    def answer_mean(self, name: str, prompts: np.ndarray) -> float:
        """Mean of an ANSWER_MEANS value over the grid, these prompts and their samples."""
        return float(self.answers[name][:, prompts].mean())


def statistics(tables: dict[str, SweepTable], grid, objectives, reference):
    """The function `bootstrap` resamples: prompt indices -> {claim key: value}."""

    def compute(prompts: np.ndarray) -> dict[tuple, float]:
        points = {m: table.point_rewards(prompts) for m, table in tables.items()}
        values = {}
        for m, table in tables.items():
            values[("hypervolume", m)] = hypervolume(points[m], reference)
            for name, rho in zip(objectives, steerability(grid, points[m]), strict=True):
                values[("steerability", m, name)] = float(rho)
            for name in ANSWER_MEANS:
                values[(name, m)] = table.answer_mean(name, prompts)
        for a in tables:
            for b in tables:
                if a != b:
                    values[("dominance", a, b)] = dominated_share(points[a], points[b])
        for a, b in combinations(tables, 2):
            values[("difference", a, b)] = values[("hypervolume", a)] - values[("hypervolume", b)]
        return values

    return compute


def add_claims(
    results: dict,
    rows_by_method: dict[str, list[dict]],
    grid: np.ndarray,
    calibration,
    reference: np.ndarray,
    max_new_tokens: int,
    resamples: int,
    seed: int,
) -> None:
    """Add the intervals of every claim to `results` (the evaluation's JSON, in place)."""
    objectives = results["objectives"]
    shape = (len(grid), results["prompts"], results["samples"])
    tables = {
        m: SweepTable.from_rows(rows, shape, objectives, calibration, max_new_tokens)
        for m, rows in rows_by_method.items()
    }
    found = bootstrap(
        statistics(tables, grid, objectives, reference), shape[1], resamples=resamples, seed=seed
    )
    results["bootstrap"] = {
        "unit": "prompt",
        "resamples": resamples,
        "seed": seed,
        "confidence": CONFIDENCE,
    }
    for m in tables:
        results["methods"][m]["intervals"] = {
            "hypervolume": found[("hypervolume", m)].to_json(),
            "steerability": {n: found[("steerability", m, n)].to_json() for n in objectives},
            **{name: found[(name, m)].to_json() for name in ANSWER_MEANS},
        }
    results["dominance_intervals"] = {
        a: {b: found[("dominance", a, b)].to_json() for b in tables if b != a} for a in tables
    }
    results["hypervolume_differences"] = []
    for a, b in combinations(tables, 2):
        difference = found[("difference", a, b)]
        results["hypervolume_differences"].append(
            {"a": a, "b": b, **difference.to_json(), "winner": winner(a, b, difference)}
        )


def beats(results: dict, a: str, b: str) -> bool:
    """Whether the results support "A has a larger hypervolume than B": the paired bootstrap
    interval of hypervolume(A) - hypervolume(B) lies wholly above zero."""
    for pair in results["hypervolume_differences"]:
        if {pair["a"], pair["b"]} == {a, b}:
            return pair["winner"] == a
    raise ValueError(f"the results hold no hypervolume difference between {a} and {b}")


def format_claims(results: dict) -> str:
    """The summary `evaluate` prints: each claim with its interval, and the supported orders."""
    objectives = results["objectives"]
    methods = results["methods"]
    lines = ["| method | hypervolume | " + " | ".join(f"rho {n}" for n in objectives) + " |"]
    lines.append("|---" * (2 + len(objectives)) + "|")
    for m, r in methods.items():
        found = r["intervals"]
        cells = [_cell(found["hypervolume"], 3)]
        cells += [_cell(found["steerability"][n], 2) for n in objectives]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | " + " | ".join(ANSWER_MEANS) + " |",
        "|---" * (1 + len(ANSWER_MEANS)) + "|",
    ]
    for m, r in methods.items():
        cells = [_cell(r["intervals"][name], 1 if name == "tokens" else 2) for name in ANSWER_MEANS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "hypervolume differences (paired over prompts):"]
    for pair in results["hypervolume_differences"]:
        verdict = f"{pair['winner']} larger, supported" if pair["winner"] else "not supported"
        lines.append(f"  {pair['a']} - {pair['b']}: {_cell(pair, 3)}, {verdict}")
    setup = results["bootstrap"]
    lines += [
        "",
        f"[{setup['confidence']:.0%} bootstrap intervals over {results['prompts']} prompts, "
        f"{setup['resamples']} resamples, seed {setup['seed']}; degenerate: under five words; "
        f"unfinished: cut at {results['max_new_tokens']} tokens without closing punctuation; "
        "echo: repeats the prompt; restatement: five words or more, under a fifth of them new; "
        "off_topic: five words or more, MiniLM similarity to the prompt under "
        f"{OFF_TOPIC_SIMILARITY}; "
        "offer: its first sentence offers help (I'm happy to help you...); "
        "fluency: base-model log-probability per token]",
    ]
    return "\n".join(lines)


def _cell(interval: dict, digits: int) -> str:
    e, lo, hi = interval["estimate"], interval["lower"], interval["upper"]
    return f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
