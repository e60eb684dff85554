"""Where a model named by the user lives, and what its files hash to.

A model reference is a local path (a directory, or a file such as a `.gguf`) or a Hugging Face
Hub id (`org/name`). Local paths win; a Hub id is downloaded (or read from the local Hub cache)
through `huggingface_hub.snapshot_download`, the one place the project reaches the Hub for
models. The default is offline (`HF_HUB_OFFLINE=1`): there a Hub id that is not already in the
cache is refused in one sentence instead of a stack of HTTP errors.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import cache
from pathlib import Path

from steering.errors import UserError

# org/name as the Hub spells repository ids (optionally a bare name, as for old canonical ids)
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
# what a model snapshot needs; tokenizers, configs and weights, not the repository's extras
MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "*.tiktoken"]


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_reference(reference: str, relative_to: Path | None = None) -> Path:
    """The local path of a model: `reference` itself when it exists (relative paths first
    against `relative_to`, e.g. the file that named it), else a Hub snapshot of that id."""
    expanded = Path(reference).expanduser()
    candidates = [expanded]
    if relative_to is not None and not expanded.is_absolute():
        candidates.insert(0, relative_to / expanded)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    looks_local = reference.startswith((".", "/", "~")) or reference.count("/") > 1
    if looks_local or not HUB_ID.match(reference):
        raise UserError(f"model {reference} does not exist")
    return _hub_snapshot(reference)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = hub_offline()
    try:
        path = snapshot_download(
            repo_id, allow_patterns=MODEL_FILE_PATTERNS, local_files_only=offline
        )
    except LocalEntryNotFoundError:
        if offline:
            raise UserError(
                f"model {repo_id} is neither a local path nor in the Hub cache, and the Hub is "
                "offline (HF_HUB_OFFLINE=1); download it or unset HF_HUB_OFFLINE"
            ) from None
        raise UserError(f"model {repo_id} could not be fetched from the Hub") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"model {repo_id} could not be fetched from the Hub ({reason})") from None
    return Path(path).resolve()


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed once per version of it (path, size, modification time)."""
    stat = path.stat()
    return _file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


@cache
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(files: list[Path]) -> str:
    """One digest over named files: each file's name and content hash, in the order given."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """A file's hash, or for a directory one hash over every regular file directly in it
    (weights, config, tokenizer): a changed file changes the model's identity."""
    if path.is_file():
        return file_sha256(path)
    return files_sha256(
        sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    )
