"""Export: a preference data set that `datasets` reads and DPO / reward-model trainers consume."""

import csv
import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage import bradley_terry as bt
from storage.export import ARROW_SCHEMA, COLUMNS, export_preferences
from storage.queries import bradley_terry, preference_records
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
    with pytest.raises(ValueError, match="format must be one of jsonl, csv, parquet, trl, battles"):
        export_preferences(build.engine, tmp_path / "x", "xlsx")
    with pytest.raises(ValueError, match="does not exist"):
        export_preferences(build.engine, tmp_path / "missing" / "x.jsonl", "jsonl")
    assert list(tmp_path.iterdir()) == []


def test_trl_conversational_preferences(rated, tmp_path, tokenizer):
    datasets = pytest.importorskip("datasets")
    data_utils = pytest.importorskip("trl.data_utils")
    engine, _, _ = rated
    out = tmp_path / "trl.jsonl"
    # the decisive ratings only: the tie and the both-bad verdict are left out
    assert export_preferences(engine, out, "trl") == len(preference_records(engine)) == 5
    train = datasets.load_dataset("json", data_files=str(out), cache_dir=str(tmp_path / "hf"))
    example = train["train"][2]
    assert data_utils.is_conversational(example)
    assert example["prompt"] == [{"role": "user", "content": "Say something."}]
    assert example["chosen"] == [{"role": "assistant", "content": "two"}]
    assert example["rejected"] == [{"role": "assistant", "content": "one"}]
    # TRL turns it into the text its DPO trainer reads, with the model's chat template
    text = data_utils.maybe_apply_chat_template(example, tokenizer)
    assert "Say something." in text["prompt"] and text["chosen"].startswith("two")


def test_battles_hold_every_rating_and_fit_the_projects_bradley_terry(rated, tmp_path):
    datasets = pytest.importorskip("datasets")
    engine, _, _ = rated
    out = tmp_path / "battles.jsonl"
    assert export_preferences(engine, out, "battles") == 7  # ties and both-bad included
    rows = datasets.load_dataset("json", data_files=str(out), cache_dir=str(tmp_path / "hf"))
    rows = list(rows["train"])
    assert {r["winner"] for r in rows} == {"model_a", "model_b", "tie", "tie (bothbad)"}
    first = rows[0]
    assert (first["model_a"], first["model_b"], first["winner"]) == ("clp", "soups", "model_a")
    assert first["conversation_a"][0] == {"role": "user", "content": "Say something."}
    assert first["conversation_b"][1] == {"role": "assistant", "content": "two"}
    # fitted from the battles alone, the strengths are the dashboard's (between-method battles)
    between = [r for r in rows if r["model_a"] != r["model_b"]]
    methods = sorted({r["model_a"] for r in between} | {r["model_b"] for r in between})
    index = {m: i for i, m in enumerate(methods)}
    strength = bt.fit(
        np.array([index[r["model_a"]] for r in between]),
        np.array([index[r["model_b"]] for r in between]),
        np.array([{"model_a": 1.0, "model_b": 0.0}.get(r["winner"], 0.5) for r in between]),
        len(methods),
        0.01,
    )
    expected = {s.method: s.strength for s in bradley_terry(engine, n_bootstrap=10)}
    assert {m: float(strength[i]) for m, i in index.items()} == pytest.approx(expected)
