"""Export: a preference data set that `datasets` reads and DPO / reward-model trainers consume."""

import csv
import dataclasses
import json

import pyarrow.parquet as pq
import pytest

from storage.export import ARROW_SCHEMA, COLUMNS, export_preferences
from storage.queries import preference_records
from storage.records import PreferenceRecord


def test_columns_follow_the_record():
    assert COLUMNS == [f.name for f in dataclasses.fields(PreferenceRecord)]


def test_jsonl_loads_with_datasets(rated, tmp_path):
    datasets = pytest.importorskip("datasets")
    engine, _, _ = rated
    out = tmp_path / "prefs.jsonl"
    assert export_preferences(engine, out, "jsonl") == 5
    data = datasets.load_dataset("json", data_files=str(out), cache_dir=str(tmp_path / "hf"))
    train = data["train"]
    assert train.num_rows == 5
    assert {"prompt", "chosen", "rejected"} <= set(train.column_names)
    assert train[2]["chosen"] == "two" and train[2]["rejected"] == "one"
    assert train[2]["chosen_weights"] == [0.2, 0.8]
    assert train[2]["chosen_scores"] == [0.1, None]
    assert train[2]["per_objective"] == ["tie", None]
    # A DPO trainer's three columns, ready to use.
    assert train.select_columns(["prompt", "chosen", "rejected"])[0] == {
        "prompt": "Say something.",
        "chosen": "one",
        "rejected": "two",
    }


def test_per_objective_export(rated, tmp_path):
    engine, _, _ = rated
    out = tmp_path / "positivity.jsonl"
    assert export_preferences(engine, out, "jsonl", objective="positivity") == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["criterion"] for row in rows} == {"positivity"}


def test_csv_and_parquet_hold_the_same_rows(rated, tmp_path):
    engine, _, _ = rated
    expected = preference_records(engine)
    export_preferences(engine, tmp_path / "p.csv", "csv")
    export_preferences(engine, tmp_path / "p.parquet", "parquet")

    with (tmp_path / "p.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rating_uuid"] for r in rows] == [x.rating_uuid for x in expected]
    assert [json.loads(r["rejected_weights"]) for r in rows] == [
        list(x.rejected_weights) for x in expected
    ]

    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema == ARROW_SCHEMA
    assert table.column("chosen").to_pylist() == [x.chosen for x in expected]
    assert table.column("likert_margin").to_pylist() == [list(x.likert_margin) for x in expected]
    assert table.column("created_at").to_pylist() == [x.created_at for x in expected]


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
def test_an_empty_database_exports_an_empty_data_set(build, tmp_path, file_format):
    out = tmp_path / f"empty.{file_format}"
    assert export_preferences(build.engine, out, file_format) == 0
    if file_format == "parquet":
        assert pq.read_table(out).schema == ARROW_SCHEMA
    elif file_format == "csv":
        assert out.read_text().strip().split(",") == COLUMNS
    else:
        assert out.read_text() == ""


def test_export_refuses_bad_requests(build, tmp_path):
    with pytest.raises(ValueError, match="format must be one of jsonl, csv, parquet"):
        export_preferences(build.engine, tmp_path / "x", "xlsx")
    with pytest.raises(ValueError, match="does not exist"):
        export_preferences(build.engine, tmp_path / "missing" / "x.jsonl", "jsonl")
    assert list(tmp_path.iterdir()) == []
