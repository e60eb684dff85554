"""One command line for the science:

    python -m steering generate --prompt "Review a cafe" --weights 0.7,0.2,0.1 [--method clp] [--json]
    python -m steering objectives [--json]
    python -m steering train --method clp --algo rsf --out assets/adapters/clp
    python -m steering evaluate --prompts assets/prompts/eval.jsonl --methods clp,base --grid 0.25 ...
    python -m steering study --samples 4 --out docs/objectives.md
    python -m steering train-reward --db sqlite:///data/steering.db --out runs/human-reward
    python -m steering bench generate|objectives|app|backends [--json]

A mistake in the input prints one line on stderr and exits 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from steering.errors import UserError  # noqa: E402
from steering.model.policy import DTYPES  # noqa: E402


def parse_numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"{text!r} is not a list of comma-separated numbers") from None


def cmd_generate(args) -> None:
    from steering.model.generate import Decoding
    from steering.model.methods import adapter_dir_for, check_method, shipped_objectives
    from steering.model.mixing import adapter_objectives, read_metadata
    from steering.serve.backends import Backends
    from steering.weights import Weights

    # everything checkable without the model is checked before the slow load
    if not args.prompt.strip():
        raise UserError("the prompt is empty")
    decoding = Decoding(args.max_new_tokens, args.temperature, args.top_p, args.seed)
    check_method(args.method)
    directory = args.adapter or adapter_dir_for(args.method)
    objectives = adapter_objectives(read_metadata(directory)) if directory else shipped_objectives()
    weights = Weights.parse_text(objectives, args.weights) if args.weights else None
    steerer = Backends().load(args.method, args.adapter, args.base_model, args.dtype, args.backend)
    weights = weights or Weights.uniform(steerer.objectives)
    result = steerer.generate([args.prompt], weights, decoding)[0]
    if not args.json:
        print(result.text)
        return
    out = {
        "text": result.text,
        "weights": list(result.weights),
        "tokens": result.tokens,
        "seconds": round(result.seconds, 3),
        "method": args.method,
        "objectives": list(steerer.objectives),
        "backend": steerer.backend,
    }
    print(json.dumps(out))


def cmd_objectives(args) -> None:
    from steering.objectives import list_objectives_json, list_objectives_text

    print(list_objectives_json() if args.json else list_objectives_text())


def cmd_train(args) -> None:
    from dataclasses import fields

    from steering.training.config import TrainConfig
    from steering.training.trainer import train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    config = TrainConfig(**values)
    if config.sampler == "llamacpp":
        from steering.serve.llamacpp_sampler import train_on_llamacpp

        out = train_on_llamacpp(config)
    else:
        out = train(config)
    print(f"adapter written to {out}")


def cmd_evaluate(args) -> None:
    from steering.evaluation.evaluate import EvaluateConfig, evaluate

    config = EvaluateConfig(
        prompts=args.prompts,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        grid=args.grid,
        samples=args.samples,
        out=args.out,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        reference_point=tuple(parse_numbers(args.reference_point))
        if args.reference_point
        else None,
    )
    summary = evaluate(config)
    print(summary)


def cmd_study(args) -> None:
    from steering.evaluation.study import objective_study

    print(
        objective_study(
            args.pool, args.out, args.objectives.split(",") if args.objectives else None
        )
    )


def human_records(stored) -> list:
    """Stored ratings as `human` reward training records.

    A per-objective Likert answer is comparative (margin m in -2..2 toward the chosen response);
    the regression head wants a 1-5 value per response, so m becomes 3 + m/2 for the chosen and
    3 - m/2 for the rejected response: their difference is the margin, centred on the scale.
    """
    from steering.objectives import PreferenceRecord

    records = []
    for row in stored:
        margins = {
            o: m for o, m in zip(row.objectives, row.likert_margin, strict=True) if m is not None
        }
        records.append(
            PreferenceRecord(
                prompt=row.prompt,
                chosen=row.chosen,
                rejected=row.rejected,
                likert_chosen={o: 3 + m / 2 for o, m in margins.items()},
                likert_rejected={o: 3 - m / 2 for o, m in margins.items()},
            )
        )
    return records


def cmd_train_reward(args) -> None:
    # the CLI entry point reads the ratings through storage; the steering library never does
    from steering.objectives import train_human_reward
    from storage.engine import make_engine, upgrade
    from storage.queries import preference_records

    upgrade(args.db)  # as the app does on start: an empty or older database gets the schema
    report = train_human_reward(
        human_records(preference_records(make_engine(args.db))), args.out, seed=args.seed
    )
    print(json.dumps(report.to_json(), indent=2))


def cmd_bench(args) -> None:
    from steering import bench

    result = bench.run(args.what, args)
    print(json.dumps(result) if args.json else bench.format_result(args.what, result))


def build_parser() -> argparse.ArgumentParser:
    from steering.model.methods import METHODS
    from steering.training.config import TrainConfig, add_config_arguments

    parser = argparse.ArgumentParser(prog="python -m steering", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one steered response")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--weights", help="comma-separated, one per objective; normalised to sum 1")
    gen.add_argument("--method", default="clp", help=f"one of {', '.join(METHODS)}")
    gen.add_argument(
        "--adapter", help="adapter directory (default: the shipped one for the method)"
    )
    gen.add_argument(
        "--base-model", help="local model directory or .gguf (default: shipped SmolLM2)"
    )
    gen.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="torch backend only; auto: bfloat16 where the hardware has it natively, else float32",
    )
    gen.add_argument(
        "--backend",
        help="torch or llamacpp (default: STEERING_BACKEND, else llamacpp when installed; "
        "logits always runs on torch)",
    )
    gen.add_argument("--max-new-tokens", type=int, default=96)
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(func=cmd_generate)

    obj = sub.add_parser("objectives", help="list the registered objectives")
    obj.add_argument("--json", action="store_true")
    obj.set_defaults(func=cmd_objectives)

    tr = sub.add_parser("train", help="train clp or a baseline (config fields below)")
    add_config_arguments(tr, TrainConfig)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "evaluate", help="sweep methods over a weight grid; hypervolume and steerability"
    )
    ev.add_argument("--prompts", required=True)
    ev.add_argument("--methods", default=",".join(METHODS))
    ev.add_argument("--grid", type=float, default=0.25, help="simplex grid step; must divide 1")
    ev.add_argument("--samples", type=int, default=1, help="responses per prompt and weighting")
    ev.add_argument("--out", default="results.json")
    ev.add_argument("--limit", type=int, default=0, help="use only the first N prompts")
    ev.add_argument("--max-new-tokens", type=int, default=80)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--reference-point", help="comma-separated; default: fixed in steering.evaluation.evaluate"
    )
    ev.set_defaults(func=cmd_evaluate)

    st = sub.add_parser(
        "study", help="objective correlations over a base-model pool (docs/objectives.md)"
    )
    st.add_argument("--pool", default="runs/pool/base.jsonl")
    st.add_argument(
        "--objectives",
        help="comma-separated (default: every objective that needs no configuration)",
    )
    st.add_argument("--out", default="docs/objectives.md")
    st.set_defaults(func=cmd_study)

    rw = sub.add_parser(
        "train-reward", help="train the `human` reward from stored pairwise ratings"
    )
    rw.add_argument("--db", required=True, help="database URL, e.g. sqlite:///data/steering.db")
    rw.add_argument("--out", default="runs/human-reward")
    rw.add_argument("--seed", type=int, default=0)
    rw.set_defaults(func=cmd_train_reward)

    be = sub.add_parser("bench", help="benchmarks measured side by side in one run")
    be.add_argument("what", choices=["generate", "objectives", "app", "backends"])
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
