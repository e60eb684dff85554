"""Polyak averaging of the adapter parameters (--ema-decay): an exponential moving average over
the optimiser steps, kept beside the live parameters and saved as the run's adapters. Training,
sampling and the llama.cpp exports use the live parameters; only the saved adapters are the
average. Decay 0 keeps the average equal to the live parameters, so the run saves those."""

from __future__ import annotations

import torch


class ParameterAverage:
    def __init__(self, parameters: list[torch.Tensor], decay: float):
        self.parameters = parameters
        self.decay = decay
        self.average = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def update(self) -> None:
        """After an optimiser step: average <- decay * average + (1 - decay) * live."""
        for mean, p in zip(self.average, self.parameters, strict=True):
            mean.lerp_(p.detach(), 1.0 - self.decay)

    def state(self) -> list[torch.Tensor]:
        return [mean.clone() for mean in self.average]

    @torch.no_grad()
    def load(self, saved: list[torch.Tensor] | None) -> None:
        """From a checkpoint; one saved without an average restarts it at the live parameters."""
        for mean, p, old in zip(
            self.average, self.parameters, saved or [None] * len(self.average), strict=True
        ):
            mean.copy_(p.detach() if old is None else old)

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        """Put the average in the model, for saving (bumps each tensor's version, so cached
        mixes are rebuilt)."""
        for mean, p in zip(self.average, self.parameters, strict=True):
            p.copy_(mean)
