"""The DPO reference policy of online conditioned DPO (`--reference`).

DPO's loss is a KL-regularised objective whose anchor is the reference policy: its implicit
reward of an answer is beta * log(pi(y | x, w) / pi_ref(y | x, w)). With `base` (the default) the
reference is the frozen base model, whatever the run starts from. A run that starts
`--init-from` trained adapters then measures every pair against the base model, and the
regulariser pulls the policy back towards it, away from what the adapters it started from had
learnt. With `init` the reference is the policy the run started from, conditioned on the same
weighting: the adapters saved in --init-from, mixed at each pair's w, frozen for the whole run
(as iterative DPO takes the model an iteration starts from as its reference). A clp run started
from soups' adapters then improves on soups' mixture at each weighting, and moves away from it
only where its own pairs say so.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from steering.errors import UserError
from steering.model.generate import sequence_logprobs
from steering.model.mixing import (
    ADAPTER_FILE,
    AdapterMetadata,
    AdapterSpec,
    adapters_off,
    attach,
    bank_parameters,
    conditioned,
    fill_bank,
)
from steering.model_files import file_sha256

REFERENCES = ("base", "init")
REFERENCE_BANK = "reference"
"""The name of the frozen bank holding --init-from's adapters when --reference is init."""
REFERENCE_RECORD = "reference.sha256"
"""The file in a run's --out naming the adapter file its --reference init run started from."""


def attach_reference(
    model: nn.Module, spec: AdapterSpec, directory: Path, metadata: AdapterMetadata
) -> None:
    """Attach bank REFERENCE_BANK to `model`, filled with the adapters saved in `directory`
    (their `metadata`, already checked to fit `spec`) and frozen."""
    attach(model, REFERENCE_BANK, spec)
    fill_bank(model, REFERENCE_BANK, directory, metadata)
    for p in bank_parameters(model, REFERENCE_BANK):
        p.requires_grad_(False)


def keep_reference(out: Path, reference: str, directory: Path, resume: bool) -> None:
    """Record in `out` (REFERENCE_RECORD) the SHA-256 of the adapter file a run with --reference
    init started from, and refuse, in one sentence, to resume a run whose reference would not be
    the one it trained against: --reference changed, or the adapters in `directory` did (a run
    started from its own --out, say, which its end overwrites)."""
    record = out / REFERENCE_RECORD
    digest = file_sha256(directory / ADAPTER_FILE) if reference == "init" else ""
    if resume:
        started = record.read_text().strip() if record.exists() else ""
        if started != digest:
            raise UserError(
                f"the run in {out} trained against another DPO reference: resume it with the "
                f"--reference and --init-from it started with, unchanged"
            )
    elif digest:
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(digest + "\n")
    elif record.exists():
        record.unlink()


def reference_logprobs(
    model: nn.Module, reference: str, weights: torch.Tensor | None, args: tuple
) -> torch.Tensor:
    """The reference policy's log-probabilities of the targets encoded in `args` (those of
    `sequence_logprobs`), summed per row (B,), without gradients: the base model's for `base`,
    for `init` the frozen --init-from adapters' mixed at the rows' `weights` (B, K)."""
    if reference == "init":
        policy = conditioned(model, REFERENCE_BANK, weights)
    else:
        policy = adapters_off(model)
    with torch.no_grad(), policy:
        return sequence_logprobs(model, *args).sum(dim=-1)
