"""The learning rate over a run (--lr-schedule): constant, or decayed from --lr towards 0 over
the run's optimiser steps, linearly or along a half cosine. The rate of a step depends only on
its index and the run's length, so a resumed run continues the schedule where it stopped."""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "linear", "cosine")


def learning_rate(lr: float, schedule: str, step: int, total: int) -> float:
    """The rate of optimiser step `step` (0-based) of `total`: the first step takes `lr`; linear
    and cosine fall towards 0, which they would reach one step after the last."""
    if schedule == "constant":
        return lr
    done = step / max(total, 1)
    if schedule == "linear":
        return lr * (1.0 - done)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * done))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")
