"""Prompt files: one JSON object per line with a non-empty "prompt" field."""

from __future__ import annotations

import json
from pathlib import Path

from steering.errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TRAIN_PROMPTS = ASSETS / "prompts" / "train.jsonl"
EVAL_PROMPTS = ASSETS / "prompts" / "eval.jsonl"


def read_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """The prompts of a JSONL file, in order; a malformed line is reported with its number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file {path} does not exist")
    prompts = []
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
        prompts.append(prompt)
    if not prompts:
        raise UserError(f"prompts file {path} holds no prompts")
    return prompts[:limit] if limit else prompts
