"""Bradley-Terry strengths from pairwise outcomes, with percentile-bootstrap intervals.

In log-strength form (Bradley & Terry 1952), item i beats item j with probability

    P(i > j) = sigmoid(s_i - s_j)

Comparison c between items (i_c, j_c) has outcome y_c = 1 if i_c won, 0 if j_c won, 1/2 for a tie
(each side gets half a win). The fit maximises the penalised log-likelihood

    L(s) = sum_c w_c [ y_c log sigmoid(s_i - s_j) + (1 - y_c) log sigmoid(s_j - s_i) ] - prior/2 |s|^2

The Gaussian prior keeps the strength of an item that never lost finite; prior=0 gives the plain
maximum-likelihood estimate, which is finite only when, within a connected comparison graph, every
item has at least part of a win and part of a loss. L only sees differences s_i - s_j, so strengths
are reported centred on mean 0 (with prior > 0 the optimum is already centred).
"""

import numpy as np

_MAX_NEWTON_STEPS = 100
_GRADIENT_TOLERANCE = 1e-10


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)  # log(1 / (1 + e^-x)) without overflow for large |x|


def _win_matrix(first, second, outcome, n_items, weight) -> np.ndarray:
    wins = np.zeros((n_items, n_items))  # (M, M): wins[i, j] = win mass of i over j
    np.add.at(wins, (first, second), weight * outcome)
    np.add.at(wins, (second, first), weight * (1.0 - outcome))
    return wins


def fit(
    first: np.ndarray,
    second: np.ndarray,
    outcome: np.ndarray,
    n_items: int,
    prior: float = 0.01,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """Centred log-strengths (n_items,) maximising L(s) above.

    first, second: (C,) item indices of each comparison; outcome: (C,) in {0, 1/2, 1} for `first`;
    weight: (C,) multiplicity of each comparison (the bootstrap's resampling counts), default 1.
    """
    if prior < 0:
        raise ValueError(f"prior must be >= 0; got {prior}.")
    weight = np.ones(len(outcome)) if weight is None else weight
    wins = _win_matrix(first, second, outcome, n_items, weight)

    def loss(s: np.ndarray) -> float:  # -L(s)
        return -(wins * _log_sigmoid(s[:, None] - s[None, :])).sum() + 0.5 * prior * s @ s

    # Newton's method with backtracking: L is concave, and with M methods (a handful) the (M, M)
    # Hessian is cheap, so this converges in a few steps where first-order methods crawl.
    s = np.zeros(n_items)
    value = loss(s)
    for _ in range(_MAX_NEWTON_STEPS):
        p = np.exp(_log_sigmoid(s[:, None] - s[None, :]))  # (M, M): P(i > j)
        # d/ds_i of wins[i, j] log sigmoid(s_i - s_j) is wins[i, j] (1 - p[i, j]); s_j loses as much.
        pull = wins * (1.0 - p)  # (M, M)
        gradient = pull.sum(axis=0) - pull.sum(axis=1) + prior * s
        if np.abs(gradient).max() < _GRADIENT_TOLERANCE:
            break
        curvature = (wins + wins.T) * p * (1.0 - p)  # (M, M), symmetric
        hessian = np.diag(curvature.sum(axis=1)) - curvature + prior * np.eye(n_items)
        # Least squares: with prior=0 the Hessian is singular along s -> s + c, a direction L ignores.
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        size = 1.0
        while True:
            candidate = s - size * step
            candidate_value = loss(candidate)
            if candidate_value <= value - 1e-4 * size * gradient @ step or size < 1e-8:
                break
            size /= 2
        s, value = candidate, candidate_value
    return s - s.mean()


def bootstrap_interval(
    first: np.ndarray,
    second: np.ndarray,
    outcome: np.ndarray,
    n_items: int,
    prior: float = 0.01,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap (low, high), each (n_items,), resampling comparisons with replacement."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; got {n_resamples}.")
    rng = np.random.default_rng(seed)
    n = len(outcome)
    samples = np.stack(
        [
            fit(first, second, outcome, n_items, prior, rng.multinomial(n, np.full(n, 1.0 / n)))
            for _ in range(n_resamples)
        ]
    )  # (R, M)
    tail = 100 * (1 - level) / 2
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)
