"""Sweep methods over a simplex grid of weightings and measure their Pareto fronts.

    python -m steering evaluate --prompts assets/prompts/eval.jsonl \\
        --methods clp,prompt,soups,logits,base --grid 0.25 --samples 1 --out results.json
    python -m steering evaluate --prompts my.jsonl --methods clp,base --adapters runs/mine \\
        --base-model /models/my-llm --objectives-file my-objectives.toml --out runs/eval.json

Writes `results.json` (schema below), `results.html` (interactive Plotly) and `results.png`.
Generations are cached line by line in `results.cache.jsonl`, so an interrupted sweep resumes
(drawing the samples an uninterrupted one would);
a cached row is reused only for the same prompt text under the same setting (adapter weights,
base model, decoding, grid, objectives), so new adapters or options are never read from old rows.

`--score-with positivity,brevity,passage_relevance` (or a TOML objectives file) scores every
method's answers with those objectives, weight by weight, instead of those each method steers:
methods trained on different rewards are compared on one scale (with `--calibration`, an adapter
directory or calibration file that calibrates them). Answers a sweep under the method's own
objectives cached are scored again, not generated again.

Results schema (other tools read it):

    {"objectives": [name, ...],
     "objective_specs": [{"name": ..., "kind": ..., "model": ..., "sha256": ...}, ...],
     "reference_point": [float, ...],          # fixed before the run, in normalised units
     "grid": step, "prompts": n, "samples": s,
     "categories": {category: n_prompts},      # the prompt file's "category" fields, if any
     "methods": {NAME: {"hypervolume": float,
                        "steers": [name, ...],    # its sliders; "objectives" score them
                        "steerability": {objective: spearman_rho},
                        "steerability_by_category": {category: {objective: spearman_rho}},
                        "front": [index into points, ...],
                        "points": [{"weights": [...], "rewards": {objective: mean_normalised},
                                    "raw": {objective: mean_raw}, "tokens": mean_tokens,
                                    "fluency": mean_fluency, "quality": {category: share}}],
                        "quality": {category: share over the grid}}},
     "dominance": {A: {B: share of A's points dominated by B's front}}}

plus the claims' bootstrap intervals over prompts (`steering.evaluation.claims`). Fluency is
the base model's log-probability per answer token (the `fluency` objective's computation); the
quality categories (empty, short, degenerate, unfinished, echo, restatement, off_topic, offer) are
defined in `steering.evaluation.quality`.

Rewards are z-scores under the calibration shipped with the clp adapter (base-model samples on
the training prompts), so every method is measured on the same scale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from steering.errors import UserError
from steering.evaluation.claims import add_claims, format_claims
from steering.evaluation.pareto import (
    dominated_share,
    hypervolume,
    non_dominated,
    simplex_grid,
    steerability,
)
from steering.evaluation.quality import classify, shares
from steering.evaluation.quality_panel import PANEL_CATEGORIES, draw_quality_panel
from steering.evaluation.score_with import own_specs, sweep_scorers
from steering.model.generate import Decoding
from steering.model.loader import Models
from steering.model.methods import METHODS, check_method
from steering.model.mixing import ADAPTER_FILE
from steering.model_files import file_sha256
from steering.objectives.calibration import load_calibration
from steering.objectives.declared import ObjectiveSet
from steering.objectives.embedding import relevance
from steering.objectives.fluency import fluency_scores
from steering.prompts import read_prompt_records
from steering.weights import Weights

# Normalised rewards are z-scores against base-model samples; -2 on every objective is worse than
# almost every mean a method reaches, fixed here so hypervolumes from different runs compare.
DEFAULT_REFERENCE = -2.0


@dataclass(frozen=True)
class EvaluateConfig:
    prompts: str
    methods: tuple[str, ...] = METHODS
    grid: float = 0.25
    samples: int = 1
    out: str = "results.json"
    limit: int = 0
    max_new_tokens: int = 80
    min_words: int = 0  # the decoding floor: no stop token before this many words
    seed: int = 0
    temperature: float = 0.7
    rows_per_batch: int = 16
    reference_point: tuple[float, ...] | None = None
    base_model: str | None = None
    objectives_file: str | None = None
    bootstrap: int = 1000  # resamples of the prompts for every claim's interval
    # objectives to score every method's answers with instead of those it steers (names or a
    # TOML file), one per weight; and the calibration their z-scores use (default: clp's)
    score_with: str | None = None
    calibration: str | None = None


def _grid(k: int, step: float) -> np.ndarray:
    try:
        return simplex_grid(k, step)
    except ValueError as error:
        raise UserError(str(error).rstrip(".")) from None


def _read_cache(path: Path) -> dict[tuple, dict]:
    if not path.exists():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):
        # A sweep killed mid-write leaves a torn last row: drop it, so it is generated again and
        # the next row appended starts on a line of its own.
        text = text[: text.rfind("\n") + 1]
        with path.open("r+") as handle:
            handle.truncate(len(text.encode()))
    rows = (json.loads(line) for line in text.splitlines() if line.strip())
    # rows from before settings were recorded cannot be trusted to match: they are made again
    return {_row_key(r): r for r in rows if "setting" in r}


def _row_key(row: dict) -> tuple:
    return (row["setting"], row["point"], row["prompt_text"], row["sample"])


def sweep_setting(method, steerer, config: EvaluateConfig, specs: list[dict]) -> str:
    """A digest of everything a cached row depends on besides its prompt: the method, its
    adapter's weights, the base model, the decoding, the grid and the objectives' `specs`. A row
    cached under another setting (new adapters, another --max-new-tokens) is generated again."""
    adapter = steerer.adapter_dir / ADAPTER_FILE if steerer.adapter_dir else None
    setting = {
        "method": method,
        "adapter": file_sha256(adapter) if adapter and adapter.is_file() else None,
        "base": steerer.identity.sha256,
        # without the floor the digest is the one rows were cached under before it existed
        "decoding": [config.max_new_tokens, config.temperature, config.seed]
        + ([config.min_words] if config.min_words else []),
        "grid": config.grid,
        "objectives": specs,
    }
    return hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]


def sweep_method(
    method,
    steerer,
    prompts,
    grid,
    config: EvaluateConfig,
    cache_path: Path,
    objectives: ObjectiveSet,
    own: list[dict] | None = None,
) -> list[dict]:
    """Generate and score every (grid point, prompt, sample); cached rows are reused. With
    `--score-with`, `own` are the specs of the objectives the method steers: the answers cached
    under them are the same answers, so they are scored again instead of generated again."""
    cache = _read_cache(cache_path)
    setting = sweep_setting(method, steerer, config, objectives.to_json())
    wanted = [
        (point, p, s)
        for point in range(len(grid))
        for p in range(len(prompts))
        for s in range(config.samples)
    ]
    keys = [(setting, point, prompts[p], s) for point, p, s in wanted]
    rows_per_batch = config.rows_per_batch // (len(steerer.objectives) if method == "logits" else 1)
    with cache_path.open("a") as handle:
        if own is not None:
            own_setting = sweep_setting(method, steerer, config, own)
            answered = [
                cache[(own_setting, *key[1:])]
                for key in keys
                if key not in cache and (own_setting, *key[1:]) in cache
            ]
            chunks = range(0, len(answered), config.rows_per_batch)
            for start in tqdm(chunks, desc=f"score {method} again", unit="batch"):
                chunk = answered[start : start + config.rows_per_batch]
                _append(handle, cache, _rescored(chunk, setting, objectives))
        # Batches are cut from the whole sweep and seeded by their place in it, so a resumed
        # sweep draws exactly the samples an uninterrupted one would: a batch with any row
        # missing is generated whole, and only its missing rows are added.
        starts = [
            start
            for start in range(0, len(wanted), rows_per_batch)
            if any(key not in cache for key in keys[start : start + rows_per_batch])
        ]
        # rows cached before answers were scored for fluency or similarity get them now
        unscored = [
            cache[key]
            for key in keys
            if key in cache and not {"fluency", "similarity"} <= cache[key].keys()
        ]
        _append(handle, cache, _with_answer_scores(steerer.base, unscored))
        for start in tqdm(starts, desc=f"evaluate {method}", unit="batch"):
            batch = wanted[start : start + rows_per_batch]
            missing = [key not in cache for key in keys[start : start + rows_per_batch]]
            batch_prompts = [prompts[p] for _, p, _ in batch]
            weights = Weights.rows(steerer.objectives, [grid[point] for point, _, _ in batch])
            decoding = Decoding(
                config.max_new_tokens,
                config.temperature,
                seed=config.seed + start,
                min_words=config.min_words,
            )
            results = steerer.generate(batch_prompts, weights, decoding)
            # only the missing rows are scored and stored; the cached ones were generated alike
            fresh = [
                (job, result)
                for job, result, gone in zip(batch, results, missing, strict=True)
                if gone
            ]
            raw = _raw_rewards(
                objectives, [prompts[p] for (_, p, _), _ in fresh], [r.text for _, r in fresh]
            )
            rows = [
                {
                    "method": method,
                    "setting": setting,
                    "point": point,
                    "prompt": p,
                    "prompt_text": prompts[p],
                    "sample": s,
                    "text": result.text,
                    "tokens": result.tokens,
                    "raw": raw[i],
                }
                for i, ((point, p, s), result) in enumerate(fresh)
            ]
            _append(handle, cache, _with_answer_scores(steerer.base, rows))
    # a row cached for the same prompt at another place in the prompts file takes this place
    return [{**cache[key], "prompt": p} for (_, p, _), key in zip(wanted, keys, strict=True)]


def _raw_rewards(objectives: ObjectiveSet, prompts: list[str], texts: list[str]) -> list[dict]:
    """Each answer's {objective: raw reward}."""
    raw = objectives.score(prompts, texts)
    return [{name: float(values[i]) for name, values in raw.items()} for i in range(len(texts))]


