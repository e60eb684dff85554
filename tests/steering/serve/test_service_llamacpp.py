"""The service on the shipped model with llama.cpp installed: single responses stream from llama.cpp,
batches of weightings run on torch, and every stored generation records its backend."""

import pytest
from sqlalchemy.orm import Session

from steering.model.generate import Decoding
from steering.serve.service import SteeringService
from storage.models import Generation

PROMPT = "Write a kind note to a neighbour."


@pytest.mark.slow
def test_streams_on_llamacpp_sweeps_on_torch_and_stores_the_backend(tmp_path, monkeypatch):
    for name in ("STEERING_BASE_MODEL", "STEERING_ADAPTERS", "STEERING_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    service = SteeringService(database_url=f"sqlite:///{tmp_path / 'app.db'}", sweep_batch=3)
    decoding = Decoding(8, 0.0, seed=0, min_words=5)

    *texts, streamed = service.stream(PROMPT, "clp", service.weights([0.5, 0.3, 0.2]), decoding)
    assert texts and streamed.text == texts[-1] and streamed.tokens >= 1
    assert service.serving_backend() == "llamacpp"

    done, total, batch = next(service.sweep(PROMPT, ["clp"], 0.5, decoding))
    assert (done, total) == (3, 6) and len(batch) == 3
    assert len({g.weights for g in batch}) == 3  # one batch, a different weighting per row

    with Session(service.engine) as session:
        stored = {g.id: g.decoding for g in session.query(Generation).all()}
    backend = {i: d["backend"] for i, d in stored.items()}
    assert backend[streamed.generation_id] == "llamacpp"
    assert {d["min_words"] for d in stored.values()} == {5}  # how each answer was decoded
    assert {backend[g.generation_id] for g in batch} == {"torch"}
