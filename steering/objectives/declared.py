"""Objectives declared in a file instead of code: which scorers a run trades off, and how each
scores.

    [objectives.helpful]
    kind = "reward-model"            # a sequence-classification model with one output
    model = "/models/rm-helpful"     # local path (relative: to this file), or a Hub id
    # template = "Human: {prompt} Assistant: {response}"   (else its chat template, else a pair)
    [objectives.harmless]
    kind = "classifier"              # the probability of one label
    model = "/models/toxicity"
    label = "non-toxic"
    with_prompt = false
    [objectives.positivity]
    kind = "builtin"                 # a registered scorer (`python -m steering objectives`);
                                     # objective = "..." names it when the table's name differs
    [objectives.polite]
    kind = "python"
    function = "mypackage.rewards:politeness"   # fn(prompts, responses) -> one float each
    [objectives.people]
    kind = "human"                   # a reward trained by `python -m steering train-reward`
    model = "runs/human-reward"

The tables' order is the order of the weights. An `ObjectiveSet` is what the rest of the project
scores with: its `to_json()` goes into a trained adapter's metadata, with the content hash of
every model, so `evaluate` and the app rebuild exactly the scorers the adapter was trained on
(`objectives_for_adapter`) and refuse, in one sentence, a model that is missing or has changed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path

import numpy as np

from steering.errors import UserError
from steering.model_files import content_sha256, resolve_model_reference
from steering.objectives.registry import Objective, get_objective

OBJECTIVES_FILE_ENV = "STEERING_OBJECTIVES_FILE"
SPECS_KEY = "objective_specs"  # where an adapter's metadata keeps the specs
KEYS = {
    "builtin": {"objective"},
    "reward-model": {"model", "template"},
    "classifier": {"model", "label", "with_prompt"},
    "python": {"function"},
    "human": {"model"},
}
KINDS = tuple(KEYS)
COMMON_KEYS = {"kind", "description"}


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective as declared; `model` is the resolved local path or the Hub id, and `sha256`
    the model's content hash once built."""

    name: str
    kind: str
    model: str = ""
    label: str = ""
    with_prompt: bool = False
    function: str = ""
    objective: str = ""
    template: str = ""
    description: str = ""
    sha256: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in ("", False)}

    @classmethod
    def from_json(cls, data: Mapping) -> ObjectiveSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def cache_key(self) -> str:
        """A name for this scorer's scores in caches: the registry name for a builtin scored
        under its own name, else the name and a digest of the whole spec."""
        if self.kind == "builtin" and self.objective in ("", self.name):
            return self.name
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:12]}"


