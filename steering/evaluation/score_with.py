"""`evaluate --score-with`: the objectives a sweep scores every method's answers with.

Without it every method is scored with the objectives it steers, which must be the same for all.
With it (names, chosen from `--objectives-file` when one is configured, else registered; or a
TOML file) every method's answers are scored with those objectives, weight by weight, whatever
each one's sliders are, so methods trained on different rewards are compared on one scale. The
answers themselves do not depend on the scorers: a sweep under a method's own objectives left
them in the cache under that method's own specs, and `evaluate` scores them again from there.
"""

from __future__ import annotations

from steering.errors import UserError
from steering.objectives.declared import (
    SPECS_KEY,
    ObjectiveSet,
    ObjectiveSpec,
    named_objectives,
    read_objectives_file,
    resolve_objectives,
)


def sweep_scorers(steerers: dict, score_with: str | None, file: str | None) -> ObjectiveSet:
    """What every method's answers are scored with (`file` is the configured objectives file)."""
    if score_with is not None:
        return _score_with(steerers, score_with, file)
    first = next(iter(steerers.values()))
    for method, steerer in steerers.items():
        if steerer.objectives != first.objectives:
            raise UserError(
                f"method {method} steers {', '.join(steerer.objectives)}, not "
                f"{', '.join(first.objectives)}; give --score-with to score them alike"
            )
    trained = next((s for s in steerers.values() if s.metadata is not None), None)
    scorers = resolve_objectives(
        file,
        trained.metadata.training if trained else None,
        first.objectives,
        f"the adapter in {trained.adapter_dir}" if trained else "",
    )
    if scorers.names != first.objectives:
        raise UserError(
            f"the methods steer {', '.join(first.objectives)}, but the objectives are "
            f"{', '.join(scorers.names)}"
        )
    return scorers


def _score_with(steerers: dict, score_with: str, file: str | None) -> ObjectiveSet:
    if score_with.endswith(".toml"):
        scorers = read_objectives_file(score_with)
    else:
        names = [name.strip() for name in score_with.split(",") if name.strip()]
        if not names:
            raise UserError("--score-with names no objective")
        scorers = named_objectives(names, file, "--score-with")
    for method, steerer in steerers.items():
        if len(steerer.objectives) != len(scorers.names):
            raise UserError(
                f"method {method} steers {len(steerer.objectives)} objectives "
                f"({', '.join(steerer.objectives)}), but --score-with gives "
                f"{len(scorers.names)} ({', '.join(scorers.names)})"
            )
    return scorers


def own_specs(steerers: dict) -> dict[str, list[dict]]:
    """{method: the specs its answers are cached under when swept with the objectives it steers}:
    those recorded by the first adapter of the sweep that steers the same names (as a sweep
    without `--score-with` scores them), else the registered objectives of those names. Read,
    not built: a scorer the method was trained with need not be on this machine to find them."""
    trained = [s for s in steerers.values() if s.metadata is not None]
    found = {}
    for method, steerer in steerers.items():
        source = next((s for s in trained if s.objectives == steerer.objectives), None)
        if source is not None and SPECS_KEY in source.metadata.training:
            found[method] = [
                ObjectiveSpec.from_json(s).to_json() for s in source.metadata.training[SPECS_KEY]
            ]
        else:
            found[method] = [
                ObjectiveSpec(name, "builtin").to_json() for name in steerer.objectives
            ]
    return found
