"""The browser app: steer a language model with one slider per objective, watch every generation
land in objective space next to each method's Pareto front, sweep the front over a weight grid,
rate pairs of responses, and follow the ratings on a dashboard.

    make run                  # or `python app.py`: serves on 0.0.0.0:7860 (PORT overrides)

Only the page lives here: layout, event wiring and formatting. Handlers parse, call the service
(`steering.serve.service.SteeringService`) and format; the gradio_client endpoints are
`steering.serve.api.ApiEndpoints`. The model loads once per process in a background thread, so
a page load never waits for it; every model call shares one concurrency group with a bounded
queue. Data lives in /data when it exists and is writable (a Space's persistent disk), else
./data; DATABASE_URL overrides. Endpoints for gradio_client: docs/app.md.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import os
import uuid
from contextlib import contextmanager
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from app_plots import (  # noqa: E402
    dashboard_tables,
    empty_figure,
    frontier_figure,
    hypervolume_line,
    point_choices,
    question,
    reveal,
    scores_figure,
    strengths_figure,
    vote_line,
    weights_label,
)
from steering.errors import UserError  # noqa: E402
from steering.model.methods import METHODS  # noqa: E402
from steering.objectives import get_objective  # noqa: E402
from steering.serve.api import ApiEndpoints  # noqa: E402
from steering.serve.dashboard import DashboardQueries  # noqa: E402
from steering.serve.frontier import DEFAULT_REFERENCE  # noqa: E402
from steering.serve.service import (  # noqa: E402
    MAX_NEW_TOKENS,
    SWEEP_STEPS,
    SteeringService,
    parse_decoding,
)

log = logging.getLogger("app")

VOTE_CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
# BrowserState encrypts in the browser with a secret it receives in the page config, so the
# secret hides nothing; keeping it fixed keeps a visitor's anonymous id across server restarts.
RATER_STORAGE_KEY = "steering-rater-id"
RATER_SECRET = "steering-anonymous-rater"


def shown(message: str) -> str:
    """Gradio renders toast and error messages as HTML; ours may quote what a request sent."""
    return html.escape(message, quote=False)


@contextmanager
def friendly_errors():
    """Turn a failure into a gr.Error of one sentence; the app keeps serving."""
    try:
        yield
    except gr.Error:
        raise
    except UserError as error:
        raise gr.Error(shown(str(error))) from None
    except Exception as error:
        log.exception("request failed")
        raise gr.Error(f"The request failed ({type(error).__name__}); please try again.") from None


def endpoint(fn):
    """`fn` with its signature and docstring (which gradio_client sees), errors made friendly."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            with friendly_errors():
                yield from fn(*args, **kwargs)

        return streaming

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with friendly_errors():
            return fn(*args, **kwargs)

    return call


# --- formatting --------------------------------------------------------------------------------


def frontier(service: SteeringService, prompt, highlight=None, title="This prompt's generations"):
    points = service.plot_points(prompt)
    return points, frontier_figure(points, service.objectives, highlight, title, DEFAULT_REFERENCE)


def status_line(service: SteeringService) -> str:
    if not service.ready:
        return "Loading the model… the page works meanwhile; requests wait for it."
    if service.load_error:
        return f"The {service.default_method} method did not load: {shown(service.load_error)}"
    backend = "llama.cpp" if service.serving_backend() == "llamacpp" else "torch"
    return (
        f"Model ready ({service.default_method} on {backend}; "
        f"objectives: {', '.join(service.objectives)})."
    )


# --- UI handlers (plain functions of the service and the component values) ---------------------


def prompt_or_warning(service: SteeringService, prompt, quiet: bool = False) -> str | None:
    """The prompt to send (a toast says when it was cut); None, with a warning, when empty."""
    if not (prompt or "").strip():
        if not quiet:
            gr.Warning("Type a prompt first: the model was not called.")
        return None
    prompt, notice = service.clean_prompt(prompt)
    if notice:
        gr.Warning(shown(notice))
    return prompt


def ui_used_weights(service: SteeringService, *weights) -> list:
    try:
        return list(service.weights(weights).values)
    except UserError:
        return [None] * len(service.objectives)


