"""Keep the ratings log in a Hugging Face dataset repository, so a Space restarted on an empty
disk gets every rating back.

    STEERING_HUB_DATASET=user/ratings  HF_TOKEN=...  HF_HUB_OFFLINE=0  python app.py

On start the log's shards are pulled from the repository (before the database is restored from
them); then `huggingface_hub.CommitScheduler` pushes the log directory every few minutes (and
once more on exit). Shards are only ever created and appended, so a pulled shard never replaces
a longer local copy of itself. Without the Hub (HF_HUB_OFFLINE=1, the default here) a configured
repository is refused with one sentence.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from steering.errors import UserError
from storage.journal import SHARD_PREFIX, SHARD_SUFFIX, shards

log = logging.getLogger(__name__)

HUB_DATASET_ENV = "STEERING_HUB_DATASET"
SYNC_MINUTES_ENV = "STEERING_HUB_SYNC_MINUTES"
PATTERN = f"{SHARD_PREFIX}*{SHARD_SUFFIX}"


class HubSync:
    """Pulls and pushes one log directory to one dataset repository."""

    def __init__(self, repo_id: str, log_dir: str | os.PathLike, every_minutes: float = 5.0):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise UserError(
                f"{HUB_DATASET_ENV}={repo_id} needs the Hugging Face Hub, but HF_HUB_OFFLINE is "
                "set; unset it (and set HF_TOKEN) or leave the ratings log on local disk."
            )
        self.repo_id = repo_id
        self.log_dir = Path(log_dir)
        self.every_minutes = every_minutes
        self.scheduler = None

    @classmethod
    def from_environment(cls, log_dir: str | os.PathLike) -> HubSync | None:
        repo_id = os.environ.get(HUB_DATASET_ENV, "").strip()
        if not repo_id:
            return None
        minutes = float(os.environ.get(SYNC_MINUTES_ENV, "5"))
        return cls(repo_id, log_dir, minutes)

    def pull(self) -> list[str]:
        """Fetch the repository's shards; return the names of those that added lines here."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import RepositoryNotFoundError

        self.log_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.log_dir, prefix=".pull-") as staging:
            try:
                snapshot_download(
                    self.repo_id, repo_type="dataset", local_dir=staging, allow_patterns=PATTERN
                )
            except RepositoryNotFoundError:
                return []  # created on the first push
            added = []
            for pulled in shards(staging):
                local = self.log_dir / pulled.name
                if not local.exists() or local.stat().st_size < pulled.stat().st_size:
                    # a longer shard holds every line of a shorter copy of itself
                    partial = local.with_name(f".{local.name}.partial")
                    shutil.copyfile(pulled, partial)
                    os.replace(partial, local)
                    added.append(pulled.name)
        log.info("pulled %d ratings log shard(s) from %s", len(added), self.repo_id)
        return added

    def start(self):
        """Push the log directory every `every_minutes` from now on (a background thread)."""
        from huggingface_hub import CommitScheduler

        self.scheduler = CommitScheduler(
            repo_id=self.repo_id,
            repo_type="dataset",
            folder_path=self.log_dir,
            every=self.every_minutes,
            allow_patterns=PATTERN,
            private=True,
        )
        return self.scheduler
