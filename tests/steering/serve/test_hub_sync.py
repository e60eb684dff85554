"""The ratings log kept in a dataset repository, with huggingface_hub's HTTP layer intercepted:
a small fake Hub answers the calls `snapshot_download` and `CommitScheduler` make, so the pull,
the push and the restore from pulled shards run for real without a network."""

import base64
import hashlib
import json

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import constants

from steering.errors import UserError
from steering.serve.hub_sync import HubSync
from storage.engine import make_engine, upgrade
from storage.journal import Journal, read_journal, restore
from storage.queries import stats

REPO = "someone/ratings"


class FakeHub:
    """The few Hub endpoints the sync uses, over one dataset repository held in memory."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.exists = False
        self.commits = 0
        self.calls: list[str] = []

    @property
    def sha(self) -> str:
        return hashlib.sha1(str(sorted(self.files.items())).encode()).hexdigest()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        method, path = request.method, request.url.path
        self.calls.append(f"{method} {path}")
        base = f"/api/datasets/{REPO}"
        if method == "POST" and path == "/api/repos/create":
            self.exists = True
            return httpx2.Response(200, json={"url": f"https://huggingface.co/datasets/{REPO}"})
        if not self.exists or not (path.startswith(base) or path.startswith(f"/datasets/{REPO}")):
            return httpx2.Response(404, headers={"x-error-code": "RepoNotFound"}, json={})
        if method == "GET" and path == f"{base}/revision/main":
            siblings = [{"rfilename": name} for name in sorted(self.files)]
            return httpx2.Response(200, json={"id": REPO, "sha": self.sha, "siblings": siblings})
        if method == "GET" and path.startswith(f"{base}/tree/"):
            entries = [
                {
                    "type": "file",
                    "path": name,
                    "size": len(data),
                    "oid": hashlib.sha1(data).hexdigest(),
                }
                for name, data in sorted(self.files.items())
            ]
            return httpx2.Response(200, json=entries)
        if method == "POST" and path == f"{base}/preupload/main":
            asked = json.loads(request.content)["files"]
            answer = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in asked
            ]
            return httpx2.Response(200, json={"files": answer})
        if method == "POST" and path == f"{base}/commit/main":
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    self.files[value["path"]] = base64.b64decode(value["content"])
            self.commits += 1
            url = f"https://huggingface.co/datasets/{REPO}/commit/{self.sha}"
            return httpx2.Response(200, json={"commitUrl": url, "commitOid": self.sha})
        prefix = f"/datasets/{REPO}/resolve/"
        if path.startswith(prefix):
            name = path.removeprefix(prefix).split("/", 1)[1]
            if name not in self.files:
                return httpx2.Response(404, headers={"x-error-code": "EntryNotFound"})
            content = self.files[name]
            headers = {
                "x-repo-commit": self.sha,
                "etag": f'"{hashlib.sha1(content).hexdigest()}"',
                "content-length": str(len(content)),
            }
            return httpx2.Response(
                200, headers=headers, content=b"" if method == "HEAD" else content
            )
        return httpx2.Response(404, json={})


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
    yield fake
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


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
