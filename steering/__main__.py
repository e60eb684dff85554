"""One command line for the science:

    python -m steering generate --prompt "Review a cafe" --weights 0.7,0.2,0.1 [--method clp] [--json]
    python -m steering objectives [--json] [--objectives-file my-objectives.toml]
    python -m steering train --method clp --algo rsf --out assets/adapters/clp
    python -m steering evaluate --prompts assets/prompts/eval.jsonl --methods clp,base --grid 0.25 ...
    python -m steering study --pool runs/pool/base.jsonl --out docs/objective-study.md
    python -m steering train-reward --db sqlite:///data/steering.db --out runs/human-reward
    python -m steering merge runs/s0/clp runs/s1/clp --init assets/adapters/clp --out runs/merged/clp
    python -m steering export --weights 0.5,0.3,0.2 --format peft --adapter DIR --out DIR
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


def use_adapters(directory: str | None) -> None:
    """`--adapters DIR`: the directory holding clp/, prompt/ and soups/, as STEERING_ADAPTERS."""
    from steering.model.methods import ADAPTERS_ENV

    if directory:
        os.environ[ADAPTERS_ENV] = directory


def cmd_generate(args) -> None:
    from steering.model.generate import Decoding
    from steering.model.methods import (
        adapter_dir_for,
        check_method,
        shipped_metadata,
        shipped_objectives,
    )
    from steering.model.mixing import adapter_objectives, read_metadata
    from steering.objectives.declared import configured_objectives_file, resolve_objectives
    from steering.serve.backends import Backends
    from steering.weights import Weights

    # everything checkable without the model is checked before the slow load
    if not args.prompt.strip():
        raise UserError("the prompt is empty")
    use_adapters(args.adapters)
    decoding = Decoding(
        args.max_new_tokens, args.temperature, args.top_p, args.seed, args.min_words
    )
    check_method(args.method)
    directory = args.adapter or adapter_dir_for(args.method)
    metadata = read_metadata(directory) if directory else shipped_metadata()
    objectives = adapter_objectives(metadata) if metadata else shipped_objectives()
    weights = Weights.parse_text(objectives, args.weights) if args.weights else None
    file = configured_objectives_file(args.objectives_file)
    # with declared objectives the answer is scored too, by the scorers the adapter knows
    scorers = (
        resolve_objectives(file, metadata.training if metadata else None, objectives)
        if file
        else None
    )
    steerer = Backends().load(args.method, args.adapter, args.base_model, args.dtype, args.backend)
    weights = weights or Weights.uniform(steerer.objectives)
    result = steerer.generate([args.prompt], weights, decoding)[0]
    scores = (
        {n: float(v[0]) for n, v in scorers.score([args.prompt], [result.text]).items()}
        if scorers
        else None
    )
    if not args.json:
        print(result.text)
        if scores:
            print("  ".join(f"{n}={v:.3f}" for n, v in scores.items()), file=sys.stderr)
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
    if scores is not None:
        out["scores"] = scores
    print(json.dumps(out))


def cmd_objectives(args) -> None:
    from steering.objectives import list_objectives_json, list_objectives_text
    from steering.objectives.declared import configured_objectives_file, read_objectives_file

    file = configured_objectives_file(args.objectives_file)
    if not file:
        print(list_objectives_json() if args.json else list_objectives_text())
        return
    declared = read_objectives_file(file)  # built, so every problem surfaces now
    if args.json:
        rows = [
            {**spec.to_json(), "description": o.description}
            for spec, o in zip(declared.specs, declared.objectives, strict=True)
        ]
        print(json.dumps(rows, indent=2))
        return
    width = max(len(n) for n in declared.names)
    for spec, objective in zip(declared.specs, declared.objectives, strict=True):
        source = spec.model or spec.function or spec.objective or spec.name
        print(f"{spec.name:<{width}}  {spec.kind:<12}  {source}  {objective.description}")


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


def cmd_merge(args) -> None:
    from steering.training.merge import merge_runs

    out = merge_runs(args.runs, args.out, args.init, args.scale)
    print(f"merged adapter written to {out}")


def cmd_evaluate(args) -> None:
    from steering.evaluation.evaluate import EvaluateConfig, evaluate
    from steering.objectives.declared import configured_objectives_file

    use_adapters(args.adapters)
    config = EvaluateConfig(
        prompts=args.prompts,
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        grid=args.grid,
        samples=args.samples,
        out=args.out,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        min_words=args.min_words,
        seed=args.seed,
        bootstrap=args.bootstrap,
        reference_point=tuple(parse_numbers(args.reference_point))
        if args.reference_point
        else None,
        base_model=args.base_model,
        objectives_file=configured_objectives_file(args.objectives_file),
        score_with=args.score_with,
        calibration=args.calibration,
    )
    summary = evaluate(config)
    print(summary)


def cmd_study(args) -> None:
    from steering.evaluation.study import STUDY_OBJECTIVES, objective_study
    from steering.model.methods import shipped_metadata
    from steering.objectives.declared import configured_objectives_file, resolve_objectives

    use_adapters(args.adapters)
    if args.base_model:  # what the fluency objective reads
        os.environ["STEERING_BASE_MODEL"] = args.base_model
    names = args.objectives.split(",") if args.objectives else []
    # the file's objectives, else (with --adapters) those the clp adapter was trained with
    metadata = shipped_metadata() if args.adapters else None
    chosen = resolve_objectives(
        configured_objectives_file(args.objectives_file),
        metadata.training if metadata else None,
        metadata.training.get("objectives", ()) if metadata else names or STUDY_OBJECTIVES,
        f"the clp adapter in {args.adapters}",
    )
    if names and metadata is None:
        chosen = chosen.select(names)
    flags = {
        "--objectives": args.objectives,
        "--objectives-file": args.objectives_file,
        "--adapters": args.adapters,
        "--base-model": args.base_model,
    }
    command = f"python -m steering study --pool {args.pool} --out {args.out}" + "".join(
        f" {flag} {value}" for flag, value in flags.items() if value
    )
    print(objective_study(args.pool, args.out, chosen, command))


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


def cmd_export(args) -> None:
    import shutil
    from pathlib import Path

    from steering.model.mixing import adapter_objectives, read_metadata
    from steering.model.peft_export import export_peft
    from steering.model.policy import resolve_base_model_path
    from steering.serve.gguf_export import export_gguf_adapters
    from steering.weights import Weights

    if args.format == "peft":
        metadata = read_metadata(args.adapter)
        objectives = adapter_objectives(metadata)
        weights = Weights.parse_text(objectives, args.weights) if args.weights else None
        out = export_peft(args.adapter, weights, args.out, args.base_model)
        print(f"PEFT LoRA adapter written to {out}")
        return
    base = resolve_base_model_path(args.base_model)
    if base.suffix != ".gguf":
        raise UserError(f"the gguf format needs a .gguf base model, and {base} is not one")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in export_gguf_adapters(args.adapter, base):
        shutil.copy2(path, out / path.name)
        print(out / path.name)


def cmd_bench(args) -> None:
    from steering import bench

    result = bench.run(args.what, args)
    print(json.dumps(result) if args.json else bench.format_result(args.what, result))


BASE_MODEL_HELP = (
    "local model directory, .gguf, or a Hub id where the Hub is reachable "
    "(default: STEERING_BASE_MODEL, else the shipped SmolLM2)"
)
OBJECTIVES_FILE_HELP = "TOML file declaring the objectives (default: STEERING_OBJECTIVES_FILE)"
MIN_WORDS_HELP = (
    "no stop token before the answer has this many words (0: off; 5 is the quality floor: no "
    "answer under five words unless the token limit ends it)"
)


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
        "--adapters", help="directory holding clp/, prompt/, soups/ (default: STEERING_ADAPTERS)"
    )
    gen.add_argument("--base-model", help=BASE_MODEL_HELP)
    gen.add_argument("--objectives-file", help=OBJECTIVES_FILE_HELP + "; the answer is scored")
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
    gen.add_argument("--min-words", type=int, default=0, help=MIN_WORDS_HELP)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(func=cmd_generate)

    obj = sub.add_parser("objectives", help="list the registered (or a file's) objectives")
    obj.add_argument("--json", action="store_true")
    obj.add_argument("--objectives-file", help=OBJECTIVES_FILE_HELP)
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
    ev.add_argument("--min-words", type=int, default=0, help=MIN_WORDS_HELP)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--reference-point", help="comma-separated; default: fixed in steering.evaluation.evaluate"
    )
    ev.add_argument(
        "--adapters", help="directory holding clp/, prompt/, soups/ (default: STEERING_ADAPTERS)"
    )
    ev.add_argument("--base-model", help=BASE_MODEL_HELP)
    ev.add_argument("--objectives-file", help=OBJECTIVES_FILE_HELP)
    ev.add_argument(
        "--score-with",
        help="objectives (comma-separated names or a TOML file) to score every method's answers "
        "with, one per weight, instead of those each steers; cached answers are scored again",
    )
    ev.add_argument(
        "--calibration",
        help="adapter directory or calibration file for the z-scores (default: the clp adapter's)",
    )
    ev.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="resamples of the prompts for the 95%% intervals (seeded by --seed)",
    )
    ev.set_defaults(func=cmd_evaluate)

    st = sub.add_parser(
        "study", help="objective correlations over a base-model pool (docs/objective-study.md)"
    )
    st.add_argument("--pool", default="runs/pool/base.jsonl")
    st.add_argument(
        "--objectives",
        help="comma-separated (default: every objective that needs no configuration)",
    )
    st.add_argument("--out", default="docs/objective-study.md")
    st.add_argument(
        "--adapters",
        help="directory holding clp/: study the objectives its adapter was trained with",
    )
    st.add_argument("--base-model", help=BASE_MODEL_HELP + "; the fluency objective reads it")
    st.add_argument("--objectives-file", help=OBJECTIVES_FILE_HELP)
    st.set_defaults(func=cmd_study)

    rw = sub.add_parser(
        "train-reward", help="train the `human` reward from stored pairwise ratings"
    )
    rw.add_argument("--db", required=True, help="database URL, e.g. sqlite:///data/steering.db")
    rw.add_argument("--out", default="runs/human-reward")
    rw.add_argument("--seed", type=int, default=0)
    rw.set_defaults(func=cmd_train_reward)

    mg = sub.add_parser(
        "merge",
        help="one adapter from several runs of one recipe: start + scale * (mean - start)",
    )
    mg.add_argument("runs", nargs="+", help="adapter directories of the runs (two or more)")
    mg.add_argument("--out", required=True, help="directory to write the merged adapter into")
    mg.add_argument(
        "--init",
        help="the adapters the runs started from (their --init-from); without it the start is "
        "zero and the merge is the plain mean",
    )
    mg.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="how far from the start the mean update goes: 1 the mean of the runs (default), "
        "above 1 extrapolates (needs --init)",
    )
    mg.set_defaults(func=cmd_merge)

    ex = sub.add_parser(
        "export", help="write an adapter for other servers: one weighting as PEFT LoRA, or GGUF"
    )
    ex.add_argument("--adapter", required=True, help="adapter directory (adapter.json + tensors)")
    ex.add_argument("--out", required=True, help="directory to write the export into")
    ex.add_argument(
        "--format",
        default="peft",
        choices=["peft", "gguf"],
        help="peft: one weighting as a standard PEFT LoRA (default); gguf: one llama.cpp LoRA "
        "per objective, each to be scaled by its weight at request time",
    )
    ex.add_argument(
        "--weights",
        help="peft: comma-separated, one per objective, normalised to sum 1 (the prompt "
        "adapter takes none); ignored by gguf",
    )
    ex.add_argument(
        "--base-model",
        help="the adapter's base model, local directory or .gguf, recorded in the export "
        "(default: STEERING_BASE_MODEL, else the shipped SmolLM2 GGUF)",
    )
    ex.set_defaults(func=cmd_export)

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
