"""Consistent copies of a live SQLite database (restore: docs/storage.md, "Backup and restore").

    python -m storage backup backups/steering-2025-11-21.db

SQLite's online backup API copies the database as of one read transaction: writers keep
committing meanwhile (WAL mode lets them), and the copy holds exactly the ratings committed before
it started. The copy is checked with `PRAGMA integrity_check`, made a self-contained file (rollback
journal, no -wal file), fsynced and only then renamed to its final name.
"""

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from storage.engine import BUSY_TIMEOUT_MS, parse_url


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    ratings: int
    bytes: int


def backup(url: str | None, out: str | os.PathLike) -> BackupSummary:
    """Copy the SQLite database at `url` (see storage.engine.database_url) to `out`."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise ValueError(
            "backup copies SQLite databases; back up PostgreSQL with "
            "`pg_dump --format=custom --file FILE URL` and restore with `pg_restore`."
        )
    source = Path(parsed.database)
    target = Path(out)
    if not source.is_file():
        raise ValueError(f"there is no database at {source}.")
    if not target.parent.is_dir():
        raise ValueError(f"cannot write {target}: the directory {target.parent} does not exist.")
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError("the backup must not overwrite the database it copies.")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        ratings = _copy(source, partial)
        with partial.open("rb") as copy:
            os.fsync(copy.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return BackupSummary(path=target, ratings=ratings, bytes=target.stat().st_size)


def _copy(source: Path, target: Path) -> int:
    """Copy, check and detach the copy from WAL; return how many ratings it holds."""
    try:
        with (
            closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000)) as src,
            closing(sqlite3.connect(target)) as dst,
        ):
            # pages=-1: one step, so one read snapshot; stepwise copies restart on every commit.
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode = DELETE")
            check = dst.execute("PRAGMA integrity_check").fetchall()
            if check != [("ok",)]:
                raise RuntimeError(f"the copy failed its integrity check: {check[:3]}")
            return dst.execute("SELECT count(*) FROM ratings").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{source} is not a readable steering database: {exc}.") from None
