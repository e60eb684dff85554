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

from steering.model.generate import sequence_logprobs
from steering.model.mixing import (
    AdapterSpec,
    adapters_off,
    attach,
    bank_parameters,
    conditioned,
    fill_bank,
    read_metadata,
)

REFERENCES = ("base", "init")
REFERENCE_BANK = "reference"
"""The name of the frozen bank holding --init-from's adapters when --reference is init."""


def attach_reference(model: nn.Module, spec: AdapterSpec, directory: Path) -> None:
    """Attach bank REFERENCE_BANK to `model`, filled with the adapters saved in `directory`
    (already checked to fit `spec`) and frozen."""
    attach(model, REFERENCE_BANK, spec)
    fill_bank(model, REFERENCE_BANK, directory, read_metadata(directory))
    for p in bank_parameters(model, REFERENCE_BANK):
        p.requires_grad_(False)


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
