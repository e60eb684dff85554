"""The ratings log: every acknowledged vote (with the two generations it judged) and every undo,
appended as JSON Lines to shards that are only ever created and appended, never rewritten, so
the log is safe on a bucket mount or in a dataset repository. The database can be rebuilt from
it (`restore`), idempotently: a record whose rating UUID is already stored (or undone) is skipped.

    journal = Journal("data/ratings-log")
    journal.append(rating_record(engine, rating_uuid))   # before the vote is acknowledged
    report = restore(engine, "data/ratings-log")          # on start, into a new or older database

Record kinds (version 1):

    {"kind": "rating", "v": 1, "rating_uuid", "choice", "objectives": {name: [choice, likert]},
     "rated_at": ISO time, "rater": {"anonymous_id", "user_name"},
     "comparison": {"a": GENERATION, "b": GENERATION}}
    {"kind": "undo", "v": 1, "rating_uuid", "undone_at": ISO time}

with GENERATION = {"prompt", "text", "method", "adapter_id", "adapter_sha256", "objectives",
"weights", "seed", "decoding", "tokens", "latency_s", "scores": {name: [raw, normalised]}}.
"""

import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from storage.engine import read_session, run_write
from storage.models import (
    Comparison,
    Generation,
    Prompt,
    Rater,
    Rating,
    RatingObjective,
    RatingUndo,
    Score,
    as_utc,
)
from storage.repository import prompt_row_id, retract_rating
from storage.validation import check_uuid

VERSION = 1
SHARD_PREFIX = "ratings-"
SHARD_SUFFIX = ".jsonl"


