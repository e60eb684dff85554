"""Pareto tools for comparing steerable policies: simplex grids, non-dominated sets, hypervolume,
steerability and dominance between methods. Pure numpy/scipy plus moocore; no torch.

Convention: every objective value in this module is HIGHER IS BETTER (rewards are maximised).
A point p dominates q when p >= q in every objective and p > q in at least one, so two equal
points never dominate each other. Callers holding a "lower is better" quantity (a loss, a length
penalty) negate it before calling.

Shapes: a set of points is an array (n_points, n_objectives); a set of weightings is an array
(n_points, K) whose rows lie on the probability simplex.

    grid = simplex_grid(3, 0.25)                      # (15, 3) weightings for an evaluation sweep
    hv = hypervolume(rewards, reference_point=np.zeros(3))
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import moocore
import numpy as np
from scipy.stats import spearmanr

# Pairwise dominance broadcasts (chunk, n_front, n_objectives) booleans; this bounds that temporary
# at a few megabytes however many generations the app has collected.
_MAX_BROADCAST_ELEMENTS = 4_000_000


def simplex_grid(k: int, step: float) -> np.ndarray:
    """All weightings w on the K-simplex whose coordinates are multiples of ``step``.

    With m = 1 / step the rows are the integer compositions c_1 + ... + c_K = m divided by m, so
    there are C(m + K - 1, K - 1) of them (K=3, step 0.25 -> C(6, 2) = 15) and every row sums to
    exactly 1: the grid is built from integers, never by accumulating float steps. Rows are in
    lexicographic order of (c_1, ..., c_K); for K=2, step 0.5 that is [0, 1], [.5, .5], [1, 0].

    Returns:
        float64 array of shape (n, K).
    Raises:
        ValueError: K < 1, or step is not 1/m for a whole number m.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"the number of objectives must be a whole number >= 1, got {k!r}.")
    if not (isinstance(step, int | float | np.number) and math.isfinite(step) and 0 < step <= 1):
        raise ValueError(f"grid step must be a number in (0, 1], got {step!r}.")
    m = round(1 / step)
    # 0.1 is not exactly representable (least of all as float32), so "divides 1" allows rounding.
    if not math.isclose(m * step, 1.0, rel_tol=0.0, abs_tol=1e-6):
        raise ValueError(f"grid step {step} does not divide 1; use e.g. 0.25, 0.2 or 0.1.")
    counts = np.array(list(_compositions(m, int(k))), dtype=np.int64)  # (n, K)
    return counts / m


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Non-negative integer tuples of length ``parts`` summing to ``total``, lexicographic order."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def sample_dirichlet(
    k: int,
    n: int,
    alpha: float | Sequence[float] = 1.0,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Draw n weightings w ~ Dirichlet(alpha) on the K-simplex (the CLP training distribution).

    ``alpha`` is one concentration shared by all objectives or one per objective; alpha = 1 is
    uniform on the simplex, alpha < 1 favours corners, alpha > 1 favours the centre. ``rng`` is a
    Generator or a seed; None draws fresh OS entropy (not reproducible).

    Returns:
        float64 array of shape (n, K), every row non-negative and summing to 1.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"the number of objectives must be a whole number >= 1, got {k!r}.")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"the number of samples must be a whole number >= 0, got {n!r}.")
    alphas = np.asarray(alpha, dtype=np.float64)
    if alphas.ndim == 0:
        alphas = np.full(k, float(alphas))
    if alphas.shape != (k,):
        raise ValueError(f"alpha must be one number or {k} numbers, got shape {alphas.shape}.")
    if not (np.all(np.isfinite(alphas)) and np.all(alphas > 0)):
        raise ValueError(f"every Dirichlet alpha must be a finite number > 0, got {alpha!r}.")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return generator.dirichlet(alphas, size=int(n))  # (n, K)


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the points no other point dominates (maximisation).

    Duplicates: equal points do not dominate each other, so every copy of a non-dominated point
    is kept (all True) and every copy of a dominated point is dropped. ``front_for_plot`` is the
    variant that keeps one copy.

    Returns:
        bool array of shape (n,).
    """
    pts = _as_points(points, "points")
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    # keep_weakly=True is what keeps duplicates; moocore's default keeps only the first copy.
    return np.asarray(moocore.is_nondominated(pts, maximise=True, keep_weakly=True), dtype=bool)


def hypervolume(points: np.ndarray, reference_point: np.ndarray | Sequence[float]) -> float:
    """Volume of objective space dominated by ``points`` and bounded below by ``reference_point``.

        HV(P, r) = Lebesgue measure of  U_{p in P, p > r}  [r_1, p_1] x ... x [r_m, p_m]

    Only points strictly better than r in every objective contribute; the others add nothing
    (they would span a box of zero or negative extent). Dominated points and duplicates are
    harmless. Computed exactly by moocore, which minimises, so both sides are negated.

    Raises:
        ValueError: points not (n, m), reference point not (m,), or any value not finite.
    """
    pts = _as_points(points, "points")
    ref = np.asarray(reference_point, dtype=np.float64)
    if ref.shape != (pts.shape[1],):
        raise ValueError(
            f"the reference point must have one value per objective ({pts.shape[1]}), "
            f"got shape {ref.shape}."
        )
    if not np.all(np.isfinite(ref)):
        raise ValueError("the reference point must contain only finite numbers.")
    inside = pts[np.all(pts > ref, axis=1)]  # (n_inside, m)
    if len(inside) == 0:
        return 0.0
    if pts.shape[1] == 1:
        # Not worth a C call, and the 1-D case is just the longest segment.
        return float(inside.max() - ref[0])
    return float(moocore.hypervolume(-inside, -ref))


def steerability(weights: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Per-objective Spearman rank correlation between weight w_k and reward on objective k.

    ``weights[i]`` is one weighting of the evaluation grid and ``rewards[i, k]`` the mean reward
    on objective k of the generations made with it. rho_k = 1 means turning the k-th slider up
    never lowers objective k; 0 means the slider does nothing; -1 means it works backwards.
    Ties get average ranks (scipy.stats.spearmanr).

    A constant column (a weight never varied, or a reward that never moved) has no ranking to
    correlate; scipy returns NaN there, this returns 0.0 ("no measurable steering") so summaries
    and plots stay NaN-free.

    Returns:
        float64 array of shape (K,) with values in [-1, 1].
    """
    w = _as_points(weights, "weights")
    r = _as_points(rewards, "rewards")
    if w.shape != r.shape:
        raise ValueError(
            f"weights and rewards must have the same shape (n_weightings, K), got {w.shape} "
            f"and {r.shape}."
        )
    if len(w) < 2:
        raise ValueError(f"steerability needs at least 2 weightings, got {len(w)}.")
    rho = np.zeros(w.shape[1], dtype=np.float64)
    for k in range(w.shape[1]):
        if np.ptp(w[:, k]) == 0 or np.ptp(r[:, k]) == 0:
            continue
        rho[k] = spearmanr(w[:, k], r[:, k]).statistic
    # Rounding can land a hair outside [-1, 1]; the documented range is exact.
    return np.clip(rho, -1.0, 1.0)


