"""The browser app: steer a language model with one slider per objective, watch every generation
land in objective space next to each method's Pareto front, sweep the front over a weight grid,
rate pairs of responses, and follow the ratings on a dashboard.

    make run                  # or `python app.py`: serves on 0.0.0.0:7860 (PORT overrides)

Only the page lives here: layout, events and formatting. Handlers parse, call the service
(`steering/serve/`) and format. The model loads in the background, so a page never waits for it;
every model call shares one concurrency group with a bounded queue. docs/app.md has the rest.
"""

from __future__ import annotations

import html
import inspect
import logging
import os
import sys
import typing
from contextlib import contextmanager
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

import app_plots as view
from steering.errors import UserError
from steering.model.methods import METHODS
from steering.serve.api import ApiEndpoints
from steering.serve.app_arguments import apply_app_arguments
from steering.serve.arena import Arena
from steering.serve.dashboard import DashboardQueries
from steering.serve.limits import request_identity
from steering.serve.service import MAX_NEW_TOKENS, SWEEP_STEPS, SteeringService, parse_decoding

log = logging.getLogger("app")
Profile = gr.OAuthProfile | None

VOTE_CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
# The browser keeps its server-signed rater token here. BrowserState's own secret is in the page
# and hides nothing; what makes the token trustworthy is the server's signature on it.
RATER_STORAGE_KEY = "steering-rater-token"


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
    """`fn` for gr.api: its parameters and docstring (which gradio_client sees), errors made
    friendly, and `address` / `hub_user` filled in from the request instead of by the client."""
    signature, hints = inspect.signature(fn), typing.get_type_hints(fn)
    filled = [n for n in ("address", "hub_user") if n in signature.parameters]
    params = [p for n, p in signature.parameters.items() if n not in filled]
    if filled:  # gradio passes these two by position, after the client's values
        kind, none = inspect.Parameter.POSITIONAL_OR_KEYWORD, None
        params += [
            inspect.Parameter("request", kind, default=none, annotation=gr.Request),
            inspect.Parameter("profile", kind, default=none, annotation=Profile),
        ]
    names = [p.name for p in params]

    def arguments(args, kwargs) -> dict:
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        request, profile = given.pop("request", None), given.pop("profile", None)
        known = dict(zip(("address", "hub_user"), request_identity(request, profile), strict=True))
        return given | {name: known[name] for name in filled}

    if inspect.isgeneratorfunction(fn):

        def call(*args, **kwargs):
            with friendly_errors():
                yield from fn(**arguments(args, kwargs))
    else:

        def call(*args, **kwargs):
            with friendly_errors():
                return fn(**arguments(args, kwargs))

    call.__name__, call.__doc__ = fn.__name__, fn.__doc__
    call.__signature__ = signature.replace(parameters=params)
    call.__annotations__ = {p.name: hints.get(p.name, p.annotation) for p in params} | {
        "return": hints.get("return")
    }
    return call


# --- formatting --------------------------------------------------------------------------------


def frontier(service: SteeringService, prompt, highlight=None, title="This prompt's generations"):
    points = service.plot_points(prompt)
    return points, view.frontier_figure(points, service.objectives, highlight, title)


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
                view.scores_figure(service.objectives, item.raw, item.normalised),
                figure,
                view.hypervolume_line(points),
                gr.update(choices=view.point_choices(points, service.objectives), value=None),
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
            choices = view.point_choices(points, service.objectives)
            yield figure, view.hypervolume_line(points), gr.update(choices=choices, value=None)


def ui_show_point(service: SteeringService, generation_id, prompt) -> tuple[str, str]:
    if generation_id is None:
        return "", ""
    with friendly_errors():
        for point in service.plot_points(service.optional_prompt(prompt)) or service.plot_points(
            None
        ):
            if point.generation_id == int(generation_id):
                return point.text, view.point_line(service.objectives, point)
    return "", "That generation is not in the plot any more."


