"""Plotly figures and text for the app: generations as points in objective space with each
method's Pareto front, one generation's scores, the methods' Bradley-Terry strengths, and the
page's labels and tables.

Pure functions of plain values (no gradio, no database), so tests call them directly. Every
string that came from the model is HTML-escaped before it reaches Plotly, whose hover labels
understand a subset of HTML.

    fig = frontier_figure(points, ("positivity", "conciseness"))   # 2 objectives: step lines
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from steering.evaluation.pareto import front_for_plot
from steering.serve.frontier import (
    DEFAULT_REFERENCE,
    PlotPoint,
    fronts_by_method,
    hypervolumes,
    methods_in,
    score_matrix,
)

METHOD_COLOURS = {
    "clp": "#1f77b4",
    "prompt": "#ff7f0e",
    "soups": "#2ca02c",
    "logits": "#d62728",
    "base": "#7f7f7f",
}
FALLBACK_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
HOVER_TEXT_CHARS = 120
FIGURE_HEIGHT = 440


def method_colour(method: str) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return FALLBACK_COLOURS[sum(map(ord, method)) % len(FALLBACK_COLOURS)]


def weights_label(objectives: Sequence[str], weights: Sequence[float]) -> str:
    return ", ".join(f"{o}={w:.2f}" for o, w in zip(objectives, weights, strict=True))


def text_start(text: str, limit: int = HOVER_TEXT_CHARS) -> str:
    """The first characters of a generation on one line (raw: escape before rendering)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def hover_text(point: PlotPoint, objectives: Sequence[str]) -> str:
    scores = ", ".join(f"{o}={s:+.2f}" for o, s in zip(objectives, point.scores, strict=True))
    return (
        f"<b>{html.escape(point.method)}</b> #{point.generation_id}<br>"
        f"weights: {html.escape(weights_label(objectives, point.weights))}<br>"
        f"scores: {html.escape(scores)}<br>"
        f"{html.escape(text_start(point.text))}"
    )


def _title(title: str, hv: Mapping[str, float], reference: float) -> str:
    if not hv:
        return title
    parts = " · ".join(f"{m} {v:.3g}" for m, v in hv.items())
    return f"{title}<br><sup>hypervolume (reference {reference:g}): {parts}</sup>"


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=html.escape(message),
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font={"size": 14},
    )
    fig.update_layout(height=FIGURE_HEIGHT, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def frontier_figure(
    points: Sequence[PlotPoint],
    objectives: Sequence[str],
    highlight: int | None = None,
    title: str = "Generations in objective space",
    reference: float = DEFAULT_REFERENCE,
) -> go.Figure:
    """Every point coloured by method, each method's non-dominated points enlarged and joined.

    Two objectives: a scatter with a step line through each front. Three: a 3D scatter. More: a
    parallel-coordinates plot with a 0/1 "front" axis. `highlight` marks one generation id.
    """
    if not points:
        return empty_figure("No scored generations yet: generate or sweep to add points.")
    k = len(objectives)
    hv = hypervolumes(points, reference)
    if k > 3:
        return _parallel_figure(points, objectives, _title(title, hv, reference))
    if k == 1:
        # One objective has no front to draw; points spread along x in the order they came.
        points = [
            PlotPoint(p.generation_id, p.method, p.weights, (float(i), *p.scores), p.text)
            for i, p in enumerate(points)
        ]
        objectives = ("generation", *objectives)
    fig = go.Figure()
    fronts = fronts_by_method(points)
    for method in methods_in(points):
        colour = method_colour(method)
        on_front = set(fronts[method].tolist())
        mine = [i for i, p in enumerate(points) if p.method == method]
        for front, label in ((False, "dominated"), (True, "front")):
            chosen = [points[i] for i in mine if (i in on_front) == front]
            if chosen:
                fig.add_trace(_scatter(chosen, objectives, method, colour, front, label))
        if len(objectives) == 2 and len(fronts[method]) > 1:
            front_points = [points[i] for i in fronts[method]]
            order = front_for_plot(score_matrix(front_points))
            xs = [front_points[i].scores[0] for i in order]
            ys = [front_points[i].scores[1] for i in order]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"shape": "vh", "color": colour},
                    name=f"{method} front",
                    legendgroup=method,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
    marked = [p for p in points if p.generation_id == highlight]
    if marked:
        fig.add_trace(_scatter(marked, objectives, "latest", "#000000", True, "latest"))
    layout = {
        "title": {"text": _title(title, hv, reference)},
        "height": FIGURE_HEIGHT,
        "margin": {"l": 40, "r": 20, "t": 70, "b": 40},
        "legend": {"orientation": "h"},
    }
    if len(objectives) == 3:
        layout["scene"] = {
            "xaxis_title": objectives[0],
            "yaxis_title": objectives[1],
            "zaxis_title": objectives[2],
        }
    else:
        layout["xaxis_title"], layout["yaxis_title"] = objectives[0], objectives[1]
    fig.update_layout(**layout)
    return fig


