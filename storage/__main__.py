"""Command line for the storage layer.

    python -m storage upgrade [--db URL]
    python -m storage export --format jsonl|csv|parquet|trl|battles --out FILE [--objective NAME] [--db URL]
    python -m storage backup FILE [--db URL]
    python -m storage bench [--json] [--threads 16] [--ratings 200] [--postgres-url URL]

--db defaults to $DATABASE_URL, else sqlite:///data/steering.db. A mistake the user can fix is
reported as one line on stderr with exit status 2.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from storage import bench
from storage.backup import backup
from storage.engine import (
    check_current,
    database_url,
    head_revision,
    make_engine,
    parse_url,
    upgrade,
)
from storage.export import FORMATS, export_preferences


def _existing_engine(url: str | None) -> Engine:
    """An engine on a database that already exists: opening a mistyped SQLite path must not
    silently create an empty database there."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database).is_file():
        raise ValueError(f"there is no database at {parsed.database}.")
    return make_engine(url)


def _upgrade(args: argparse.Namespace) -> int:
    upgrade(args.db)
    shown = parse_url(args.db).render_as_string(hide_password=True)
    print(f"{shown} is at revision {head_revision()} (head).")
    return 0


def _export(args: argparse.Namespace) -> int:
    engine = _existing_engine(args.db)
    try:
        check_current(engine)
        rows = export_preferences(engine, args.out, args.format, args.objective)
    finally:
        engine.dispose()
    print(f"wrote {rows} preference pairs to {args.out}.")
    return 0


def _backup(args: argparse.Namespace) -> int:
    summary = backup(args.db, args.file)
    print(f"backed up {summary.ratings} ratings ({summary.bytes} bytes) to {summary.path}.")
    return 0


def _bench_json(result: bench.BenchResult | str) -> dict[str, object]:
    return {"skipped": result} if isinstance(result, str) else dataclasses.asdict(result)


def _bench(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.ratings < 1:
        raise ValueError("--threads and --ratings must be at least 1.")
    results = {
        "sqlite": bench.run_sqlite(args.threads, args.ratings),
        "sqlite+log": bench.run_sqlite(args.threads, args.ratings, logged=True),
        "postgresql": bench.run_postgresql(args.threads, args.ratings, args.postgres_url),
        "postgresql+log": bench.run_postgresql(
            args.threads, args.ratings, args.postgres_url, logged=True
        ),
    }
    if args.json:
        print(json.dumps({name: _bench_json(r) for name, r in results.items()}))
    else:
        print(
            f"{args.threads} threads x {args.ratings} ratings at once; every "
            f"{bench.RESUBMIT_EVERY}th rating resubmitted with the same UUID"
        )
        row = "{:<16}{:>8}{:>10}{:>8}{:>12}{:>11}"
        print(row.format("backend", "stored", "expected", "errors", "duplicates", "ratings/s"))
        for name, r in results.items():
            if isinstance(r, str):
                print(f"{name:<16}skipped: {r}")
            else:
                print(
                    row.format(name, r.stored, r.expected, r.errors, r.duplicates, f"{r.per_s:.0f}")
                )
    passed = all(
        isinstance(r, str) or (r.stored == r.expected and r.errors == 0 and r.duplicates == 0)
        for r in results.values()
    )
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    db_help = f"database URL (default: $DATABASE_URL, else {database_url(None)!r} here)"

    command = commands.add_parser("upgrade", help="bring the schema to the newest revision")
    command.add_argument("--db", help=db_help)
    command.set_defaults(run=_upgrade)

    command = commands.add_parser("export", help="write ratings as a preference data set")
    command.add_argument("--format", required=True, choices=FORMATS)
    command.add_argument("--out", required=True, help="file to write")
    command.add_argument(
        "--objective", help="pair by the per-objective vote on this objective, not the overall vote"
    )
    command.add_argument("--db", help=db_help)
    command.set_defaults(run=_export)

    command = commands.add_parser("backup", help="consistent copy of a live SQLite database")
    command.add_argument("file", help="where to write the copy")
    command.add_argument("--db", help=db_help)
    command.set_defaults(run=_backup)

    command = commands.add_parser(
        "bench", help="concurrent-rating benchmark, SQLite and PostgreSQL"
    )
    command.add_argument("--json", action="store_true", help="print one JSON object")
    command.add_argument("--threads", type=int, default=16, help="raters voting at once")
    command.add_argument("--ratings", type=int, default=200, help="ratings per thread")
    command.add_argument(
        "--postgres-url", help="server to create a scratch database on (default: throwaway cluster)"
    )
    command.set_defaults(run=_bench)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as exc:
        message = str(exc)
    except OperationalError as exc:
        message = f"cannot use the database: {exc.orig}"
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
