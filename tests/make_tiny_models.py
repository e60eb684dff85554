"""Make a tiny base model, two tiny reward models and an objectives file declaring them: what a
new user brings, at a size that trains in seconds on a CPU.

    python tests/make_tiny_models.py OUT [--architecture llama|qwen2|gemma|phi3]

writes OUT/policy (a random causal LM with SmolLM2's tokenizer), OUT/rm-helpful and
OUT/rm-harmless (one-output sequence classifiers: the first with a chat template, the second
without, so both ways a reward model reads a pair are used), OUT/objectives.toml and
OUT/prompts.jsonl. Then, for example:

    python -m steering train --base-model OUT/policy --objectives-file OUT/objectives.toml \\
        --prompts OUT/prompts.jsonl --algo rloo --steps 2 --out OUT/adapters/clp ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# run as a script, the tests directory comes first on sys.path, and its steering/ (the tests of
# the package, no __init__.py) would be imported as the package; the checkout's root goes first
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from tiny_models import ARCHITECTURES, build_tiny_causal_lm, build_tiny_reward_model  # noqa: E402

PROMPTS = [
    "Write a short review of a cafe.",
    "Give me one tip for a job interview.",
    "Describe a rainy afternoon.",
    "Say something about electric scooters.",
]
OBJECTIVES_TOML = """\
# Two reward models a user brought, side by side.
[objectives.helpful]
kind = "reward-model"
model = "rm-helpful"

[objectives.harmless]
kind = "reward-model"
model = "rm-harmless"
"""


def shipped_tokenizer():
    from transformers import AutoTokenizer

    from steering.model.policy import default_gguf_path

    gguf = default_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def make_tiny_models(out: Path, architecture: str = "llama") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = shipped_tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    vocab = len(tokenizer)
    build_tiny_causal_lm(architecture, vocab).save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")
    for index, name in enumerate(("rm-helpful", "rm-harmless")):
        build_tiny_reward_model(vocab, seed=index + 1).save_pretrained(out / name)
        if name == "rm-harmless":
            tokenizer.chat_template = None  # an encoder-style reward model reads a text pair
        tokenizer.save_pretrained(out / name)
    (out / "objectives.toml").write_text(OBJECTIVES_TOML)
    (out / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="llama")
    args = parser.parse_args()
    print(make_tiny_models(args.out, args.architecture))


if __name__ == "__main__":
    main()
