"""Where a training run is: its step, its training time and the command that made it, over every
piece of a resumed run (saved in its checkpoint)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class TrainState:
    step: int = 0
    # training time over every piece of a resumed run, and its command (`resumed_command`)
    seconds: float = 0.0
    command: str = field(default_factory=lambda: "python -m steering " + " ".join(sys.argv[1:]))
    resumes: int = 0


def resumed_command(first: str | None, now: str) -> str:
    """A resumed run's command: the first, then (after `&&`) the resuming one if it changes
    more than --resume (a longer --rounds, say), so the record names every piece's command."""
    last = (first or "").rsplit(" && ", 1)[-1].split(" ")
    same = [a for a in now.split(" ") if a != "--resume"] == [a for a in last if a != "--resume"]
    return now if not first else first if same else f"{first} && {now}"
