"""Throwaway PostgreSQL clusters and scratch databases, for the storage tests and the benchmark.

    with throwaway_cluster() as server_url, scratch_database(server_url) as url:
        ...

A cluster lives in a temporary directory, listens on 127.0.0.1 only, trusts local connections and
is deleted on exit. initdb refuses to run as root, so as root it runs as the `postgres` user.
Nothing here is used by the app: a deployment brings its own server and DATABASE_URL.
"""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine

from storage.engine import parse_url


def postgres_bin_dir() -> Path | None:
    """Directory of initdb/pg_ctl: the newest Debian install, else whatever is on PATH."""
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if debian:
        return Path(debian[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def throwaway_cluster(durable: bool = True) -> Iterator[str]:
    """Start a cluster and yield the URL of its `postgres` database as superuser `postgres`.

    durable=False turns fsync off: fine for tests, which never crash the server itself.
    """
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb under /usr/lib/postgresql).")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="steering-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    options = ["-c listen_addresses=127.0.0.1", f"-k {root}"]
    if not durable:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, text=True)

    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        run(*initdb, "-E", "UTF8", "--no-sync")
        pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
        for _ in range(3):  # the probed port may be taken again before the server binds it
            port = _free_port()
            try:
                server_options = " ".join([*options, f"-p {port}"])
                run(*pg_ctl, "-l", str(log), "-w", "-t", "30", "-o", server_options, "start")
                break
            except subprocess.CalledProcessError:
                continue
        else:
            raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(*pg_ctl, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str) -> str:
    """Create a new, uniquely named, empty database on the server and return its URL."""
    name = f"steering_{uuid.uuid4().hex[:12]}"
    admin = create_engine(parse_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
    finally:
        admin.dispose()
    return parse_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    parsed = parse_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {parsed.database} WITH (FORCE)")
    finally:
        admin.dispose()


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh empty database on the server, dropped on exit."""
    url = create_database(server_url)
    try:
        yield url
    finally:
        drop_database(url)
