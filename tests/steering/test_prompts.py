"""Prompt files: one JSON object per line with a non-empty "prompt"."""

import pytest

from steering.errors import UserError
from steering.prompts import (
    EVAL_PROMPTS,
    TRAIN_PROMPTS,
    PromptRecord,
    read_prompt_records,
    read_prompts,
)


def test_prompts_in_order_blank_lines_skipped_and_limited(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "one"}\n\n{"prompt": "two", "id": 2}\n{"prompt": "three"}\n')
    assert read_prompts(path) == ["one", "two", "three"]
    assert read_prompts(path, limit=2) == ["one", "two"]


def test_a_prompt_may_name_its_category(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "one", "category": " poem "}\n{"prompt": "two"}\n')
    assert read_prompt_records(path) == [PromptRecord("one", "poem"), PromptRecord("two", None)]
    assert read_prompts(path) == ["one", "two"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"prompt": "ok"}\nnot json\n', "line 2 is not valid JSON"),
        ('{"prompt": "ok"}\n{"text": "no prompt"}\n', 'line 2 has no non-empty "prompt"'),
        ('{"prompt": "   "}\n', 'line 1 has no non-empty "prompt"'),
        ('["prompt"]\n', 'line 1 has no non-empty "prompt"'),
        ("\n\n", "holds no prompts"),
        ('{"prompt": "ok", "category": ""}\n', 'line 1 has a "category" that is not a non-empty'),
        ('{"prompt": "ok", "category": ["poem"]}\n', 'line 1 has a "category" that is not'),
    ],
)
def test_a_bad_file_is_one_sentence_with_the_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_prompts(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_prompts(tmp_path / "missing.jsonl")


def test_the_shipped_prompt_files_are_disjoint():
    train, held_out = read_prompts(TRAIN_PROMPTS), read_prompts(EVAL_PROMPTS)
    assert len(held_out) >= 40 and len(train) > len(held_out)
    assert not set(train) & set(held_out)
    # every shipped prompt is filed under a kind of request, for steerability per category
    for path in (TRAIN_PROMPTS, EVAL_PROMPTS):
        assert all(record.category for record in read_prompt_records(path))