def _rescored(rows: list[dict], setting: str, objectives: ObjectiveSet) -> list[dict]:
    """The rows keyed to `setting`, their answers' raw rewards scored by `objectives`."""
    raw = _raw_rewards(objectives, [r["prompt_text"] for r in rows], [r["text"] for r in rows])
    return [{**row, "setting": setting, "raw": r} for row, r in zip(rows, raw, strict=True)]


def _with_answer_scores(base, rows: list[dict]) -> list[dict]:
    """The rows with "fluency", the base model's log-probability per token of each answer, and
    "similarity", its MiniLM cosine to the prompt (what `off_topic` is counted by)."""
    prompts, texts = [r["prompt_text"] for r in rows], [r["text"] for r in rows]
    with base.lock:
        fluency = fluency_scores(base, prompts, texts)
    similarity = relevance(prompts, texts)
    return [
        {**row, "fluency": float(f), "similarity": float(s)}
        for row, f, s in zip(rows, fluency, similarity, strict=True)
    ]


def _append(handle, cache: dict[tuple, dict], rows: list[dict]) -> None:
    """Write rows to the cache file (a later row for the same key replaces an earlier one)."""
    for row in rows:
        cache[_row_key(row)] = row
        handle.write(json.dumps(row) + "\n")
    handle.flush()


