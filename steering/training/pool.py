"""Candidate pools: k sampled responses per prompt, written to JSONL as they are made.

The pool is shared by rejection-sampling finetuning (every method picks its training targets from
the same generated samples, so the baselines get the same sample budget), by calibration and by
the objective correlation study. Writing line by line makes an interrupted run resumable.
The trainer samples the base-model pool (`--pool`, `--pool-samples`, `--max-new-tokens`) the
first time a run needs it:

    python -m steering train --method clp --pool runs/pool/base.jsonl --pool-samples 4
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from steering.model.generate import Conditioning, generate


@dataclass(frozen=True)
class Candidate:
    prompt: str
    text: str
    tokens: int
    weights: tuple[float, ...] = ()
    ended: bool = True  # False when the response was cut off by the token limit


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def sentence_prefixes(candidate: Candidate) -> list[Candidate]:
    """The response cut after its 1st, 2nd, ... sentence, each a complete shorter answer.

    Sampled responses of a small model mostly run to the token limit, so a pool of them barely
    varies in length; the prefixes, scored like any candidate, give rejection sampling short
    answers to choose for weightings that value brevity, at no extra generation cost.
    """
    pieces = [p for p in _SENTENCE_END.split(candidate.text.strip()) if p.strip()]
    prefixes = []
    for n in range(1, len(pieces)):
        text = " ".join(pieces[:n])
        prefixes.append(Candidate(candidate.prompt, text, 0, candidate.weights, ended=True))
    return prefixes


def read_pool(path: str | Path) -> list[Candidate]:
    path = Path(path)
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        Candidate(
            r["prompt"], r["text"], r["tokens"], tuple(r.get("weights", ())), r.get("ended", True)
        )
        for r in rows
    ]


def sample_pool(
    model,
    tokenizer,
    prompts: list[str],
    out: str | Path,
    samples: int = 4,
    prompts_per_batch: int = 4,
    conditioning_for=None,
    max_new_tokens: int = 80,
    temperature: float = 0.9,
    top_p: float = 0.95,
    seed: int = 0,
) -> list[Candidate]:
    """Generate `samples` responses for every prompt not yet in `out` and append them.

    `conditioning_for(batch_prompts) -> (prompts_as_given_to_model, Conditioning)` chooses how
    each batch is conditioned; by default the base model.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {c.prompt for c in read_pool(out)}
    todo = [p for p in prompts if p not in done]
    with out.open("a", encoding="utf-8") as handle:
        for start in tqdm(range(0, len(todo), prompts_per_batch), desc="sampling", unit="batch"):
            batch = [p for p in todo[start : start + prompts_per_batch] for _ in range(samples)]
            if conditioning_for is None:
                model_prompts, conditioning = batch, Conditioning(None, None)
            else:
                model_prompts, conditioning = conditioning_for(batch)
            # the seed depends on the prompt's position so a resumed run samples what a fresh one would
            batch_seed = seed * 1_000_003 + prompts.index(batch[0])
            results = generate(
                model,
                tokenizer,
                model_prompts,
                conditioning,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=batch_seed,
            )
            for prompt, result in zip(batch, results, strict=True):
                ended = result.tokens < max_new_tokens
                record = {
                    "prompt": prompt,
                    "text": result.text,
                    "tokens": result.tokens,
                    "ended": ended,
                }
                if result.weights:
                    record["weights"] = list(result.weights)
                handle.write(json.dumps(record) + "\n")
            handle.flush()
    return read_pool(out)
