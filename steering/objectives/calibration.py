"""Per-objective calibration (z-scores) and the rank correlations between objectives.

Raw objectives live on unrelated scales (VADER in [-1, 1], fluency in [-20, 0], a Bradley-Terry
reward unbounded), so the scalarised reward w . r_hat uses r_hat = (r - mean) / std with mean and
std measured on base-model samples. The trainer fits a Calibration once and saves it as
`calibration.json` next to the adapters, so evaluation and the app normalise identically.

    calibration = fit_calibration(score(names, prompts, base_responses))
    calibration.save(adapter_dir)                       # adapter_dir/calibration.json
    r_hat = load_calibration(adapter_dir).normalise(raw)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from steering.errors import UserError

CALIBRATION_FILENAME = "calibration.json"

STD_FLOOR = 1e-3
"""Standard deviations below this are raised to it, so an objective that was (nearly) constant
on the calibration samples -- conciseness when every sample hit the length limit, say -- turns
into large but finite z-scores instead of a division by zero. 1e-3 is below the resolution that
matters for every built-in objective's raw scale."""

QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class ObjectiveStats:
    """Summary of one objective's raw scores on the calibration samples."""

    mean: float
    std: float  # population std (ddof=0), floored at STD_FLOOR
    q05: float
    q50: float
    q95: float
    count: int


@dataclass(frozen=True)
class Calibration:
    """Per-objective statistics; `normalise` maps raw scores to z-scores."""

    stats: Mapping[str, ObjectiveStats]

    def __post_init__(self):
        object.__setattr__(self, "stats", MappingProxyType(dict(self.stats)))

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.stats)

    def normalise(self, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{name: (x - mean) / std} for every objective in `raw`; all must be calibrated."""
        result = {}
        for name, values in raw.items():
            if name not in self.stats:
                raise UserError(
                    f"objective {name!r} has no calibration; calibrated objectives: "
                    f"{', '.join(self.stats) or 'none'}"
                )
            s = self.stats[name]
            result[name] = (np.asarray(values, dtype=np.float64) - s.mean) / s.std
        return result

    def to_json(self) -> dict:
        return {"objectives": {name: asdict(s) for name, s in self.stats.items()}}

    @classmethod
    def from_json(cls, data: Mapping) -> Calibration:
        return cls({name: ObjectiveStats(**s) for name, s in data["objectives"].items()})

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON to `path`, or to `path`/calibration.json when `path` is a directory."""
        target = _calibration_file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return target


def load_calibration(path: str | os.PathLike) -> Calibration:
    """Read a calibration file, or `path`/calibration.json when `path` is a directory."""
    target = _calibration_file(path)
    if not target.is_file():
        raise UserError(f"no calibration file at {target}")
    try:
        return Calibration.from_json(json.loads(target.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{target} is not a valid calibration file: {error}") from None


def _calibration_file(path: str | os.PathLike) -> Path:
    # A path without a suffix is a directory, existing or not: adapters live in directories.
    path = Path(path)
    return path / CALIBRATION_FILENAME if path.is_dir() or not path.suffix else path


def fit_calibration(raw: Mapping[str, np.ndarray]) -> Calibration:
    """Mean, std and 5/50/95 % quantiles of each objective's raw scores (at least 2 each)."""
    stats = {}
    for name, values in raw.items():
        x = np.asarray(values, dtype=np.float64).ravel()
        if x.size < 2:
            raise UserError(f"calibrating {name!r} needs at least 2 scores, got {x.size}")
        if not np.all(np.isfinite(x)):
            raise UserError(f"calibrating {name!r}: its scores contain NaN or infinity")
        q05, q50, q95 = np.quantile(x, QUANTILES)
        stats[name] = ObjectiveStats(
            mean=float(x.mean()),
            std=float(max(x.std(), STD_FLOOR)),
            q05=float(q05),
            q50=float(q50),
            q95=float(q95),
            count=int(x.size),
        )
    return Calibration(stats)


@dataclass(frozen=True)
class CorrelationTable:
    """Pairwise Spearman rank correlations; rho[i, j] is between names[i] and names[j]."""

    names: tuple[str, ...]
    rho: np.ndarray  # (K, K), symmetric, ones on the diagonal
    count: int

    def pairs(self) -> list[tuple[str, str, float]]:
        """Each unordered pair once, strongest |rho| first."""
        k = len(self.names)
        rows = [
            (self.names[i], self.names[j], float(self.rho[i, j]))
            for i in range(k)
            for j in range(i + 1, k)
        ]
        return sorted(rows, key=lambda row: -abs(row[2]))

    def to_markdown(self, digits: int = 2) -> str:
        header = "| | " + " | ".join(self.names) + " |"
        rule = "|---" * (len(self.names) + 1) + "|"
        body = [
            f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in row) + " |"
            for name, row in zip(self.names, self.rho, strict=True)
        ]
        return "\n".join([header, rule, *body])

    def to_json(self) -> dict:
        return {"names": list(self.names), "rho": self.rho.tolist(), "count": self.count}


def correlation_table(scores: Mapping[str, np.ndarray]) -> CorrelationTable:
    """Spearman's rho between every pair of objectives scored on the same samples.

    rho is the Pearson correlation of the ranks (ties get their average rank). An objective
    that is constant on the samples has no ranking to correlate: its rho with every other
    objective is reported as 0.0 rather than NaN.
    """
    from scipy.stats import rankdata

    names = tuple(scores)
    if not names:
        return CorrelationTable(names=(), rho=np.zeros((0, 0)), count=0)
    columns = [np.asarray(scores[name], dtype=np.float64).ravel() for name in names]
    if len({c.size for c in columns}) > 1:
        raise UserError("every objective must be scored on the same samples to correlate them")
    count = columns[0].size
    if count < 2:
        raise UserError(f"correlating objectives needs at least 2 samples, got {count}")
    ranks = np.stack([rankdata(c) for c in columns])  # (K, N)
    centred = ranks - ranks.mean(axis=1, keepdims=True)  # (K, N)
    norms = np.linalg.norm(centred, axis=1)  # (K,), 0 for a constant objective
    safe = np.where(norms > 0, norms, 1.0)
    rho = np.clip((centred @ centred.T) / np.outer(safe, safe), -1.0, 1.0)  # (K, K)
    np.fill_diagonal(rho, 1.0)
    return CorrelationTable(names=names, rho=rho, count=count)
