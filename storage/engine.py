"""Engines for SQLite (default) and PostgreSQL, write transactions with retry, schema upgrades.

    engine = make_engine()      # DATABASE_URL, else sqlite:///data/steering.db
    upgrade()                   # the app calls this once on start

SQLite is opened in WAL mode with `synchronous=FULL` (a committed rating survives a power cut, not
only a crashed process), foreign keys on and a busy timeout. Every transaction starts with
`BEGIN IMMEDIATE` unless it asks for `DEFERRED` (reads do): a writer takes the write lock before it
reads, so two writers can never deadlock upgrading read locks, and "database is locked" can only
happen before anything was written, which makes retrying safe.
"""

import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session

DEFAULT_URL = "sqlite:///data/steering.db"
BUSY_TIMEOUT_MS = 5_000
WRITE_ATTEMPTS = 8
# A unique-constraint race (two writers creating the same prompt or rater, or resubmitting the same
# rating at once) is settled by re-running the transaction once: the rerun sees the winner's row.
INTEGRITY_ATTEMPTS = 2
# PostgreSQL serialization failure and deadlock: the transaction was rolled back and may be rerun.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}

T = TypeVar("T")


def database_url(url: str | None = None) -> str:
    """`url` if given, else the DATABASE_URL environment variable, else the SQLite default."""
    return url or os.environ.get("DATABASE_URL") or DEFAULT_URL


def parse_url(url: str | None = None) -> URL:
    """The resolved URL, checked to be a SQLite file or PostgreSQL through psycopg 3."""
    text = database_url(url)
    try:
        parsed = make_url(text)
    except ArgumentError:
        raise ValueError(
            f"{text!r} is not a database URL; use sqlite:///PATH or postgresql://..."
        ) from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite":
        if driver != "pysqlite":
            raise ValueError(f"SQLite URLs use the standard sqlite3 driver, not {driver!r}.")
        if parsed.database in (None, "", ":memory:"):
            raise ValueError(
                "an in-memory SQLite database would be lost on exit; give a file path."
            )
        return parsed
    if backend == "postgresql":
        if "+" not in parsed.drivername:
            return parsed.set(drivername="postgresql+psycopg")
        if driver != "psycopg":
            raise ValueError(
                f"PostgreSQL URLs use psycopg 3 (postgresql+psycopg://), not {driver!r}."
            )
        return parsed
    raise ValueError(f"unsupported database {backend!r}; use sqlite:///PATH or postgresql://...")


# SQLite's WAL index lives in shared memory and its locks are POSIX locks: neither is reliable on a
# network or FUSE filesystem (an object-store bucket mounted as a volume is FUSE).
SHARED_FILESYSTEMS = ("fuse", "nfs", "cifs", "smb", "9p", "ceph", "glusterfs", "lustre", "afs")
MOUNTINFO = Path("/proc/self/mountinfo")


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem holding `path` (the longest mount point above it), from
    /proc/self/mountinfo; None where that cannot be read."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    target, best, kind = path.resolve(), -1, None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount = Path(fields[4].replace("\\040", " "))
        if (target == mount or mount in target.parents) and len(mount.parts) > best:
            best, kind = len(mount.parts), line.split(" - ", 1)[1].split()[0]
    return kind


def check_local_filesystem(path: Path, mountinfo: str | None = None) -> None:
    """Refuse, with the reason, to keep a SQLite database on a network or FUSE filesystem."""
    kind = filesystem_type(path, mountinfo)
    if kind and kind.startswith(SHARED_FILESYSTEMS):
        raise ValueError(
            f"{path} is on a {kind} filesystem, where SQLite's WAL and locks are not safe; keep "
            "the database on local disk and put the ratings log (STEERING_LOG_DIR) on the mount."
        )


def make_engine(url: str | None = None) -> Engine:
    """An Engine for `url` (see `database_url`); creates the SQLite file's directory if needed,
    and refuses one on a network or FUSE filesystem."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, pool_size=8, max_overflow=16, pool_pre_ping=True)
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    check_local_filesystem(Path(parsed.database).parent)
    engine = create_engine(
        parsed,
        pool_size=8,
        max_overflow=16,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Stop the sqlite3 module from issuing its own (deferred) BEGIN; _sqlite_begin issues ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    _enter_wal(cursor)
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _enter_wal(cursor) -> None:
    # Switching a rollback-journal file to WAL needs its exclusive lock, and SQLite answers "database
    # is locked" at once instead of calling the busy handler: a second process opening a new file
    # while the first converts or migrates it must wait here, as long as the busy timeout allows.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "database is locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(connection) -> None:
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def read_session(engine: Engine) -> Session:
    """A Session whose SQLite transactions are DEFERRED, so readers never wait for the write lock."""
    return Session(engine.execution_options(sqlite_begin="DEFERRED"))


def _retryable(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return False
    message = str(exc.orig).lower()
    if "database is locked" in message or "database table is locked" in message:
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def run_write(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction and commit; all of it is stored, or none of it.

    Lock timeouts and serialization failures rerun the whole transaction with jittered backoff, a
    unique-constraint clash reruns it once (INTEGRITY_ATTEMPTS); `work` must therefore decide
    everything from what it reads inside the transaction.
    """
    lock_failures = integrity_failures = 0
    while True:
        try:
            with Session(engine) as session, session.begin():
                return work(session)
        except IntegrityError:
            integrity_failures += 1
            if integrity_failures >= INTEGRITY_ATTEMPTS:
                raise
        except DBAPIError as exc:
            lock_failures += 1
            if not _retryable(exc) or lock_failures >= WRITE_ATTEMPTS:
                raise
            time.sleep(random.uniform(0.5, 1.0) * 0.02 * 2**lock_failures)


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration for the migrations shipped inside this package."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["url"] = database_url(url)
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the schema at `url` up to `revision`; safe to call from several processes at once."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "storage/migrations/versions holds no revision"
    return head


def check_current(engine: Engine) -> None:
    """Raise ValueError unless the database at `engine` is at the head revision."""
    with engine.execution_options(sqlite_begin="DEFERRED").connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise ValueError(
            f"the database at {where} is at revision {current or 'none (empty)'}, not {head}; "
            "run `python -m storage upgrade` first."
        )
