"""A fake Hugging Face Hub behind huggingface_hub's HTTP layer: the tests of the ratings log's
dataset sync and of models named by Hub id run the real client code without a network."""

import base64
import hashlib
import json
from contextlib import contextmanager

import httpx2
import huggingface_hub
from huggingface_hub import constants


class FakeHub:
    """The few Hub endpoints `snapshot_download`, `hf_hub_download` and `CommitScheduler` call,
    over one repository held in memory (a dataset, or a model given its files)."""

    def __init__(
        self, repo: str, repo_type: str = "dataset", files: dict[str, bytes] | None = None
    ):
        self.repo = repo
        self.files: dict[str, bytes] = dict(files or {})
        self.exists = files is not None
        self.commits = 0
        self.calls: list[str] = []
        # the Hub's URLs: /api/datasets/ORG/NAME and /datasets/ORG/NAME/resolve/..., while a
        # model's are /api/models/ORG/NAME and /ORG/NAME/resolve/...
        self.api = f"/api/{repo_type}s/{repo}"
        self.web = f"/datasets/{repo}" if repo_type == "dataset" else f"/{repo}"

    @property
    def sha(self) -> str:
        return hashlib.sha1(str(sorted(self.files.items())).encode()).hexdigest()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        method, path = request.method, request.url.path
        self.calls.append(f"{method} {path}")
        base = self.api
        if method == "POST" and path == "/api/repos/create":
            self.exists = True
            return httpx2.Response(200, json={"url": f"https://huggingface.co{self.web}"})
        if not self.exists or not (path.startswith(base) or path.startswith(self.web)):
            return httpx2.Response(404, headers={"x-error-code": "RepoNotFound"}, json={})
        if method == "GET" and path == f"{base}/revision/main":
            siblings = [{"rfilename": name} for name in sorted(self.files)]
            return httpx2.Response(
                200, json={"id": self.repo, "sha": self.sha, "siblings": siblings}
            )
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
            url = f"https://huggingface.co{self.web}/commit/{self.sha}"
            return httpx2.Response(200, json={"commitUrl": url, "commitOid": self.sha})
        prefix = f"{self.web}/resolve/"
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


@contextmanager
def intercepted_hub(monkeypatch, fake: FakeHub):
    """Every huggingface_hub request goes to `fake`, online, with a token."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
    try:
        yield fake
    finally:
        huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)
