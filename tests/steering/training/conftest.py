import json

import pytest
from tiny_training import PROMPTS

from steering.model.policy import BaseModel, BaseModelIdentity


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture
def fresh_base(make_tiny, tokenizer):
    """Build a new tiny base model on every call (a trainer attaches its adapters in place)."""
    return lambda: BaseModel(make_tiny(), tokenizer, BaseModelIdentity("tiny-llama", "0" * 64))