def ui_generate(
    service, prompt, method, max_tokens, temperature, seed, *weights, quiet_if_empty=False
):
    """Stream the response; then the scores, the prompt's frontier and the point chooser."""
    skip = (gr.skip(),) * 4
    prompt = prompt_or_warning(service, prompt, quiet_if_empty)
    if prompt is None:
        yield (gr.skip(), *skip)
        return
    with friendly_errors():
        decoding = parse_decoding(max_tokens, temperature, seed)
        for item in service.stream(prompt, method, service.weights(weights), decoding):
            if isinstance(item, str):
                yield (item, *skip)
                continue
            points, figure = frontier(service, prompt, highlight=item.generation_id)
            yield (
                item.text,
                scores_figure(service.objectives, item.raw, item.normalised),
                figure,
                hypervolume_line(points),
                gr.update(choices=point_choices(points, service.objectives), value=None),
            )


def ui_sweep(
    service: SteeringService, prompt, methods, step, max_tokens, temperature, seed, progress
):
    """Sweep the grid batch by batch, redrawing the frontier and reporting progress."""
    prompt = prompt_or_warning(service, prompt)
    if prompt is None:
        yield gr.skip(), gr.skip(), gr.skip()
        return
    with friendly_errors():
        decoding = parse_decoding(max_tokens, temperature, seed)
        progress(0, desc="Sweeping the weight grid")
        for done, total, _ in service.sweep(prompt, list(methods or []), float(step), decoding):
            progress((done, total), desc=f"{done}/{total} generations")
            points, figure = frontier(service, prompt)
            choices = point_choices(points, service.objectives)
            yield figure, hypervolume_line(points), gr.update(choices=choices, value=None)


def ui_show_point(service: SteeringService, generation_id, prompt) -> tuple[str, str]:
    if generation_id is None:
        return "", ""
    with friendly_errors():
        for point in service.plot_points(service.optional_prompt(prompt)) or service.plot_points(
            None
        ):
            if point.generation_id == int(generation_id):
                scores = ", ".join(
                    f"{o} {s:+.2f}" for o, s in zip(service.objectives, point.scores, strict=True)
                )
                return point.text, (
                    f"#{point.generation_id} · `{point.method}` · weights "
                    f"{weights_label(service.objectives, point.weights)} · {scores}"
                )
    return "", "That generation is not in the plot any more."


def ui_rater_id(current) -> str:
    return current if isinstance(current, str) and current else str(uuid.uuid4())


def ui_new_pair(service: SteeringService, prompt, max_tokens, temperature, rater):
    with friendly_errors():
        decoding = parse_decoding(max_tokens, temperature, 0)
        pair = service.new_pair(service.optional_prompt(prompt), decoding)
    state = {
        "comparison_id": pair.comparison_id,
        "a": {"method": pair.a.method, "weights": pair.a.weights},
        "b": {"method": pair.b.method, "weights": pair.b.weights},
    }
    buttons = [gr.update(interactive=True)] * len(VOTE_CHOICES)
    radios = [gr.update(value=None)] * len(service.objectives)
    votes = vote_line(*service.vote_counts(rater))
    return (state, pair.prompt, pair.a.text, pair.b.text, "", votes, *buttons, *radios)


def ui_vote(service: SteeringService, choice, profile, pair, rater, *answers):
    """Store the vote (the server refuses a second one on the same pair), then reveal."""
    n_buttons = len(VOTE_CHOICES)
    if not pair:
        gr.Warning("Ask for a new pair first.")
        return (gr.skip(),) * (3 + n_buttons)
    rater = ui_rater_id(rater)
    user_name = getattr(profile, "username", None) if profile is not None else None
    per_objective = dict(zip(service.objectives, answers, strict=True))
    with friendly_errors():
        counts = service.rate(pair["comparison_id"], choice, rater, None, per_objective, user_name)
    disabled = [gr.update(interactive=False)] * n_buttons
    votes = vote_line(counts.yours, counts.total)
    return (reveal(pair, service.objectives), votes, rater, *disabled)


