"""The service without a page: steer -> score -> store, sweeps, pairs, votes and the dashboard,
on the tiny random model of tests/app_fixtures.py and a real SQLite file."""

import threading

import pytest
from app_fixtures import OBJECTIVES

from steering.errors import UserError
from steering.model.generate import Decoding
from steering.model.methods import METHODS
from steering.serve.dashboard import DashboardQueries
from steering.serve.service import (
    MAX_PROMPT_CHARS,
    ScoredGeneration,
    SteeringService,
    parse_decoding,
)
from steering.weights import Weights
from storage import queries

PROMPT = "Write a kind note to a neighbour."
SHORT = Decoding(4, 0.7, seed=0)


@pytest.fixture(scope="module")
def service(tiny_env):  # noqa: F811
    return SteeringService(
        database_url=f"sqlite:///{tiny_env / 'service.db'}", sweep_batch=2, dtype="float32"
    )


def test_sliders_follow_the_adapter_objectives(service):
    assert service.objectives == OBJECTIVES


def test_prompt_is_stripped_and_cut_with_a_notice(service):
    assert service.clean_prompt("  hi  ") == ("hi", None)
    prompt, notice = service.clean_prompt("x" * (MAX_PROMPT_CHARS + 5))
    assert len(prompt) == MAX_PROMPT_CHARS
    assert "only the first" in notice
    with pytest.raises(UserError, match="Type a prompt"):
        service.clean_prompt("   ")
    assert service.optional_prompt("  ") is None and service.optional_prompt(" hi ") == "hi"


def test_decoding_options_are_checked():
    # the page and the API never stop an answer before five words (the quality floor)
    assert parse_decoding("12", "0.5", None) == Decoding(12, 0.5, 0.95, 0, min_words=5)
    with pytest.raises(UserError, match="max tokens"):
        parse_decoding(0, 0.7, 0)
    with pytest.raises(UserError, match="temperature"):
        parse_decoding(8, 9, 0)
    with pytest.raises(UserError, match="whole numbers"):
        parse_decoding("many", 0.7, 0)


def test_weights_are_parsed_once_for_the_service_objectives(service):
    assert service.weights([1, 3]) == Weights(OBJECTIVES, (0.25, 0.75))
    with pytest.raises(UserError, match="expected 2 weights"):
        service.weights([1, 2, 3])


def test_stream_stores_the_generation_with_its_weights(service):
    *texts, stored = service.stream(PROMPT, "clp", service.weights([0.8, 0.2]), SHORT)
    assert isinstance(stored, ScoredGeneration) and stored.text == texts[-1]
    assert stored.weights == pytest.approx((0.8, 0.2))
    point = [
        p
        for p in queries.frontier_points(service.engine, PROMPT)
        if p.generation_id == stored.generation_id
    ]
    assert point and point[0].weights == pytest.approx((0.8, 0.2))
    assert point[0].objectives == OBJECTIVES and set(point[0].scores) == set(OBJECTIVES)


def test_a_batch_gives_each_row_its_own_weighting(service):
    rows = Weights.rows(OBJECTIVES, [[1, 0], [0, 1], [0.5, 0.5]])
    stored = service.generate(PROMPT, "clp", rows, SHORT)
    assert [g.weights for g in stored] == [r.values for r in rows]


def test_weights_for_other_objectives_are_refused(service):
    other = Weights.parse(("humour", "brevity"), [1, 1])
    with pytest.raises(UserError, match="the weights are for humour, brevity"):
        list(service.stream(PROMPT, "clp", other, SHORT))


def test_stream_releases_the_model_lock_when_gradio_hops_threads(service):
    # gradio calls next() on a sync generator from whichever worker thread is free
    stream = service.stream(PROMPT, "clp", service.weights([0.5, 0.5]), SHORT)
    items = []
    box = []
    while True:
        worker = threading.Thread(target=lambda: box.append(next(stream, None)))
        worker.start()
        worker.join()
        if box[-1] is None:
            break
        items.append(box[-1])
    assert isinstance(items[-1], ScoredGeneration)
    lock = service.steerer("clp").base.lock
    free = []

    def check():
        free.append(lock.acquire(timeout=5))
        if free[-1]:
            lock.release()

    checker = threading.Thread(target=check)
    checker.start()
    checker.join()
    assert free == [True]


def test_sweep_covers_the_grid_in_batches(service):
    progress = list(service.sweep("Describe a rainy day.", ["soups"], 0.5, SHORT))
    # the 0.5 grid over two objectives has 3 points, in batches of 2
    assert [(done, total) for done, total, _ in progress] == [(2, 3), (3, 3)]
    weights = [g.weights for _, _, batch in progress for g in batch]
    assert weights == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]


def test_sweep_refuses_too_many_generations(service):
    with pytest.raises(UserError, match="limit"):
        list(service.sweep(PROMPT, list(METHODS) * 10, 0.2, SHORT))
    with pytest.raises(UserError, match="grid step must be one of"):
        list(service.sweep(PROMPT, ["clp"], 0.3, SHORT))


def test_dashboard_is_cached_until_asked_fresh(service):
    dashboard = DashboardQueries(service, ttl_s=3600)
    before = dashboard.get()
    service.generate(PROMPT, "base", [service.weights([1, 1])], SHORT)
    assert dashboard.get() is before  # within the time to live: the cached one
    after = dashboard.get(fresh=True)
    assert after.generations == before.generations + 1
    assert [o for o, _ in after.steerability] == list(OBJECTIVES)
    assert after.points and not any(p.text for p in after.points)  # no one's text, in public


def test_scorers_follow_the_adapter_checked_against_an_objectives_file(tiny_env, tmp_path):
    same = tmp_path / "same.toml"
    same.write_text(
        '[objectives.positivity]\nkind = "builtin"\n[objectives.conciseness]\nkind = "builtin"\n'
    )
    service = SteeringService(
        database_url=f"sqlite:///{tmp_path / 's.db'}", objectives_file=str(same)
    )
    assert service.scorers.names == OBJECTIVES
    ((raw, _),) = service.score_texts(PROMPT, ["Lovely!"])
    assert raw["conciseness"] > 0.9 and raw["positivity"] > 0.5
    assert "VADER" in service.objective_description("positivity")
    other = tmp_path / "other.toml"
    other.write_text(
        same.read_text().replace(
            'conciseness]\nkind = "builtin"',
            'conciseness]\nkind = "python"\nfunction = "json:dumps"',
        )
    )
    refused = SteeringService(
        database_url=f"sqlite:///{tmp_path / 's.db'}", objectives_file=str(other)
    )
    with pytest.raises(
        UserError,
        match=r"trained with objective 'conciseness' as .*builtin.*, but .*other.toml declares .*python",
    ):
        refused.scorers  # noqa: B018
    assert refused.objective_description("positivity") == ""  # the status line says why