def _mean_rewards(rows, objectives, calibration) -> tuple[dict, dict]:
    """({objective: mean raw reward}, {objective: mean normalised reward}) over rows."""
    raw = {name: np.array([r["raw"][name] for r in rows]) for name in objectives}
    normalised = calibration.normalise(raw)
    return (
        {name: float(raw[name].mean()) for name in objectives},
        {name: float(normalised[name].mean()) for name in objectives},
    )


def summarise_method(rows, grid, objectives, calibration, reference, max_new_tokens) -> dict:
    points, answers = [], []
    for index, weights in enumerate(grid):
        mine = [r for r in rows if r["point"] == index]
        raw, normalised = _mean_rewards(mine, objectives, calibration)
        quality = [
            classify(r["text"], r["tokens"], max_new_tokens, r["prompt_text"], r.get("similarity"))
            for r in mine
        ]
        answers += quality
        points.append(
            {
                "weights": [float(w) for w in weights],
                "rewards": normalised,
                "raw": raw,
                "tokens": float(np.mean([r["tokens"] for r in mine])),
                "fluency": float(np.mean([r["fluency"] for r in mine])),
                "quality": shares(quality),
            }
        )
    matrix = np.array([[p["rewards"][n] for n in objectives] for p in points])  # (G, K)
    rho = steerability(grid, matrix)
    return {
        "hypervolume": hypervolume(matrix, reference),
        "steerability": {name: float(r) for name, r in zip(objectives, rho, strict=True)},
        "front": [int(i) for i in np.flatnonzero(non_dominated(matrix))],
        "points": points,
        "quality": shares(answers),
    }