def dominated_share(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """Share of method A's points that some point of B's Pareto front dominates.

    Dominates means >= in every objective and > in at least one, i.e. weakly dominated and not
    equal: a point A shares with B's front is not counted. Since dominance is transitive,
    "dominated by B's front" is the same as "dominated by some point of B"; the front is used
    only because it is smaller. dominated_share(A, A) is the share of A's own dominated points.

    Returns:
        float in [0, 1]; 0.0 when B is empty.
    Raises:
        ValueError: A is empty, or A and B have different numbers of objectives.
    """
    a = _as_points(points_a, "points_a")
    b = _as_points(points_b, "points_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"both point sets need the same number of objectives, got {a.shape[1]} and "
            f"{b.shape[1]}."
        )
    if len(a) == 0:
        raise ValueError("points_a is empty, so the share of its dominated points is undefined.")
    if len(b) == 0:
        return 0.0
    front = b[non_dominated(b)]  # (n_front, m)
    chunk = max(1, _MAX_BROADCAST_ELEMENTS // (len(front) * a.shape[1]))
    dominated = np.zeros(len(a), dtype=bool)
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk, None, :]  # (chunk, 1, m)
        geq = np.all(front[None, :, :] >= block, axis=2)  # (chunk, n_front)
        gt = np.any(front[None, :, :] > block, axis=2)  # (chunk, n_front)
        dominated[start : start + chunk] = np.any(geq & gt, axis=1)
    return float(dominated.mean())


def front_for_plot(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points in drawing order for a step line through the front.

    Sorted by the first objective ascending, ties broken by the remaining objectives descending;
    for two objectives this walks the front from top-left to bottom-right. Exact duplicates are
    drawn once (the lowest index is kept). Pass only the two columns being plotted: a front in
    more objectives projected to two is not a step line.

    Returns:
        int64 array of indices into ``points``.
    """
    pts = _as_points(points, "points")
    idx = np.flatnonzero(non_dominated(pts))
    _, first = np.unique(pts[idx], axis=0, return_index=True)
    idx = idx[np.sort(first)]
    # np.lexsort sorts by its last key first.
    keys = [-pts[idx, j] for j in range(pts.shape[1] - 1, 0, -1)] + [pts[idx, 0]]
    return idx[np.lexsort(keys)].astype(np.int64)


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    """Validate an (n, m) array of finite numbers, m >= 1, and return it as float64."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array of shape (n, m).") from err
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_points, n_objectives), got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite numbers (found NaN or infinity).")
    return arr
