"""The objectives a sweep scores answers with.

Every method is scored with the objectives it steers, unless `--score-with` names others (one per
weight, whatever each method steers), so that methods trained on different rewards are compared
on one scale. A method's own objectives are also what its answers are cached under when swept
without `--score-with`; `evaluate` reads those answers back and scores them again.
"""

from __future__ import annotations

from steering.errors import UserError
from steering.objectives.declared import (
    ObjectiveSet,
    ObjectiveSpec,
    build_objectives,
    read_objectives_file,
    resolve_objectives,
)


def own_objectives(steerers: dict, file: str | None) -> dict[str, ObjectiveSet]:
    """{method: the objectives its answers are scored with when scored with what it steers}: its
    adapter's, or for a method without one the first adapter's that steers the same names."""
    trained = [s for s in steerers.values() if s.metadata is not None]
    built, found = {}, {}
    for method, steerer in steerers.items():
        source = next((s for s in trained if s.objectives == steerer.objectives), None)
        key = (id(source), steerer.objectives)  # built once: scorers can be large models
        if key not in built:
            built[key] = resolve_objectives(
                file,
                source.metadata.training if source else None,
                steerer.objectives,
                f"the adapter in {source.adapter_dir}" if source else "",
            )
        found[method] = built[key]
    return found


def sweep_scorers(
    steerers: dict, own: dict[str, ObjectiveSet], score_with: str | None
) -> ObjectiveSet:
    """What every method's answers are scored with: `--score-with`'s objectives (names or a
    TOML file, weight by weight, whatever the methods steer), else the one set all steer."""
    if score_with is None:
        first, scorers = next(iter(steerers.values())), next(iter(own.values()))
        for method, steerer in steerers.items():
            if steerer.objectives != first.objectives:
                raise UserError(
                    f"method {method} steers {', '.join(steerer.objectives)}, not "
                    f"{', '.join(first.objectives)}; give --score-with to score them alike"
                )
        if scorers.names != first.objectives:
            raise UserError(
                f"the methods steer {', '.join(first.objectives)}, but the objectives are "
                f"{', '.join(scorers.names)}"
            )
        return scorers
    if score_with.endswith(".toml"):
        scorers = read_objectives_file(score_with)
    else:
        names = [name.strip() for name in score_with.split(",") if name.strip()]
        scorers = build_objectives([ObjectiveSpec(n, "builtin") for n in names], "--score-with")
    for method, steerer in steerers.items():
        if len(steerer.objectives) != len(scorers.names):
            raise UserError(
                f"method {method} steers {len(steerer.objectives)} objectives "
                f"({', '.join(steerer.objectives)}), but --score-with gives "
                f"{len(scorers.names)} ({', '.join(scorers.names)})"
            )
    return scorers