def ui_dashboard(dashboard: DashboardQueries, fresh: bool = False):
    """Counts, win rates, strengths, human steerability and the frontier of everything stored."""
    with friendly_errors():
        d = dashboard.get(fresh)
        counts, wins, bt, steer = dashboard_tables(d)
        objectives, title = dashboard.service.objectives, "All stored generations"
        everything = frontier_figure(d.points, objectives, None, title, DEFAULT_REFERENCE)
        return counts, wins, bt, strengths_figure(d.strengths), steer, everything


def ui_export(dashboard: DashboardQueries) -> str:
    with friendly_errors():
        return str(dashboard.export_file())


def ui_status(service: SteeringService):
    service.start_loading()
    return status_line(service), gr.Timer(active=not service.ready)


# --- layout --------------------------------------------------------------------------------------

METHOD_INFO = (
    "logits (logit mixing) always runs on torch; llama.cpp serves the others when installed. "
    "Sweeps run on torch, all weightings in one batch."
)


def weight_controls(name: str, even: float) -> tuple[gr.Slider, gr.Number]:
    """One objective's slider and, beside it, the normalised weight it stands for."""
    slider = {"step": 0.05, "label": name, "info": get_objective(name).description, "scale": 4}
    used = {"label": "used", "interactive": False, "precision": 3, "scale": 1, "min_width": 80}
    with gr.Row(equal_height=True):
        return (
            gr.Slider(0, 1, round(even, 2), **slider, elem_id=f"w-{name}"),
            gr.Number(round(even, 3), **used, elem_id=f"used-{name}"),
        )