def steerability_by_category(rows, grid, objectives, calibration, categories) -> dict:
    """{category: {objective: rho}}: the steerability of the grid points' mean rewards over the
    prompts of each category (`categories[p]` is prompt p's, or None), in the order the categories
    first appear. A slider can steer well on average and not at all for one kind of request."""
    found = {}
    for category in dict.fromkeys(c for c in categories if c is not None):
        mine = [r for r in rows if categories[r["prompt"]] == category]
        means = [
            _mean_rewards([r for r in mine if r["point"] == i], objectives, calibration)[1]
            for i in range(len(grid))
        ]
        matrix = np.array([[mean[name] for name in objectives] for mean in means])  # (G, K)
        rho = steerability(grid, matrix)
        found[category] = {name: float(r) for name, r in zip(objectives, rho, strict=True)}
    return found


def evaluate(config: EvaluateConfig, models: Models | None = None) -> str:
    """Sweep every method over the grid (on torch, from `models`), then write the results."""
    models = models or Models()
    for method in config.methods:
        check_method(method)
    if not config.methods:
        raise UserError("give at least one method")
    if config.samples < 1:
        raise UserError("samples must be at least 1")
    if config.bootstrap < 1:
        raise UserError("bootstrap resamples must be at least 1")
    records = read_prompt_records(config.prompts, config.limit or None)
    prompts = [record.prompt for record in records]
    categories = [record.category for record in records]
    steerers = {m: models.steerer(m, base_path=config.base_model) for m in config.methods}
    scorers = sweep_scorers(steerers, config.score_with, config.objectives_file)
    own = own_specs(steerers) if config.score_with else {}
    objectives = scorers.names
    if config.calibration:
        calibration, where = load_calibration(config.calibration), config.calibration
    else:
        base = models.steerer("base", base_path=config.base_model)
        calibration, where = base.calibration, "the clp adapter"
    uncalibrated = [name for name in objectives if name not in calibration.objectives]
    if uncalibrated:
        raise UserError(
            f"the calibration of {where} has no statistics for objective {uncalibrated[0]!r}; "
            f"give --calibration with an adapter directory or file that calibrates "
            f"{', '.join(objectives)}"
        )
    grid = _grid(len(objectives), config.grid)
    reference = np.array(
        config.reference_point or [DEFAULT_REFERENCE] * len(objectives), dtype=float
    )
    if reference.shape != (len(objectives),):
        raise UserError(f"the reference point needs {len(objectives)} values, one per objective")
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_path = out.with_suffix(".cache.jsonl")
    results = {
        "objectives": list(objectives),
        "objective_specs": scorers.to_json(),
        "reference_point": reference.tolist(),
        "grid": config.grid,
        "prompts": len(prompts),
        "samples": config.samples,
        "max_new_tokens": config.max_new_tokens,
        "min_words": config.min_words,
        "categories": {c: categories.count(c) for c in dict.fromkeys(categories) if c is not None},
        "methods": {},
    }
    rows_by_method = {}
    for method, steerer in steerers.items():
        rows_by_method[method] = sweep_method(
            method, steerer, prompts, grid, config, cache_path, scorers, own.get(method)
        )
        results["methods"][method] = summarise_method(
            rows_by_method[method], grid, objectives, calibration, reference, config.max_new_tokens
        )
        results["methods"][method]["steers"] = list(steerer.objectives)
        results["methods"][method]["steerability_by_category"] = steerability_by_category(
            rows_by_method[method], grid, objectives, calibration, categories
        )
    matrices = {
        m: np.array([[p["rewards"][n] for n in objectives] for p in r["points"]])
        for m, r in results["methods"].items()
    }
    results["dominance"] = {
        a: {
            b: dominated_share(matrices[a], matrices[b][non_dominated(matrices[b])])
            for b in matrices
            if b != a
        }
        for a in matrices
    }
    add_claims(
        results,
        rows_by_method,
        grid,
        calibration,
        reference,
        config.max_new_tokens,
        config.bootstrap,
        config.seed,
    )
    out.write_text(json.dumps(results, indent=2) + "\n")
    write_plots(results, out)
    return format_summary(results, out)


