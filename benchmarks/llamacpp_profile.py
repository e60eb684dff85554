"""Where the steered llama.cpp path spends its time, per decoded token (a script, never a test).

    python benchmarks/llamacpp_profile.py [--json] [--tokens 64] [--rounds 3]

One-token `llama_decode` calls on the shipped base GGUF, timed (median over rounds, after a
warm-up) with no adapter, with one adapter of the shipped rank (what a corner weighting runs),
and with the three objectives' adapters merged into one of rank 3r (what any inner weighting
runs); each at 1 and at 2 threads. If the adapters cost their share of the FLOPs (about 1% of a
token's here), the steered rows would match the base row; a fixed cost per adapted matmul shows
as the same extra time whatever the rank.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from steering.model.methods import adapter_dir_for
from steering.model.policy import resolve_base_model_path
from steering.serve.gguf_export import export_gguf_adapters
from steering.serve.llamacpp_runtime import LlamaCppRuntime, Mix


def per_token_ms(runtime: LlamaCppRuntime, adapters, tokens: int, rounds: int) -> float:
    """Median milliseconds per one-token decode under `adapters`, after a 16-token prompt."""

    def job():
        runtime.set_adapters(adapters)
        times = []
        for _ in range(rounds):
            runtime.clear()
            runtime.decode(list(range(100, 116)))
            start = time.perf_counter()
            for step in range(tokens):
                runtime.decode([200 + step])
            times.append((time.perf_counter() - start) / tokens * 1000)
        return statistics.median(times)

    return runtime.submit(job).result()


def profile(tokens: int, rounds: int) -> dict:
    base = resolve_base_model_path().resolve()
    paths = export_gguf_adapters(adapter_dir_for("clp"), base)
    result = {}
    for threads in (1, 2):
        runtime = LlamaCppRuntime(base, threads, 512)
        handles = tuple(runtime.load_adapter(p) for p in paths)
        third = 1 / len(handles)
        merged = runtime.submit(
            runtime.adapters_for, Mix(handles, tuple(paths), (third,) * len(handles))
        ).result()
        runs = {
            "base": [],  # no adapter on the context
            "one_adapter": [(handles[0], 1.0)],
            "merged_adapter": merged,
        }
        for adapters in runs.values():
            per_token_ms(runtime, adapters, 4, 1)  # warm-up: graph building, allocations
        for name, adapters in runs.items():
            result[f"{name}_{threads}t_ms"] = round(
                per_token_ms(runtime, adapters, tokens, rounds), 2
            )
        for name in ("one_adapter", "merged_adapter"):
            base_ms = result[f"base_{threads}t_ms"]
            result[f"{name}_{threads}t_vs_base"] = round(
                result[f"{name}_{threads}t_ms"] / base_ms, 3
            )
        result["repack"] = runtime.repack
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    result = profile(args.tokens, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
