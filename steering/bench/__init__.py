"""Benchmarks, measured side by side in one run on this machine (never asserted in tests).

python -m steering bench generate [--json]     # base vs mixed vs merged; batched vs sequential sweep
python -m steering bench objectives [--json]   # scoring cost vs generating the same 256 responses
python -m steering bench backends [--json]     # llama.cpp vs torch (steering/bench/backends.py)
python -m steering bench app [--json]          # through gradio_client (benchmarks/app.py)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from steering.model.generate import Conditioning, generate
from steering.model.mixing import AdapterSpec, attach, bank_parameters, merged_copy
from steering.model.policy import load_base
from steering.objectives import DEFAULT_OBJECTIVES, score
from steering.prompts import EVAL_PROMPTS, TRAIN_PROMPTS, read_prompts

PROMPT = "Write a short review of a small Italian restaurant you visited last week."


def _tokens_per_second(model, tokenizer, conditioning, seed=0, max_new_tokens=64) -> float:
    start = time.perf_counter()
    out = generate(
        model,
        tokenizer,
        [PROMPT],
        conditioning,
        max_new_tokens=max_new_tokens,
        temperature=0.7,
        seed=seed,
    )
    return out[0].tokens / (time.perf_counter() - start)


def _adapter_row_us(dtype: torch.dtype, hidden: int, rank: int, calls: int = 2000) -> float:
    """Microseconds of one decoding step's adapter matmuls (A then B, one row) in `dtype`."""
    x = torch.randn(1, 1, hidden, dtype=dtype)
    a = torch.randn(rank, hidden, dtype=dtype)
    b = torch.randn(hidden, rank, dtype=dtype)
    with torch.no_grad():
        for _ in range(100):
            torch.nn.functional.linear(torch.nn.functional.linear(x, a), b)
        start = time.perf_counter()
        for _ in range(calls):
            torch.nn.functional.linear(torch.nn.functional.linear(x, a), b)
    return (time.perf_counter() - start) / calls * 1e6


def bench_generate(rounds: int = 5) -> dict:
    """Tokens/s of the base model, the unmerged mixed model and the merged copy at one w
    (64 new tokens, one stream, median of `rounds` interleaved rounds); an 11-point sweep as one
    batch vs 11 sequential calls."""
    base = load_base()
    model, tok = base.model, base.tokenizer
    spec = AdapterSpec(tuple(DEFAULT_OBJECTIVES))
    attach(model, "bench", spec)
    with torch.no_grad():
        for p in bank_parameters(model, "bench"):
            p.normal_(0, 0.02)  # non-zero B: the cost is the same as a trained bank's
    w = torch.tensor([[0.5, 0.3, 0.2]])
    merged = merged_copy(model, "bench", w[0])
    runs = {
        "base": (model, Conditioning(None, None)),
        "mixed": (model, Conditioning("bench", w)),
        "merged": (merged, Conditioning(None, None)),
    }
    for run_model, conditioning in runs.values():  # warm-up
        _tokens_per_second(run_model, tok, conditioning, max_new_tokens=8)
    # the three take turns within each round, so load from other processes hits them alike;
    # the median round of each is reported
    rates = {name: [] for name in runs}
    for seed in range(rounds):
        for name, (run_model, conditioning) in runs.items():
            rates[name].append(_tokens_per_second(run_model, tok, conditioning, seed=seed))
    base_rate, mixed_rate, merged_rate = (statistics.median(rates[n]) for n in runs)
    del merged, runs
    sweep = torch.tensor(
        [[t, (1 - t) / 2, (1 - t) / 2] for t in np.linspace(0, 1, 11)], dtype=torch.float32
    )
    start = time.perf_counter()
    generate(
        model, tok, [PROMPT] * 11, Conditioning("bench", sweep), max_new_tokens=32, temperature=0
    )
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for row in sweep:
        generate(
            model, tok, [PROMPT], Conditioning("bench", row[None]), max_new_tokens=32, temperature=0
        )
    sequential = time.perf_counter() - start
    return {
        "base_tok_s": round(base_rate, 2),
        "mixed_tok_s": round(mixed_rate, 2),
        "merged_tok_s": round(merged_rate, 2),
        "mixed_cost_per_token_vs_base": round(base_rate / mixed_rate, 3),
        "sweep_batched_s": round(batched, 2),
        "sweep_sequential_s": round(sequential, 2),
        "sweep_speedup": round(sequential / batched, 2),
        # why the adapters compute in float32 whatever the base model's dtype: one row of
        # activations through the shipped bank's shapes (K*r = 12 units), in both dtypes
        **{
            f"adapter_row_{name}_us": round(_adapter_row_us(dtype, model.config.hidden_size, 12), 1)
            for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
        },
    }


def bench_objectives(pairs: int = 256) -> dict:
    """Generate `pairs` base-model responses, then score them with every objective."""
    from steering.evaluation.study import STUDY_OBJECTIVES

    base = load_base()
    prompts = (read_prompts(TRAIN_PROMPTS) + read_prompts(EVAL_PROMPTS))[:pairs]
    start = time.perf_counter()
    responses = []
    for i in range(0, len(prompts), 16):
        out = generate(
            base.model,
            base.tokenizer,
            prompts[i : i + 16],
            Conditioning(None, None),
            max_new_tokens=64,
        )
        responses += [g.text for g in out]
    generation_s = time.perf_counter() - start
    score(STUDY_OBJECTIVES, prompts[:4], responses[:4])  # load every scorer's model before timing
    per_objective = {}
    for name in STUDY_OBJECTIVES:
        start = time.perf_counter()
        score([name], prompts, responses)
        per_objective[name] = time.perf_counter() - start
    scoring_s = sum(per_objective[n] for n in DEFAULT_OBJECTIVES)
    return {
        "pairs": len(prompts),
        "pairs_per_s": {n: round(len(prompts) / s, 1) for n, s in per_objective.items()},
        "default_objectives": list(DEFAULT_OBJECTIVES),
        "scoring_s": round(scoring_s, 2),
        "generation_s": round(generation_s, 2),
        "scoring_share_of_generation": round(scoring_s / generation_s, 4),
    }


def bench_app() -> dict:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "app.py"
    out = subprocess.run(
        [sys.executable, str(script), "--json"], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_backends() -> dict:
    from steering.bench.backends import bench_backends as run

    return run()


BENCHES = {
    "generate": bench_generate,
    "objectives": bench_objectives,
    "app": bench_app,
    "backends": bench_backends,
}


def run(what: str, args=None) -> dict:
    return BENCHES[what]()


def format_result(what: str, result: dict) -> str:
    width = max(len(k) for k in result)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in result.items())