def format_summary(results: dict, out: Path) -> str:
    written = f"written: {out}, {out.with_suffix('.html')}, {out.with_suffix('.png')}"
    by_category = format_categories(results)
    objectives = results["objectives"]
    scored = [
        f"{method} steers {', '.join(r['steers'])}"
        for method, r in results["methods"].items()
        if r["steers"] != objectives
    ]
    scoring = [f"scored with {', '.join(objectives)}: " + "; ".join(scored)] if scored else []
    return "\n\n".join(
        scoring + [format_claims(results)] + ([by_category] if by_category else []) + [written]
    )


def format_categories(results: dict) -> str:
    """The steerability per prompt category as a table (empty when no prompt has a category):
    one row per category, one cell per method holding every objective's rho."""
    if not results["categories"]:
        return ""
    methods = results["methods"]
    rhos = " / ".join(results["objectives"])
    lines = [
        f"steerability by prompt category (rho {rhos}):",
        "| category (prompts) | " + " | ".join(methods) + " |",
        "|---" * (1 + len(methods)) + "|",
    ]
    for category, count in results["categories"].items():
        cells = [
            " / ".join(f"{rho:.2f}" for rho in r["steerability_by_category"][category].values())
            for r in methods.values()
        ]
        lines.append(f"| {category} ({count}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_plots(results: dict, out: Path) -> None:
    """An interactive Plotly HTML (3-D for three objectives) and a PNG of pairwise projections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    objectives = results["objectives"]
    k = len(objectives)
    fig = go.Figure()
    for method, r in results["methods"].items():
        pts = np.array([[p["rewards"][n] for n in objectives] for p in r["points"]])
        hover = [
            ", ".join(f"{n}={w:.2f}" for n, w in zip(objectives, p["weights"], strict=True))
            + "<br>"
            + ", ".join(f"{c.replace('_', ' ')} {p['quality'][c]:.2f}" for c in PANEL_CATEGORIES)
            for p in r["points"]
        ]
        if k >= 3:
            fig.add_trace(
                go.Scatter3d(
                    x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name=method, text=hover
                )
            )
        else:
            fig.add_trace(
                go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=method, text=hover)
            )
    titles = dict(xaxis_title=objectives[0], yaxis_title=objectives[1])
    if k >= 3:
        fig.update_layout(scene=dict(**titles, zaxis_title=objectives[2]))
    else:
        fig.update_layout(**titles)
    fig.update_layout(title="Mean normalised reward per grid weighting")
    fig.write_html(out.with_suffix(".html"), include_plotlyjs="cdn")

    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    figure = plt.figure(figsize=(max(5 * len(pairs), 12), 9), layout="constrained")
    fronts, quality = figure.subfigures(2, 1)
    axes = fronts.subplots(1, len(pairs), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        for method, r in results["methods"].items():
            pts = np.array([[p["rewards"][n] for n in objectives] for p in r["points"]])
            ax.scatter(pts[:, i], pts[:, j], label=method, s=22, alpha=0.8)
        ax.set_xlabel(f"{objectives[i]} (normalised)")
        ax.set_ylabel(f"{objectives[j]} (normalised)")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fronts.suptitle("Mean normalised reward per grid weighting, by method")
    draw_quality_panel(quality, results)
    figure.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(figure)
