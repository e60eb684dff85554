"""The evaluation figure's panel of degenerate, unfinished, echoing, restating, off-topic and
help-offering answers (`quality`), per method and grid weighting, drawn from the results JSON."""

from __future__ import annotations

import textwrap

import numpy as np

from steering.evaluation.quality import OFF_TOPIC_SIMILARITY

PANEL_CATEGORIES = {
    "degenerate": "degenerate answers (under five words)",
    "unfinished": "unfinished answers (cut at the token limit mid-sentence)",
    "echo": "answers repeating the prompt",
    "restatement": "answers restating the prompt (under 1/5 new words)",
    "off_topic": (
        f"answers off the prompt's topic (MiniLM similarity under {OFF_TOPIC_SIMILARITY})"
    ),
    "offer": "answers opening with an offer of help",
}


def draw_quality_panel(figure, results: dict) -> None:
    """One heatmap per category on `figure` (a matplotlib Figure or SubFigure): methods in rows,
    grid weightings in columns, each cell the share of that point's answers in the category."""
    methods = results["methods"]
    weightings = [p["weights"] for p in next(iter(methods.values()))["points"]]
    labels = ["(" + ", ".join(f"{w:g}" for w in weights) + ")" for weights in weightings]
    axes = figure.subplots(1, len(PANEL_CATEGORIES), squeeze=False)[0]
    for ax, (category, title) in zip(axes, PANEL_CATEGORIES.items(), strict=True):
        shares = np.array([[p["quality"][category] for p in r["points"]] for r in methods.values()])
        image = ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="Reds", aspect="auto")  # (M, G)
        for (row, column), share in np.ndenumerate(shares):
            if share > 0:
                colour = "white" if share > 0.6 else "black"
                ax.text(
                    column, row, f"{share:.2f}", ha="center", va="center", fontsize=6, color=colour
                )
        ax.set_yticks(range(len(methods)), list(methods))
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        # wrapped: six titles side by side would run into each other
        ax.set_title(textwrap.fill(f"share of {title}", 32), fontsize=9)
    # one axis label for the row: six side by side would run into each other
    axes[0].set_xlabel("weighting (" + ", ".join(results["objectives"]) + ")", loc="left")
    figure.colorbar(image, ax=list(axes), shrink=0.8)
