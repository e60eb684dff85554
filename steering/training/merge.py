"""`python -m steering merge`: one adapter bank from several training runs of one recipe.

Runs that start from the same adapters (`train --init-from`) with different seeds end at
different points near that start. Their parameters can be averaged elementwise, a model soup of
the runs (WARP merges independently trained policies the same way), and the mean update can be
scaled away from the start, extrapolating as ExPO does with `--scale` > 1:

    merged = start + scale * (mean over runs of the run - start)

for every A and B of every conditioned layer. Without `--init` the start is zero and the merged
bank is the plain mean (`--scale` must then stay 1: the update is only defined from a start).
The runs must hold the same adapters (objectives, layers, rank, alpha) for the same base model
and score with the same calibration; the merged directory keeps them and records what it was
merged from under `training.merged`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from steering.errors import UserError
from steering.model.mixing import (
    ADAPTER_FILE,
    METADATA_FILE,
    AdapterMetadata,
    check_base_model,
    read_bank_tensors,
    read_metadata,
)
from steering.objectives.calibration import CALIBRATION_FILENAME, load_calibration


def _same_adapters(
    first: AdapterMetadata, other: AdapterMetadata, a: Path, b: Path, start: bool = False
) -> None:
    """Refuse `other` unless it holds `first`'s adapters for the same base model; a start may
    name its objectives differently, as `train --init-from` allows."""
    if not (first.spec.fits(other.spec) if start else other.spec == first.spec):
        raise UserError(f"{b} holds other adapters than {a} ({other.spec} against {first.spec})")
    check_base_model(other, first.base_model, b)


def merge_runs(
    runs: list[str | Path], out: str | Path, init: str | Path | None = None, scale: float = 1.0
) -> Path:
    """Write start + scale * (mean(runs) - start) into `out` (see the module docstring)."""
    runs = [Path(r) for r in runs]
    out = Path(out)
    if len(runs) < 2:
        raise UserError("give at least two runs to merge")
    if not math.isfinite(scale) or scale <= 0:
        raise UserError(f"scale must be a positive number, got {scale}")
    if scale != 1 and init is None:
        raise UserError("a scale other than 1 needs --init, the adapters the runs started from")
    if out.resolve() in {r.resolve() for r in runs}:
        raise UserError(f"{out} is one of the runs; write the merged adapter elsewhere")
    metadata = [read_metadata(r) for r in runs]
    calibration = load_calibration(runs[0]).to_json()
    for run, meta in zip(runs[1:], metadata[1:], strict=True):
        _same_adapters(metadata[0], meta, runs[0], run)
        if meta.training.get("method") != metadata[0].training.get("method"):
            raise UserError(
                f"{run} trained another method than {runs[0]}; merge runs of one recipe"
            )
        if load_calibration(run).to_json() != calibration:
            raise UserError(
                f"{run} scores with another calibration than {runs[0]}; merge runs of one recipe"
            )
    banks = [read_bank_tensors(r, m) for r, m in zip(runs, metadata, strict=True)]
    if init is not None:
        start_meta = read_metadata(init)
        _same_adapters(metadata[0], start_meta, runs[0], Path(init), start=True)
        start = read_bank_tensors(init, start_meta)
    else:
        start = {name: tuple(torch.zeros_like(t) for t in ab) for name, ab in banks[0].items()}
    for run, bank in zip(runs, banks, strict=True):
        if bank.keys() != start.keys():
            raise UserError(f"{run} conditions other layers than {runs[0]}")
    tensors = {}
    for name, origins in start.items():
        for i, (part, origin) in enumerate(zip(("A", "B"), origins, strict=True)):
            mean = torch.stack([bank[name][i] for bank in banks]).mean(dim=0)
            tensors[f"{name}.{part}"] = (origin + scale * (mean - origin)).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_FILE))
    training = dict(metadata[0].training)
    training["merged"] = {
        "runs": [str(r) for r in runs],
        "init": str(init) if init is not None else None,
        "scale": scale,
    }
    merged = AdapterMetadata(metadata[0].spec, metadata[0].base_model, training)
    (out / METADATA_FILE).write_text(json.dumps(merged.to_json(), indent=2) + "\n")
    shutil.copyfile(runs[0] / CALIBRATION_FILENAME, out / CALIBRATION_FILENAME)
    return out