def _scatter(points, objectives, method, colour, front, label):
    xs = [p.scores[0] for p in points]
    ys = [p.scores[1] for p in points]
    marker = {
        "color": colour,
        "size": 11 if front else 7,
        "opacity": 1.0 if front else 0.45,
        "line": {"width": 1.5 if front else 0, "color": "#222222"},
    }
    if label == "latest":
        marker.update(
            symbol="diamond" if len(objectives) == 3 else "star",
            size=16,
            color="rgba(0,0,0,0)",
            line={"width": 2.5, "color": "#000000"},
        )
    common = {
        "mode": "markers",
        "name": method if label != "dominated" else f"{method} (dominated)",
        "legendgroup": method,
        "marker": marker,
        "text": [hover_text(p, objectives[-len(p.scores) :]) for p in points],
        "hovertemplate": "%{text}<extra></extra>",
        "customdata": [p.generation_id for p in points],
    }
    if len(objectives) == 3:
        marker["size"] = marker["size"] * 0.6
        return go.Scatter3d(x=xs, y=ys, z=[p.scores[2] for p in points], **common)
    return go.Scatter(x=xs, y=ys, **common)


def _parallel_figure(points, objectives, title) -> go.Figure:
    methods = methods_in(points)
    index = {m: i for i, m in enumerate(methods)}
    on_front = np.zeros(len(points))
    for idx in fronts_by_method(points).values():
        on_front[idx] = 1.0
    scores = score_matrix(points)
    dimensions = [{"label": o, "values": scores[:, j]} for j, o in enumerate(objectives)]
    dimensions.append(
        {
            "label": "front",
            "values": on_front,
            "tickvals": [0, 1],
            "ticktext": ["dominated", "front"],
        }
    )
    colours = [method_colour(m) for m in methods]
    # A discrete colour scale: method i occupies the band [i, i+1) / n.
    n = max(len(methods), 1)
    scale = []
    for i, colour in enumerate(colours):
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    values = [(index[p.method] + 0.5) / n for p in points]
    fig = go.Figure(
        go.Parcoords(
            line={"color": values, "colorscale": scale, "cmin": 0, "cmax": 1}, dimensions=dimensions
        )
    )
    legend = " · ".join(
        f"<span style='color:{c}'>{html.escape(m)}</span>"
        for m, c in zip(methods, colours, strict=True)
    )
    fig.update_layout(
        title={"text": f"{title}<br><sup>{legend}</sup>"},
        height=FIGURE_HEIGHT,
        margin={"l": 60, "r": 60, "t": 90, "b": 30},
    )
    return fig


def scores_figure(
    objectives: Sequence[str], raw: Mapping[str, float], normalised: Mapping[str, float] | None
) -> go.Figure:
    """One generation's normalised scores as bars, each labelled with its raw score."""
    values = normalised if normalised is not None else raw
    fig = go.Figure(
        go.Bar(
            x=list(objectives),
            y=[values[o] for o in objectives],
            text=[f"raw {raw[o]:.3g}" for o in objectives],
            textposition="auto",
            marker={"color": ["#2a9d8f" if values[o] >= 0 else "#e76f51" for o in objectives]},
            hovertemplate="%{x}: %{y:.2f}<extra></extra>",
        )
    )
    label = "normalised score (z)" if normalised is not None else "raw score (no calibration)"
    fig.update_layout(
        height=260,
        margin={"l": 40, "r": 10, "t": 30, "b": 30},
        yaxis_title=label,
        title={"text": "Scores of this response"},
    )
    return fig


