"""Which objectives conflict? Score a base-model pool with every objective and report the
pairwise Spearman correlations (docs/objective-study.md).

    python -m steering study --pool runs/pool/base.jsonl --out docs/objective-study.md
    python -m steering study --objectives-file my-objectives.toml --out runs/study.md
    python -m steering study --adapters runs/mine --out runs/study.md   # the clp adapter's objectives

A default objective set is only worth steering between if some pair is negatively correlated on
the base model's own samples: otherwise one response can be best on everything.
"""

from __future__ import annotations

from pathlib import Path

from steering.errors import UserError
from steering.objectives import DEFAULT_OBJECTIVES, correlation_table, fit_calibration
from steering.objectives.declared import ObjectiveSet, builtin_objectives
from steering.training.pool import read_pool
from steering.training.scoring import pool_scores_path, score_pool

# every built-in objective that works without configuration (classifier and human need a model)
STUDY_OBJECTIVES = (
    "positivity",
    "harmlessness",
    "relevance",
    "conciseness",
    "brevity",
    "answer_relevance",
    "readability",
    "fluency",
)


def objective_study(
    pool: str | Path, out: str | Path, chosen: ObjectiveSet | None = None, command: str = ""
) -> str:
    """Correlations of the chosen objectives (default: every built-in that needs no
    configuration) over the pool's samples, written as markdown; `command` is the command line
    the report says it was made with."""
    pool = Path(pool)
    candidates = read_pool(pool)
    if len(candidates) < 2:
        raise UserError(
            f"the pool {pool} holds fewer than 2 samples; sample it with `python -m steering train` or `pool`"
        )
    chosen = chosen or builtin_objectives(STUDY_OBJECTIVES)
    names = chosen.names
    raw = score_pool(candidates, chosen, pool_scores_path(pool))
    table = correlation_table(raw)
    calibration = fit_calibration(raw)
    default = [n for n in DEFAULT_OBJECTIVES if n in names and chosen.builtin(n)]
    lines = [
        "# Objectives: which ones conflict",
        "",
        f"Measured on {len(candidates)} base-model samples ({len({c.prompt for c in candidates})} training "
        f"prompts) from `{pool}`, with",
        "",
        f"    {command or f'python -m steering study --pool {pool} --out {out}'}",
        "",
        "## Pairwise Spearman correlation",
        "",
        table.to_markdown(),
        "",
        "## Pairs, strongest first",
        "",
        "| pair | rho |",
        "|---|---|",
        *[f"| {a} / {b} | {rho:.2f} |" for a, b, rho in table.pairs()],
        "",
        "## Raw scales on these samples",
        "",
        "| objective | mean | std | 5% | 50% | 95% |",
        "|---|---|---|---|---|---|",
        *[
            f"| {n} | {s.mean:.3f} | {s.std:.3f} | {s.q05:.3f} | {s.q50:.3f} | {s.q95:.3f} |"
            for n, s in calibration.stats.items()
        ],
        "",
    ]
    if len(default) >= 2:
        index = {n: i for i, n in enumerate(names)}
        lines += [f"## Default set: {', '.join(default)}", "", "| pair | rho |", "|---|---|"]
        for i, a in enumerate(default):
            for b in default[i + 1 :]:
                lines.append(f"| {a} / {b} | {table.rho[index[a], index[b]]:.2f} |")
        negative = [
            (a, b)
            for i, a in enumerate(default)
            for b in default[i + 1 :]
            if table.rho[index[a], index[b]] < 0
        ]
        lines += ["", f"Negatively correlated pairs in the default set: {len(negative)}."]
    text = "\n".join(lines) + "\n"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text