def explore_tab(service: SteeringService) -> SimpleNamespace:
    """The prompt, method, one slider per objective, decoding and sweep controls; the response,
    its scores and the prompt's frontier."""
    ui, objectives = SimpleNamespace(sliders=[], used=[]), service.objectives
    examples = service.example_prompts()[:: max(1, len(service.example_prompts()) // 6)][:6]
    with gr.Row():
        with gr.Column(scale=2):
            placeholder = "Ask for a review, a note, a story…"
            ui.prompt = gr.Textbox(
                label="Prompt", lines=3, elem_id="prompt", placeholder=placeholder
            )
            gr.Examples(examples=[[e] for e in examples], inputs=[ui.prompt])
            ui.method = gr.Radio(
                list(METHODS),
                value=service.default_method,
                label="Method",
                elem_id="method",
                info=METHOD_INFO,
            )
            for name in objectives:
                slider, used = weight_controls(name, 1 / len(objectives))
                ui.sliders.append(slider)
                ui.used.append(used)
            with gr.Accordion("Decoding", open=False, elem_id="decoding"):
                ui.max_tokens = gr.Slider(
                    1, MAX_NEW_TOKENS, 64, step=1, label="Max new tokens", elem_id="max-tokens"
                )
                ui.temperature = gr.Slider(0, 1.5, value=0.7, step=0.05, label="Temperature")
                ui.seed = gr.Number(0, precision=0, label="Seed")
            ui.generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Accordion("Sweep the front", open=True):
                ui.sweep_methods = gr.CheckboxGroup(
                    list(METHODS), value=[service.default_method], label="Methods to sweep"
                )
                ui.step = gr.Radio(list(SWEEP_STEPS), value=0.5, label="Grid step")
                ui.sweep = gr.Button("Sweep the front", elem_id="sweep")
        with gr.Column(scale=3):
            ui.response = gr.Textbox(
                label="Response", lines=8, interactive=False, elem_id="response", buttons=["copy"]
            )
            ui.scores = gr.Plot(label="Scores", elem_id="scores")
            ui.frontier = gr.Plot(
                empty_figure("Generate to add points."),
                label="Pareto frontier of this prompt",
                elem_id="frontier",
            )
            ui.hv = gr.Markdown(elem_id="hypervolume")
            ui.chooser = gr.Dropdown(
                [], label="Choose a point to read its full text", elem_id="chooser"
            )
            ui.point_meta = gr.Markdown()
            ui.point_text = gr.Textbox(
                label="Full text", lines=6, interactive=False, elem_id="point-text"
            )
    return ui


def rate_tab(objectives: tuple[str, ...]) -> SimpleNamespace:
    """Two hidden-setting responses, the vote buttons and the per-objective questions."""
    ui = SimpleNamespace()
    gr.Markdown(
        "Two responses to one prompt, made with different weights or methods. "
        "Which is better? The settings are revealed after your vote."
    )
    if os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"):
        gr.LoginButton()
    with gr.Row():
        ui.prompt_in = gr.Textbox(label="Prompt (empty: a random one)", scale=4)
        ui.new_pair = gr.Button("New pair", variant="primary", scale=1, elem_id="new-pair")
    ui.pair = gr.State(None)
    ui.prompt = gr.Textbox(label="Prompt", interactive=False)
    with gr.Row():
        ui.text_a = gr.Textbox(label="A", lines=8, interactive=False, elem_id="text-a")
        ui.text_b = gr.Textbox(label="B", lines=8, interactive=False, elem_id="text-b")
    with gr.Row():
        ui.buttons = {
            c: gr.Button(label, interactive=False, elem_id=f"vote-{c}")
            for c, label in VOTE_CHOICES.items()
        }
    with gr.Accordion("Per objective (optional, answer before voting)", open=False):
        sides = [("A", "a"), ("B", "b"), ("Same", "tie")]
        ui.answers = [gr.Radio(sides, value=None, label=question(o)) for o in objectives]
    ui.revealed = gr.Markdown(elem_id="reveal")
    ui.votes = gr.Markdown(vote_line(0, 0), elem_id="votes")
    return ui


def dashboard_tab() -> SimpleNamespace:
    """Counts, win rates, strengths, human steerability, every stored point, the export."""
    ui = SimpleNamespace()
    ui.counts = gr.Markdown(elem_id="counts")
    with gr.Row():
        ui.wins = gr.Dataframe(
            headers=["method", "wins", "losses", "ties", "both bad", "win rate"],
            label="Win rates per method",
        )
        ui.strengths = gr.Dataframe(
            headers=["method", "strength", "low", "high", "comparisons"], label="Bradley-Terry"
        )
    ui.strength_plot = gr.Plot(label="Strengths")
    ui.steer = gr.Dataframe(
        headers=["objective", "agree", "disagree", "ties", "rate"],
        label="Human steerability: when A had the higher weight on an "
        "objective, how often raters judged A stronger on it",
    )
    ui.frontier = gr.Plot(label="Frontier of all stored generations")
    with gr.Row():
        ui.refresh = gr.Button("Refresh")
        ui.export = gr.Button("Export ratings (JSONL)")
    ui.export_file = gr.File(label="Ratings export")
    ui.timer = gr.Timer(30.0)
    return ui


def build_demo(
    service: SteeringService, model_concurrency: int = 1, queue_size: int = 32
) -> gr.Blocks:
    dashboard = DashboardQueries(service)
    api = ApiEndpoints(service, dashboard)
    model = {"concurrency_id": "model", "concurrency_limit": model_concurrency}
    private = {"api_visibility": "private"}

    with gr.Blocks(title="Steerable language model") as demo:
        gr.Markdown(
            "# Steer a language model\nOne slider per objective: the model's trade-off "
            "between them is chosen at inference time (a Conditional Language Policy)."
        )
        status = gr.Markdown(status_line(service), elem_id="status")
        status_timer = gr.Timer(2.0)
        rater = gr.BrowserState(None, storage_key=RATER_STORAGE_KEY, secret=RATER_SECRET)
        with gr.Tab("Explore and sweep"):
            ex = explore_tab(service)
        with gr.Tab("Rate"):
            rt = rate_tab(service.objectives)
        with gr.Tab("Dashboard") as dashboard_tab_:
            db = dashboard_tab()

        # --- events ---
        quiet = {**private, "queue": False, "show_progress": "hidden"}
        for trigger in (status_timer.tick, demo.load):
            trigger(lambda: ui_status(service), None, [status, status_timer], **quiet)
        demo.load(ui_rater_id, rater, rater, **private, queue=False)
        demo.load(lambda r: vote_line(*service.vote_counts(r)), rater, rt.votes, **private)
        used = {**quiet, "trigger_mode": "always_last"}
        for slider in ex.sliders:
            slider.input(lambda *w: ui_used_weights(service, *w), ex.sliders, ex.used, **used)

        def generate(prompt, method, max_tokens, temperature, seed, *weights):
            yield from ui_generate(service, prompt, method, max_tokens, temperature, seed, *weights)

        def regenerate(*values):
            yield from ui_generate(service, *values, quiet_if_empty=True)

        decoding_in = [ex.max_tokens, ex.temperature, ex.seed]
        generate_in = [ex.prompt, ex.method, *decoding_in, *ex.sliders]
        generate_out = [ex.response, ex.scores, ex.frontier, ex.hv, ex.chooser]
        once = {**model, **private, "trigger_mode": "always_last"}
        for trigger in (ex.generate.click, ex.prompt.submit):
            trigger(generate, generate_in, generate_out, **once, api_name="ui_generate")
        for slider in ex.sliders:
            # release, not change: a drag produces dozens of changes but one release
            slider.release(regenerate, generate_in, generate_out, **once, api_name="ui_regenerate")

        def sweep(prompt, methods, step, max_tokens, temperature, seed, progress=gr.Progress()):  # noqa: B008
            yield from ui_sweep(
                service, prompt, methods, step, max_tokens, temperature, seed, progress
            )

        sweep_in = [ex.prompt, ex.sweep_methods, ex.step, *decoding_in]
        sweep_out = [ex.frontier, ex.hv, ex.chooser]
        ex.sweep.click(sweep, sweep_in, sweep_out, **model, **private, api_name="ui_sweep")
        show_point = lambda g, p: ui_show_point(service, g, p)  # noqa: E731
        ex.chooser.change(
            show_point, [ex.chooser, ex.prompt], [ex.point_text, ex.point_meta], **private
        )

        buttons = list(rt.buttons.values())
        pair_in = [rt.prompt_in, ex.max_tokens, ex.temperature, rater]
        pair_out = [rt.pair, rt.prompt, rt.text_a, rt.text_b, rt.revealed, rt.votes, *buttons]
        new_pair = lambda p, m, t, r: ui_new_pair(service, p, m, t, r)  # noqa: E731
        rt.new_pair.click(new_pair, pair_in, [*pair_out, *rt.answers], **model, **private)
        for choice, button in rt.buttons.items():

            def vote(profile: gr.OAuthProfile | None, pair, rater_id, *given, choice=choice):
                return ui_vote(service, choice, profile, pair, rater_id, *given)

            vote_out = [rt.revealed, rt.votes, rater, *buttons]
            button.click(vote, [rt.pair, rater, *rt.answers], vote_out, **private)

        dashboard_out = [db.counts, db.wins, db.strengths, db.strength_plot, db.steer, db.frontier]
        polled = {**private, "show_progress": "hidden"}
        for trigger in (db.timer.tick, demo.load):
            trigger(lambda: ui_dashboard(dashboard), None, dashboard_out, **polled)
        for trigger in (db.refresh.click, dashboard_tab_.select):
            trigger(lambda: ui_dashboard(dashboard, fresh=True), None, dashboard_out, **private)
        db.export.click(lambda: ui_export(dashboard), None, db.export_file, **private)

        scorers = {"concurrency_id": "scorers", "concurrency_limit": 2}
        endpoints = {"generate": model, "sweep": model, "pair": model, "score": scorers}
        for name in ("generate", "sweep", "pair", "score", "rate", "frontier", "export"):
            gr.api(endpoint(getattr(api, name)), api_name=name, **endpoints.get(name, {}))

    demo.queue(max_size=queue_size, default_concurrency_limit=4)
    return demo


service = SteeringService()
demo = build_demo(service)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service.start_loading()
    demo.launch(server_name="0.0.0.0", server_port=int(os.environ.get("PORT", "7860")))


if __name__ == "__main__":
    main()
