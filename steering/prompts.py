"""Prompt files: one JSON object per line with a non-empty "prompt" field and an optional
"category" (the kind of request)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from steering.errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TRAIN_PROMPTS = ASSETS / "prompts" / "train.jsonl"
EVAL_PROMPTS = ASSETS / "prompts" / "eval.jsonl"


@dataclass(frozen=True)
class PromptRecord:
    """One line of a prompt file: the prompt, and the optional "category" it is filed under (the
    kind of request; `evaluate` reports steerability per category)."""

    prompt: str
    category: str | None = None


def read_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """The prompts of a JSONL file, in order; a malformed line is reported with its number."""
    return [record.prompt for record in read_prompt_records(path, limit)]


def read_prompt_records(path: str | Path, limit: int | None = None) -> list[PromptRecord]:
    """The prompts of a JSONL file with their categories, in order; a malformed line is reported
    with its number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file {path} does not exist")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path} line {number} is not valid JSON") from None
        prompt = record.get("prompt") if isinstance(record, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f'{path} line {number} has no non-empty "prompt" field')
        category = record.get("category")
        if category is not None and (not isinstance(category, str) or not category.strip()):
            raise UserError(f'{path} line {number} has a "category" that is not a non-empty text')
        records.append(PromptRecord(prompt, category.strip() if category else None))
    if not records:
        raise UserError(f"prompts file {path} holds no prompts")
    return records[:limit] if limit else records