class Journal:
    """Appends records to a shard of its own (one per process start), each written and fsynced
    before `append` returns, so an acknowledged vote survives a kill of the process."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                name = f"{SHARD_PREFIX}{stamp}-{os.getpid()}-{secrets.token_hex(4)}{SHARD_SUFFIX}"
                self._fd = os.open(
                    self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644
                )
            try:
                written = 0
                while written < len(line):  # a write may take only part of the line
                    written += os.write(self._fd, line[written:])
                os.fsync(self._fd)
            except OSError:
                # a half-written line stays a torn line of its own: the next record starts a
                # new shard rather than being appended to it
                os.close(self._fd)
                self._fd = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclass(frozen=True)
class JournalRead:
    records: list[dict]
    torn: list[str] = field(default_factory=list)  # "shard:line" of every unreadable line


def shards(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}"))


def read_journal(directory: str | os.PathLike) -> JournalRead:
    """Every record of every shard, in shard order. A line that is not a whole JSON object (the
    torn last line a kill mid-write leaves) is skipped and named in `torn`."""
    records, torn = [], []
    for shard in shards(directory):
        for number, line in enumerate(shard.read_bytes().split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                torn.append(f"{shard.name}:{number}")
                continue
            if isinstance(record, dict) and record.get("kind") in ("rating", "undo"):
                records.append(record)
            else:
                torn.append(f"{shard.name}:{number}")
    return JournalRead(records, torn)


def _generation(generation: Generation, session: Session) -> dict:
    return {
        "prompt": session.get(Prompt, generation.prompt_id).text,
        "text": generation.text,
        "method": generation.method,
        "adapter_id": generation.adapter_id,
        "adapter_sha256": generation.adapter_sha256,
        "objectives": list(generation.objectives),
        "weights": list(generation.weights),
        "seed": generation.seed,
        "decoding": generation.decoding,
        "tokens": generation.tokens,
        "latency_s": generation.latency_s,
        "scores": {s.objective: [s.raw, s.normalised] for s in generation.scores},
    }


def rating_record(engine: Engine, rating_uuid: str | UUID) -> dict:
    """The log record of a stored rating, everything needed to store it again read back."""
    key = check_uuid(rating_uuid)
    with read_session(engine) as session:
        rating = session.scalar(select(Rating).where(Rating.uuid == key))
        if rating is None:
            raise ValueError(f"there is no rating with UUID {key}.")
        comparison = session.get(Comparison, rating.comparison_id)
        rater = session.get(Rater, rating.rater_id)
        return {
            "kind": "rating",
            "v": VERSION,
            "rating_uuid": str(key),
            "choice": rating.choice,
            "objectives": {p.objective: [p.choice, p.likert] for p in rating.objectives},
            "rated_at": as_utc(rating.created_at).isoformat(),
            "rater": {"anonymous_id": rater.anonymous_id, "user_name": rater.user_name},
            "comparison": {
                side: _generation(session.get(Generation, gid), session)
                for side, gid in (
                    ("a", comparison.generation_a_id),
                    ("b", comparison.generation_b_id),
                )
            },
        }


def undo_record(rating_uuid: str | UUID, undone_at: datetime | None = None) -> dict:
    moment = undone_at or datetime.now(UTC)
    return {
        "kind": "undo",
        "v": VERSION,
        "rating_uuid": str(check_uuid(rating_uuid)),
        "undone_at": moment.isoformat(),
    }


@dataclass(frozen=True)
class RestoreReport:
    restored: int  # ratings stored again from the log
    undone: int  # undos applied again from the log
    present: int  # records the database already held
    torn: list[str]  # unreadable lines and unstorable records, skipped

    def __str__(self) -> str:
        text = (
            f"ratings log: {self.restored} ratings restored, {self.undone} undos applied, "
            f"{self.present} already stored"
        )
        if self.torn:
            text += f"; skipped {len(self.torn)} unreadable line(s): {', '.join(self.torn)}"
        return text


def _store_generation(session: Session, g: dict) -> int:
    generation = Generation(
        prompt_id=prompt_row_id(session, g["prompt"]),
        text=g["text"],
        method=g["method"],
        adapter_id=g["adapter_id"],
        adapter_sha256=g["adapter_sha256"],
        objectives=list(g["objectives"]),
        weights=list(g["weights"]),
        seed=g["seed"],
        decoding=g["decoding"],
        tokens=g["tokens"],
        latency_s=g["latency_s"],
        scores=[Score(objective=o, raw=r, normalised=n) for o, (r, n) in g["scores"].items()],
    )
    session.add(generation)
    session.flush()
    return generation.id


def _restore_rating(session: Session, record: dict) -> bool:
    """Store one rating record with its generations and rater; False when already there."""
    key = UUID(record["rating_uuid"])
    stored = session.scalar(select(Rating.id).where(Rating.uuid == key))
    undone = session.scalar(select(RatingUndo.id).where(RatingUndo.uuid == key))
    if stored is not None or undone is not None:
        return False
    sides = record["comparison"]
    a, b = _store_generation(session, sides["a"]), _store_generation(session, sides["b"])
    comparison = Comparison(
        prompt_id=prompt_row_id(session, sides["a"]["prompt"]),
        generation_a_id=a,
        generation_b_id=b,
    )
    session.add(comparison)
    who = record["rater"]
    rater = session.scalar(select(Rater).where(Rater.anonymous_id == who["anonymous_id"]))
    if rater is None:
        rater = Rater(anonymous_id=who["anonymous_id"], user_name=who["user_name"])
        session.add(rater)
    session.flush()
    session.add(
        Rating(
            uuid=key,
            comparison_id=comparison.id,
            rater_id=rater.id,
            choice=record["choice"],
            created_at=datetime.fromisoformat(record["rated_at"]),
            objectives=[
                RatingObjective(objective=o, choice=c, likert=v)
                for o, (c, v) in record["objectives"].items()
            ],
        )
    )
    return True


def _restore_undo(session: Session, record: dict) -> bool:
    key = UUID(record["rating_uuid"])
    rating = session.scalar(select(Rating).where(Rating.uuid == key))
    if rating is None:
        return False
    retract_rating(session, rating, datetime.fromisoformat(record["undone_at"]))
    return True


def restore(engine: Engine, directory: str | os.PathLike) -> RestoreReport:
    """Store what the log holds and the database lacks, one transaction per record: the ratings
    first, then the undos (shards of several processes may hold an undo before its rating). A
    record that cannot be stored (not the shape this module writes) is skipped and reported
    with the torn lines."""
    read = read_journal(directory)
    restored = undone = present = 0
    skipped = list(read.torn)
    ratings = [r for r in read.records if r["kind"] == "rating"]
    undos = [r for r in read.records if r["kind"] == "undo"]
    for records, apply in ((ratings, _restore_rating), (undos, _restore_undo)):
        for record in records:
            try:
                done = run_write(engine, lambda s, r=record, apply=apply: apply(s, r))
            except (KeyError, TypeError, ValueError, AttributeError, SQLAlchemyError):
                skipped.append(f"a {record['kind']} record {record.get('rating_uuid', '?')!r}")
                continue
            if apply is _restore_rating:
                restored += done
            else:
                undone += done
            present += not done
    return RestoreReport(restored, undone, present, skipped)
