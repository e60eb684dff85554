"""Export ratings as a preference data set: one row per rating, `prompt`, `chosen`, `rejected` and
the weights, scores and per-objective votes of both sides (columns: storage.records.PreferenceRecord).

    python -m storage export --format jsonl --out prefs.jsonl
    datasets.load_dataset("json", data_files="prefs.jsonl")["train"]   # DPO / reward-model ready

JSON Lines and Parquet keep lists as lists; CSV writes each list as a JSON string. Two formats
other tools read as they are:

- `trl`: TRL's conversational preference format, one JSON line per decisive rating:
  {"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [...]}
  (ties and both-bad verdicts are left out, as TRL's own arena conversion does).
- `battles`: FastChat / arena-rank battles, one JSON line per rating, ties included:
  {"model_a", "model_b", "winner": "model_a" | "model_b" | "tie" | "tie (bothbad)",
   "conversation_a", "conversation_b", "judge", "tstamp", "question_id", "turn", "anony"}.
"""

import csv
import dataclasses
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from storage.queries import battles, preference_records
from storage.records import Battle, PreferenceRecord

ARROW_SCHEMA = pa.schema(
    [
        ("rating_id", pa.int64()),
        ("rating_uuid", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("rater_id", pa.int64()),
        ("criterion", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_generation_id", pa.int64()),
        ("rejected_generation_id", pa.int64()),
        ("chosen_method", pa.string()),
        ("rejected_method", pa.string()),
        ("chosen_adapter_id", pa.string()),
        ("rejected_adapter_id", pa.string()),
        ("objectives", pa.list_(pa.string())),
        ("chosen_weights", pa.list_(pa.float64())),
        ("rejected_weights", pa.list_(pa.float64())),
        ("chosen_scores", pa.list_(pa.float64())),
        ("rejected_scores", pa.list_(pa.float64())),
        ("per_objective", pa.list_(pa.string())),
        ("likert_margin", pa.list_(pa.int64())),
    ]
)
COLUMNS = ARROW_SCHEMA.names


def _row(record: PreferenceRecord) -> dict[str, object]:
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in dataclasses.asdict(record).items()
    }


def _write_jsonl(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row | {"created_at": row["created_at"].isoformat()}) + "\n")


def _write_csv(rows: list[dict[str, object]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    name: json.dumps(value) if isinstance(value, list) else value
                    for name, value in row.items()
                }
                | {"created_at": row["created_at"].isoformat()}
            )


def _write_parquet(rows: list[dict[str, object]], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA), path)


def _write_lines(lines: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


def trl_rows(records: list[PreferenceRecord]) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": r.prompt}],
            "chosen": [{"role": "assistant", "content": r.chosen}],
            "rejected": [{"role": "assistant", "content": r.rejected}],
        }
        for r in records
    ]


def battle_rows(found: list[Battle]) -> list[dict]:
    def conversation(battle: Battle, response: str) -> list[dict]:
        return [
            {"role": "user", "content": battle.prompt},
            {"role": "assistant", "content": response},
        ]

    return [
        {
            "question_id": b.rating_uuid,
            "model_a": b.model_a,
            "model_b": b.model_b,
            "winner": b.winner,
            "judge": f"rater-{b.rater_id}",
            "conversation_a": conversation(b, b.response_a),
            "conversation_b": conversation(b, b.response_b),
            "turn": 1,
            "anony": True,
            "tstamp": b.created_at.timestamp(),
        }
        for b in found
    ]


_WRITERS = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}
FORMATS = (*_WRITERS, "trl", "battles")


def export_preferences(
    engine: Engine, out: str | os.PathLike, file_format: str, objective: str | None = None
) -> int:
    """Write the preference data set to `out` and return the number of rows.

    The file appears complete or not at all: it is written next to `out` and renamed into place.
    `objective` selects per-objective pairs instead of overall ones (see preference_records).
    """
    if file_format not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}; got {file_format!r}.")
    path = Path(out)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: the directory {path.parent} does not exist.")
    if file_format == "battles":
        rows = battle_rows(battles(engine))
    elif file_format == "trl":
        rows = trl_rows(preference_records(engine, objective))
    else:
        rows = [_row(record) for record in preference_records(engine, objective)]
    partial = path.with_name(f".{path.name}.partial")
    try:
        _WRITERS.get(file_format, _write_lines)(rows, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(rows)