def ui_new_pair(arena: Arena, prompt, max_tokens, temperature, token, request, profile):
    address, hub_user = request_identity(request, profile)
    with friendly_errors():
        rater = arena.rater(token, hub_user)
        decoding = parse_decoding(max_tokens, temperature, 0)
        pair = arena.new_pair(arena.service.optional_prompt(prompt), decoding, rater, address)
    state = view.pair_state(pair)
    buttons = [gr.update(interactive=True)] * len(VOTE_CHOICES)
    radios = [gr.update(value=None)] * len(arena.service.objectives)
    votes = view.vote_line(*arena.vote_counts(rater))
    return (state, pair.prompt, pair.a.text, pair.b.text, "", votes, *buttons, *radios)


def ui_vote(arena: Arena, choice, pair, token, request, profile, *answers):
    """Store the vote (the server takes one per pair, by the rater it was shown to), reveal."""
    if not pair:
        gr.Warning("Ask for a new pair first.")
        return (gr.skip(),) * (2 + len(VOTE_CHOICES))
    address, hub_user = request_identity(request, profile)
    per_objective = dict(zip(arena.service.objectives, answers, strict=True))
    with friendly_errors():
        rater = arena.rater(token, hub_user)
        counts = arena.rate(pair["ticket"], choice, rater, None, per_objective, address)
    disabled = [gr.update(interactive=False)] * len(VOTE_CHOICES)
    votes = view.vote_line(counts.yours, counts.total)
    return (view.reveal(pair, arena.service.objectives), votes, *disabled)


def ui_undo(arena: Arena, token, profile):
    """Take back the last vote; the pair's buttons come back so it can be voted again."""
    with friendly_errors():
        counts = arena.undo(arena.rater(token, request_identity(None, profile)[1]))
    enabled = [gr.update(interactive=True)] * len(VOTE_CHOICES)
    return ("Your last vote was undone.", view.vote_line(counts.yours, counts.total), *enabled)


def ui_dashboard(dashboard: DashboardQueries, fresh: bool = False):
    """Counts, win rates, strengths, human steerability and the frontier of everything stored."""
    with friendly_errors():
        d = dashboard.get(fresh)
        counts, wins, bt, steer = view.dashboard_tables(d)
        objectives, title = dashboard.service.objectives, "All stored generations"
        everything = view.frontier_figure(d.points, objectives, None, title)
        return counts, wins, bt, view.strengths_figure(d.strengths), steer, everything


def ui_export(dashboard: DashboardQueries, arena: Arena, admin_token, profile) -> str:
    with friendly_errors():
        arena.check_admin(admin_token, request_identity(None, profile)[1])
        return str(dashboard.export_file())


def ui_status(service: SteeringService):
    service.start_loading()
    return view.status_line(service), gr.Timer(active=not service.ready)


# --- layout --------------------------------------------------------------------------------------

METHOD_INFO = (
    "logits (logit mixing) always runs on torch; llama.cpp serves the others when installed. "
    "Sweeps run on torch, all weightings in one batch."
)


def weight_controls(name: str, info: str, even: float) -> tuple[gr.Slider, gr.Number]:
    """One objective's slider and, beside it, the normalised weight it stands for."""
    slider = {"step": 0.05, "label": name, "info": info, "scale": 4}
    used = {"label": "used", "interactive": False, "precision": 3, "scale": 1, "min_width": 80}
    with gr.Row(equal_height=True):
        return (
            gr.Slider(0, 1, round(even, 2), **slider, elem_id=f"w-{name}"),
            gr.Number(round(even, 3), **used, elem_id=f"used-{name}"),
        )


