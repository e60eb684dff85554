"""The ratings log kept in a dataset repository, with huggingface_hub's HTTP layer intercepted:
a small fake Hub answers the calls `snapshot_download` and `CommitScheduler` make, so the pull,
the push and the restore from pulled shards run for real without a network."""

import pytest
from fake_hub import FakeHub, intercepted_hub
from huggingface_hub import constants

from steering.errors import UserError
from steering.serve.hub_sync import HubSync
from storage.engine import make_engine, upgrade
from storage.journal import Journal, read_journal, restore
from storage.queries import stats

REPO = "someone/ratings"


@pytest.fixture
def hub(monkeypatch):
    with intercepted_hub(monkeypatch, FakeHub(REPO, "dataset")) as fake:
        yield fake


def test_offline_a_configured_repository_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("STEERING_HUB_DATASET", REPO)
    with pytest.raises(UserError, match="needs the Hugging Face Hub, but HF_HUB_OFFLINE is set"):
        HubSync.from_environment(tmp_path)
    monkeypatch.delenv("STEERING_HUB_DATASET")
    assert HubSync.from_environment(tmp_path) is None


def test_push_then_pull_into_an_empty_disk_restores_every_rating(hub, tmp_path, logged_votes):
    log_dir, expected = logged_votes
    assert HubSync(REPO, tmp_path / "empty").pull() == []  # no repository yet: nothing to pull
    scheduler = HubSync(REPO, log_dir, every_minutes=60).start()
    try:
        scheduler.trigger().result()  # what the scheduler does every hour, now
    finally:
        scheduler.stop()
    assert hub.exists and hub.commits == 1
    assert sorted(hub.files) == sorted(p.name for p in log_dir.glob("ratings-*.jsonl"))
    # a new disk: pull, then restore into a new database
    restarted = tmp_path / "restarted"
    pulled = HubSync(REPO, restarted).pull()
    assert pulled == sorted(hub.files)
    url = f"sqlite:///{tmp_path / 'new.db'}"
    upgrade(url)
    engine = make_engine(url)
    assert restore(engine, restarted).restored == expected["ratings"]
    assert stats(engine) == expected
    engine.dispose()


def test_a_pulled_shard_never_replaces_a_longer_local_one(hub, tmp_path):
    journal = Journal(tmp_path / "log")
    journal.append({"kind": "undo", "n": 1})
    scheduler = HubSync(REPO, tmp_path / "log", every_minutes=60).start()
    try:
        scheduler.trigger().result()
    finally:
        scheduler.stop()
    journal.append({"kind": "undo", "n": 2})  # appended after the push
    assert HubSync(REPO, tmp_path / "log").pull() == []
    assert [r["n"] for r in read_journal(tmp_path / "log").records] == [1, 2]