@dataclass(frozen=True)
class ObjectiveSet:
    """The objectives of a run, in weight order, built and ready to score."""

    specs: tuple[ObjectiveSpec, ...]
    objectives: tuple[Objective, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def select(self, names: Sequence[str]) -> ObjectiveSet:
        """The named objectives of this set, in the order given."""
        index = {name: i for i, name in enumerate(self.names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise UserError(
                f"objective {unknown[0]!r} is not declared; declared: {', '.join(self.names)}"
            )
        return ObjectiveSet(
            tuple(self.specs[index[n]] for n in names),
            tuple(self.objectives[index[n]] for n in names),
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        """{name: float64 array of len(responses)}, in weight order."""
        return {o.name: o(prompts, responses) for o in self.objectives}

    def to_json(self) -> list[dict]:
        return [spec.to_json() for spec in self.specs]

    def builtin(self, name: str) -> bool:
        """Whether `name` is the registered objective of that name, not a declared other one."""
        spec = self.specs[self.names.index(name)]
        return spec.kind == "builtin" and spec.objective in ("", name)


def builtin_objectives(names: Sequence[str], source: str = "--objectives") -> ObjectiveSet:
    """Registered objectives by name (the shipped default, and `--objectives a,b,c`)."""
    return build_objectives([ObjectiveSpec(name, "builtin") for name in names], source)


def named_objectives(
    names: Sequence[str], file: str | None, source: str = "--objectives"
) -> ObjectiveSet:
    """The named objectives, chosen from the objectives `file` when one is configured (all it
    declares when no names are given), else the registered ones (the shipped default)."""
    from steering.objectives import DEFAULT_OBJECTIVES

    if file:
        declared = read_objectives_file(file)
        return declared.select(names) if names else declared
    return builtin_objectives(names or DEFAULT_OBJECTIVES, source)


def read_objectives_file(path: str | os.PathLike) -> ObjectiveSet:
    """Parse, check and build the objectives a TOML file declares."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"objectives file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"objectives file {path} is not valid TOML ({error})") from None
    extra = set(data) - {"objectives"}
    if extra:
        raise UserError(
            f"{path}: unknown top-level key {sorted(extra)[0]!r}; use [objectives.NAME]"
        )
    tables = data.get("objectives", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise UserError(f"{path}: declare each objective as a table [objectives.NAME]")
    specs = [_parse_spec(path, name, table) for name, table in tables.items()]
    return build_objectives(specs, str(path), relative_to=path.parent)


def _parse_spec(path: Path, name: str, table: dict) -> ObjectiveSpec:
    where = f"{path}: objective {name!r}"
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise UserError(f"{where}: a name is lower-case letters, digits and '_'")
    kind = table.get("kind")
    if kind not in KEYS:
        raise UserError(f"{where} has kind {kind!r}; kinds are {', '.join(KINDS)}")
    unknown = set(table) - KEYS[kind] - COMMON_KEYS
    if unknown:
        allowed = ", ".join(sorted(KEYS[kind] | COMMON_KEYS))
        raise UserError(f"{where}: {kind} takes no key {sorted(unknown)[0]!r} (it takes {allowed})")
    for key in KEYS[kind] - {"label", "with_prompt", "objective", "template"}:
        if not isinstance(table.get(key), str) or not table[key].strip():
            raise UserError(f'{where}: {kind} needs {key} = "..."')
    if not isinstance(table.get("with_prompt", False), bool):
        raise UserError(f"{where}: with_prompt is true or false")
    for key in ("label", "objective", "description", "template"):
        if not isinstance(table.get(key, ""), str | int) or isinstance(table.get(key), bool):
            raise UserError(f"{where}: {key} is a string")
    return ObjectiveSpec(
        name=name,
        kind=kind,
        model=table.get("model", ""),
        label=str(table.get("label", "")),
        with_prompt=table.get("with_prompt", False),
        function=table.get("function", ""),
        objective=table.get("objective", ""),
        template=table.get("template", ""),
        description=table.get("description", ""),
    )


def build_objectives(
    specs: Sequence[ObjectiveSpec], source: str, relative_to: Path | None = None
) -> ObjectiveSet:
    """Scorers for the specs; every problem is one sentence naming `source` and the objective."""
    names = [spec.name for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"{source}: objective {duplicates[0]!r} is declared twice")
    if len(specs) < 2:
        raise UserError(f"{source}: declare at least two objectives to trade off")
    built = [_build(spec, f"{source}: objective {spec.name!r}", relative_to) for spec in specs]
    return ObjectiveSet(tuple(s for s, _ in built), tuple(o for _, o in built))


def _build(spec: ObjectiveSpec, where: str, relative_to: Path | None):
    try:
        return _build_kind(spec, relative_to)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None


def _build_kind(spec: ObjectiveSpec, relative_to: Path | None) -> tuple[ObjectiveSpec, Objective]:
    description = spec.description
    if spec.kind == "builtin":
        registered = get_objective(spec.objective or spec.name)
        return spec, Objective(
            spec.name,
            registered.higher_is_better,
            description or registered.description,
            registered.fn,
        )
    if spec.kind == "python":
        return spec, Objective(
            spec.name, True, description or spec.function, _import(spec.function)
        )
    path = resolve_model_reference(spec.model, relative_to)
    resolved = replace(spec, model=_portable(spec.model, path), sha256=content_sha256(path))
    if spec.kind == "reward-model":
        from steering.objectives.reward_model import (
            check_reward_model,
            check_template,
            reward_model_scores,
        )

        check_reward_model(path)
        if spec.template:
            check_template(spec.template)
        fn = partial(reward_model_scores, path, template=spec.template)
        description = description or f"Reward model {resolved.model} (logit)."
    elif spec.kind == "classifier":
        from steering.objectives.classifier import ClassifierConfig, classifier_probabilities

        config = ClassifierConfig(path, spec.label or None, spec.with_prompt)
        _check_label(config)
        fn = partial(classifier_probabilities, config)
        description = description or f"P({spec.label or 'score'}) under {resolved.model}."
    else:  # human
        from steering.objectives.human import load_human_reward

        reward = load_human_reward(path)  # checked now, not at the first score
        fn = reward.reward
        description = description or f"Learned human reward in {resolved.model}."
    return resolved, Objective(spec.name, True, description, fn)


def _portable(reference: str, path: Path) -> str:
    """What to record: the Hub id for a Hub model (its snapshot path is a cache detail), else
    the absolute local path."""
    return reference if "models--" in str(path) and not Path(reference).exists() else str(path)


def _check_label(config) -> None:
    from transformers import AutoConfig

    from steering.objectives.classifier import label_index

    try:
        model_config = AutoConfig.from_pretrained(str(config.path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{config.path} holds no readable model config ({error})") from None
    if model_config.num_labels > 1 and config.label is None:
        labels = ", ".join(str(v) for _, v in sorted((model_config.id2label or {}).items()))
        raise UserError(
            f'the model has {model_config.num_labels} labels ({labels}); add label = "..."'
        )
    label_index(model_config, config.label)


def _import(reference: str):
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise UserError(f"function {reference!r} is not of the form 'package.module:function'")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except ImportError as error:
        raise UserError(f"function {reference!r} is not importable ({error})") from None
    except AttributeError:
        raise UserError(f"module {module_name} has no function {attribute!r}") from None
    if not callable(function):
        raise UserError(f"{reference} is not callable")
    return function


def objectives_from_json(data: Sequence[Mapping], source: str) -> ObjectiveSet:
    """Rebuild recorded specs, refusing a model whose content hash differs from the record."""
    recorded = [ObjectiveSpec.from_json(item) for item in data]
    built = build_objectives(recorded, source)
    for before, now in zip(recorded, built.specs, strict=True):
        if before.sha256 and before.sha256 != now.sha256:
            raise UserError(
                f"{source}: objective {before.name!r} was trained with {before.model} "
                f"({before.sha256[:12]}), which now holds other files ({now.sha256[:12]}); "
                "restore that model or retrain"
            )
    return built


def objectives_for_adapter(training: Mapping, names: Sequence[str], source: str) -> ObjectiveSet:
    """The scorers an adapter was trained with: its recorded specs, else (adapters trained
    before objectives were declared) the registered objectives of those names."""
    if SPECS_KEY in training:
        return objectives_from_json(training[SPECS_KEY], source)
    return builtin_objectives(names)


def configured_objectives_file(path: str | None = None) -> str | None:
    """An explicit `--objectives-file`, else STEERING_OBJECTIVES_FILE, else None."""
    return path or os.environ.get(OBJECTIVES_FILE_ENV) or None


def _identity(spec: ObjectiveSpec) -> dict:
    return {k: v for k, v in spec.to_json().items() if k != "description"}


def resolve_objectives(
    file: str | None,
    training: Mapping | None = None,
    names: Sequence[str] = (),
    source: str = "the adapter",
) -> ObjectiveSet:
    """The objectives of a command: the adapter's (`training` is its metadata's training
    record, `names` the objectives it steers) and the file's must agree when both are given;
    with neither, the shipped default."""
    from steering.objectives import DEFAULT_OBJECTIVES

    from_file = read_objectives_file(file) if file else None
    if training is None:
        return from_file or builtin_objectives(names or DEFAULT_OBJECTIVES)
    from_adapter = objectives_for_adapter(training, names, source)
    if from_file is not None:
        if from_file.names != from_adapter.names:
            raise UserError(
                f"{source} steers {', '.join(from_adapter.names)}, but {file} declares "
                f"{', '.join(from_file.names)}"
            )
        for ours, theirs in zip(from_adapter.specs, from_file.specs, strict=True):
            if _identity(ours) != _identity(theirs):
                raise UserError(
                    f"{source} was trained with objective {ours.name!r} as {_identity(ours)}, "
                    f"but {file} declares {_identity(theirs)}"
                )
    return from_adapter