def explore_tab(service: SteeringService) -> SimpleNamespace:
    """The prompt, method, one slider per objective, decoding and sweep controls; the response,
    its scores and the prompt's frontier."""
    ui, objectives = SimpleNamespace(), service.objectives
    examples = service.example_prompts()[:: max(1, len(service.example_prompts()) // 6)][:6]
    with gr.Row():
        with gr.Column(scale=2):
            hint = "Ask for a review, a note, a story…"
            ui.prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt", placeholder=hint)
            gr.Examples(examples=[[e] for e in examples], inputs=[ui.prompt])
            method = {"label": "Method", "elem_id": "method", "info": METHOD_INFO}
            ui.method = gr.Radio(list(METHODS), value=service.default_method, **method)
            controls = [
                weight_controls(n, service.objective_description(n), 1 / len(objectives))
                for n in objectives
            ]
            ui.sliders, ui.used = [s for s, _ in controls], [u for _, u in controls]
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
                view.empty_figure("Generate to add points."),
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
        ui.answers = [gr.Radio(sides, value=None, label=view.question(o)) for o in objectives]
    ui.revealed = gr.Markdown(elem_id="reveal")
    with gr.Row():
        ui.votes = gr.Markdown(view.vote_line(0, 0), elem_id="votes")
        ui.undo = gr.Button("Undo my last vote", size="sm", elem_id="undo")
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
        ui.admin_token = gr.Textbox(label="Admin token", type="password", elem_id="admin-token")
        ui.export = gr.Button("Export ratings (JSONL, admins only)", elem_id="export")
    ui.export_file = gr.File(label="Ratings export")
    ui.timer = gr.Timer(30.0)
    return ui


def build_demo(
    service: SteeringService,
    arena: Arena | None = None,
    model_concurrency: int = 1,
    queue_size: int = 32,
) -> gr.Blocks:
    arena = arena or Arena(service)
    dashboard = DashboardQueries(service)
    api = ApiEndpoints(service, arena, dashboard)
    model = {"concurrency_id": "model", "concurrency_limit": model_concurrency}
    private = {"api_visibility": "private"}

    with gr.Blocks(title="Steerable language model") as demo:
        gr.Markdown(
            "# Steer a language model\nOne slider per objective: the model's trade-off "
            "between them is chosen at inference time (a Conditional Language Policy)."
        )
        status = gr.Markdown(view.status_line(service), elem_id="status")
        status_timer = gr.Timer(2.0)
        rater = gr.BrowserState(None, storage_key=RATER_STORAGE_KEY)
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
        demo.load(arena.token_or_new, rater, rater, **private, queue=False)
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

        def new_pair(prompt, tokens, temperature, token, request: gr.Request, profile: Profile):
            return ui_new_pair(arena, prompt, tokens, temperature, token, request, profile)

        rt.new_pair.click(new_pair, pair_in, [*pair_out, *rt.answers], **model, **private)
        for choice, button in rt.buttons.items():

            def vote(request: gr.Request, profile: Profile, pair, token, *given, choice=choice):
                return ui_vote(arena, choice, pair, token, request, profile, *given)

            vote_out = [rt.revealed, rt.votes, *buttons]
            button.click(vote, [rt.pair, rater, *rt.answers], vote_out, **private)

        def undo_vote(token, profile: Profile):
            return ui_undo(arena, token, profile)

        rt.undo.click(undo_vote, [rater], [rt.revealed, rt.votes, *buttons], **private)

        dashboard_out = [db.counts, db.wins, db.strengths, db.strength_plot, db.steer, db.frontier]
        polled = {**private, "show_progress": "hidden"}
        for trigger in (db.timer.tick, demo.load):
            trigger(lambda: ui_dashboard(dashboard), None, dashboard_out, **polled)
        for trigger in (db.refresh.click, dashboard_tab_.select):
            trigger(lambda: ui_dashboard(dashboard, fresh=True), None, dashboard_out, **private)

        def export_ratings(admin_token, profile: Profile):
            return ui_export(dashboard, arena, admin_token, profile)

        db.export.click(export_ratings, [db.admin_token], db.export_file, **private)

        scorers = {"concurrency_id": "scorers", "concurrency_limit": 2}
        endpoints = {"generate": model, "sweep": model, "pair": model, "score": scorers}
        names = ("generate", "sweep", "pair", "score", "rate", "frontier", "export")
        for name in (*names, "session", "undo", "stats"):
            gr.api(endpoint(getattr(api, name)), api_name=name, **endpoints.get(name, {}))

    demo.queue(max_size=queue_size, default_concurrency_limit=4)
    return demo


if __name__ == "__main__":
    apply_app_arguments(sys.argv[1:])
service = SteeringService()
demo = build_demo(service)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    service.start_loading()
    demo.launch(server_name="0.0.0.0", server_port=int(os.environ.get("PORT", "7860")))


if __name__ == "__main__":
    main()