def strengths_figure(strengths: Sequence) -> go.Figure:
    """Bradley-Terry log-strengths with their 95% intervals (storage MethodStrength records)."""
    if not strengths:
        return empty_figure("No rated comparisons between two methods yet.")
    fig = go.Figure(
        go.Scatter(
            x=[s.strength for s in strengths],
            y=[s.method for s in strengths],
            mode="markers",
            marker={"size": 12, "color": [method_colour(s.method) for s in strengths]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [s.high - s.strength for s in strengths],
                "arrayminus": [s.strength - s.low for s in strengths],
            },
            hovertemplate="%{y}: %{x:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        height=280,
        margin={"l": 70, "r": 20, "t": 40, "b": 40},
        title={"text": "Bradley-Terry strength (95% bootstrap interval)"},
        xaxis_title="log-strength",
        yaxis={"autorange": "reversed"},
    )
    return fig


# --- text for the page ---------------------------------------------------------------------------

# How the per-objective rating question reads; other objectives get a generic question.
ADJECTIVES = {
    "positivity": "positive",
    "conciseness": "concise",
    "brevity": "brief and complete",
    "answer_relevance": "relevant to the prompt",
    "direct_brevity": "brief and complete",
    "direct_relevance": "relevant to the prompt",
    "relevance": "relevant to the prompt",
    "readability": "readable",
    "fluency": "fluent",
    "harmlessness": "harmless",
    "classifier": "in line with the classifier",
    "human": "preferable",
}


def point_choices(points: list[PlotPoint], objectives) -> list[tuple[str, int]]:
    """Dropdown entries, newest first; labels are shown as text, never as markup."""
    return [
        (
            f"#{p.generation_id} {p.method} [{weights_label(objectives, p.weights)}] "
            f"{text_start(p.text, 60)}",
            p.generation_id,
        )
        for p in reversed(points)
    ]


def hypervolume_line(points: list[PlotPoint]) -> str:
    hv = hypervolumes(points, DEFAULT_REFERENCE)
    if not hv:
        return ""
    parts = " · ".join(f"{m}: **{v:.3g}**" for m, v in hv.items())
    return f"Hypervolume per method (reference {DEFAULT_REFERENCE:g} on every objective): {parts}"


def question(objective: str) -> str:
    adjective = ADJECTIVES.get(objective)
    return f"Which is more {adjective}?" if adjective else f"Which does better on {objective}?"


def pair_state(pair) -> dict:
    """What the page keeps of a pair until the vote: the ticket, and what to reveal after it."""
    hidden = {side: getattr(pair, side) for side in ("a", "b")}
    return {
        "ticket": pair.ticket,
        **{side: {"method": g.method, "weights": g.weights} for side, g in hidden.items()},
    }


def point_line(objectives, point: PlotPoint) -> str:
    """One stored point's id, method, weights and scores, as the chooser shows it."""
    scores = ", ".join(f"{o} {s:+.2f}" for o, s in zip(objectives, point.scores, strict=True))
    return (
        f"#{point.generation_id} · `{point.method}` · weights "
        f"{weights_label(objectives, point.weights)} · {scores}"
    )


def reveal(pair: dict, objectives) -> str:
    lines = ["**Revealed:**"]
    for side in ("a", "b"):
        g = pair[side]
        lines.append(
            f"- **{side.upper()}**: method `{g['method']}`, weights "
            f"{weights_label(objectives, g['weights'])}"
        )
    return "\n".join(lines)


def vote_line(yours: int, total: int) -> str:
    return f"Your votes: **{yours}** · all votes: **{total}**"


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def dashboard_tables(d) -> tuple[str, list, list, list]:
    """The dashboard's counts line and its win-rate, strength and steerability rows."""
    counts = (
        f"**{d.generations}** generations · **{d.prompts}** prompts · **{d.ratings}** "
        f"ratings by **{d.raters}** raters"
    )
    wins = [[w.key, w.wins, w.losses, w.ties, w.both_bad, rounded(w.rate)] for w in d.wins]
    bt = [
        [s.method, round(s.strength, 3), round(s.low, 3), round(s.high, 3), s.comparisons]
        for s in d.strengths
    ]
    steer = [[o, s.agree, s.disagree, s.ties, rounded(s.rate)] for o, s in d.steerability]
    return counts, wins, bt, steer


def status_line(service) -> str:
    if not service.ready:
        return "Loading the model… the page works meanwhile; requests wait for it."
    if service.load_error:
        return f"The {service.default_method} method did not load: {html.escape(service.load_error, quote=False)}"
    backend = "llama.cpp" if service.serving_backend() == "llamacpp" else "torch"
    return (
        f"Model ready ({service.default_method} on {backend}; "
        f"objectives: {', '.join(service.objectives)})."
    )
