"""Tests for steering/pareto.py. Expected values are worked out by hand in the comments; the
hypervolume is also checked against an exact brute-force union on random small sets.

    .venv/bin/pytest tests/steering/test_pareto.py -q
"""

import itertools
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from steering.evaluation.pareto import (
    dominated_share,
    front_for_plot,
    hypervolume,
    non_dominated,
    sample_dirichlet,
    simplex_grid,
    steerability,
)

# ---------------------------------------------------------------------------------------------
# simplex_grid


@pytest.mark.parametrize(
    ("k", "step", "expected_rows"),
    [
        # C(m + k - 1, k - 1) compositions of m = 1/step into k parts.
        (3, 0.25, 15),  # m=4:  C(6, 2) = 15
        (3, 0.1, 66),  # m=10: C(12, 2) = 66
        (2, 0.1, 11),  # m=10: C(11, 1) = 11
        (2, 0.5, 3),  # m=2:  C(3, 1) = 3
        (4, 0.5, 10),  # m=2:  C(5, 3) = 10
        (1, 0.2, 1),  # a single objective always gets the whole weight
    ],
)
def test_simplex_grid_size_and_rows_on_simplex(k, step, expected_rows):
    grid = simplex_grid(k, step)
    assert grid.shape == (expected_rows, k)
    assert expected_rows == math.comb(round(1 / step) + k - 1, k - 1)
    assert np.all(grid >= 0)
    assert_allclose(grid.sum(axis=1), np.ones(expected_rows), rtol=0, atol=1e-12)
    # Every coordinate is a whole multiple of step and no weighting appears twice.
    assert_allclose(grid / step, np.round(grid / step), rtol=0, atol=1e-9)
    assert len(np.unique(grid, axis=0)) == expected_rows


def test_simplex_grid_exact_rows_for_two_objectives():
    # m = 2: compositions (0, 2), (1, 1), (2, 0) divided by 2, in lexicographic order.
    assert_array_equal(simplex_grid(2, 0.5), [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])


def test_simplex_grid_contains_corners_and_centre():
    grid = simplex_grid(3, 0.1)
    rows = {tuple(np.round(r, 12)) for r in grid}
    for corner in np.eye(3):
        assert tuple(corner) in rows
    # 0.1 accumulated in floats drifts (0.1 + 0.2 != 0.3); built from integers it does not.
    assert (0.3, 0.3, 0.4) in {tuple(r) for r in grid}


def test_simplex_grid_step_that_does_not_divide_one_raises():
    with pytest.raises(ValueError, match=r"grid step 0\.3 does not divide 1; use e\.g\. 0\.25"):
        simplex_grid(3, 0.3)


@pytest.mark.parametrize("step", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_simplex_grid_step_out_of_range_raises(step):
    with pytest.raises(ValueError, match="grid step"):
        simplex_grid(3, step)


@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_simplex_grid_bad_number_of_objectives_raises(k):
    with pytest.raises(ValueError, match="number of objectives"):
        simplex_grid(k, 0.5)


# ---------------------------------------------------------------------------------------------
# sample_dirichlet


@pytest.mark.parametrize("alpha", [1.0, 0.3, 5.0, [0.5, 1.0, 2.0]])
def test_sample_dirichlet_rows_on_simplex(alpha):
    w = sample_dirichlet(3, 200, alpha=alpha, rng=0)
    assert w.shape == (200, 3)
    assert np.all(w >= 0)
    assert_allclose(w.sum(axis=1), np.ones(200), rtol=0, atol=1e-12)


def test_sample_dirichlet_seed_reproducible_and_generator_accepted():
    assert_array_equal(sample_dirichlet(2, 5, rng=7), sample_dirichlet(2, 5, rng=7))
    assert_array_equal(
        sample_dirichlet(2, 5, rng=np.random.default_rng(7)), sample_dirichlet(2, 5, rng=7)
    )
    assert sample_dirichlet(4, 0, rng=0).shape == (0, 4)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), [1.0, 0.0]])
def test_sample_dirichlet_non_positive_alpha_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        sample_dirichlet(2, 3, alpha=alpha, rng=0)


def test_sample_dirichlet_alpha_of_wrong_length_raises():
    with pytest.raises(ValueError, match="one number or 3 numbers"):
        sample_dirichlet(3, 3, alpha=[1.0, 1.0], rng=0)


# ---------------------------------------------------------------------------------------------
# non_dominated


def test_non_dominated_hand_example():
    points = np.array(
        [
            [1.0, 3.0],  # 0: best on objective 2 -> kept
            [2.0, 2.0],  # 1: nobody is >= (2, 2) with one strict -> kept
            [2.0, 2.0],  # 2: duplicate of 1; equal points do not dominate each other -> kept
            [3.0, 1.0],  # 3: best on objective 1 -> kept
            [1.0, 1.0],  # 4: dominated by (2, 2)
            [3.0, 0.5],  # 5: dominated by (3, 1): equal first, worse second
            [0.0, 3.0],  # 6: dominated by (1, 3)
        ]
    )
    assert_array_equal(non_dominated(points), [True, True, True, True, False, False, False])


def test_non_dominated_edge_cases():
    assert_array_equal(non_dominated(np.zeros((0, 2))), np.zeros(0, dtype=bool))
    assert_array_equal(non_dominated([[5.0, 5.0]]), [True])
    # One objective: only the maximum (all copies of it) survives.
    assert_array_equal(non_dominated([[1.0], [3.0], [3.0], [2.0]]), [False, True, True, False])


def _brute_force_non_dominated(points):
    geq = np.all(points[None, :, :] >= points[:, None, :], axis=2)  # (i, j): p_j >= p_i
    gt = np.any(points[None, :, :] > points[:, None, :], axis=2)  # (i, j): p_j > p_i somewhere
    return ~np.any(geq & gt, axis=1)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("m", [2, 3, 4])
def test_non_dominated_matches_brute_force(seed, m):
    # Small integer coordinates force ties and duplicates.
    points = np.random.default_rng(seed).integers(0, 4, size=(12, m)).astype(float)
    assert_array_equal(non_dominated(points), _brute_force_non_dominated(points))


# ---------------------------------------------------------------------------------------------
# hypervolume


def test_hypervolume_2d_hand_example():
    # Staircase (1, 3), (2, 2), (3, 1) above r = (0, 0); sweep along objective 1:
    #   x in [0, 1]: height 3 -> 3
    #   x in [1, 2]: height 2 -> 2
    #   x in [2, 3]: height 1 -> 1            total 6
    front = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(front, [0.0, 0.0]) == pytest.approx(6.0)
    # A dominated point, a duplicate, a point below r and one on r's boundary change nothing.
    extra = np.array([[1.0, 1.0], [2.0, 2.0], [5.0, -1.0], [5.0, 0.0]])
    assert hypervolume(np.vstack([front, extra]), [0.0, 0.0]) == pytest.approx(6.0)
    # Moving r to (1, 1): only (2, 2) still has a box, [1, 2] x [1, 2] -> 1.
    assert hypervolume(front, [1.0, 1.0]) == pytest.approx(1.0)


def test_hypervolume_3d_hand_example():
    # One box: 1 * 2 * 3 = 6.
    assert hypervolume([[1.0, 2.0, 3.0]], [0.0, 0.0, 0.0]) == pytest.approx(6.0)
    # (2, 1, 1) and (1, 2, 1): boxes of volume 2 each overlapping in [0,1]^3 -> 2 + 2 - 1 = 3.
    assert hypervolume([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]], [0, 0, 0]) == pytest.approx(3.0)
    # Non-zero reference: (3, 3, 3) above r = (1, 2, 0) spans 2 * 1 * 3 = 6.
    assert hypervolume([[3.0, 3.0, 3.0]], [1.0, 2.0, 0.0]) == pytest.approx(6.0)


def test_hypervolume_nothing_better_than_reference_is_zero():
    assert hypervolume([[1.0, 5.0], [-1.0, 0.5]], [1.0, 0.0]) == 0.0
    assert hypervolume(np.zeros((0, 2)), [0.0, 0.0]) == 0.0


def test_hypervolume_one_objective_is_longest_segment():
    assert hypervolume([[0.5], [2.0], [-3.0]], [0.0]) == pytest.approx(2.0)


def _brute_force_hypervolume(points, ref):
    # Each box [r, p] has its corners on the grid of the distinct coordinates of r and the points
    # above r, so the union is exactly a union of that grid's cells. A cell is covered when some
    # point is >= its upper corner (its lower corner is >= r by construction).
    inside = points[np.all(points > ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    axes = [np.unique(np.append(inside[:, j], ref[j])) for j in range(len(ref))]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        lower = np.array([a[c] for a, c in zip(axes, cell, strict=True)])
        upper = np.array([a[c + 1] for a, c in zip(axes, cell, strict=True)])
        if np.any(np.all(inside >= upper, axis=1)):
            total += float(np.prod(upper - lower))
    return total


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_matches_brute_force_union(seed, m):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    if seed % 2:
        points = rng.integers(-1, 4, size=(n, m)).astype(float)  # ties, duplicates, points <= r
    else:
        points = rng.uniform(-0.5, 2.0, size=(n, m))
    ref = rng.uniform(-0.5, 0.5, size=m) if seed % 3 == 0 else np.zeros(m)
    expected = _brute_force_hypervolume(points, ref)
    assert hypervolume(points, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("points", "ref", "message"),
    [
        ([1.0, 2.0], [0.0, 0.0], "2-D array"),
        ([[1.0, 2.0]], [0.0], "one value per objective"),
        ([[1.0, float("nan")]], [0.0, 0.0], "finite"),
        ([[1.0, 2.0]], [0.0, float("-inf")], "finite"),
        ([["a", "b"]], [0.0, 0.0], "numeric"),
    ],
)
def test_hypervolume_bad_input_raises(points, ref, message):
    with pytest.raises(ValueError, match=message):
        hypervolume(points, ref)


# ---------------------------------------------------------------------------------------------
# steerability


def test_steerability_perfect_reversed_and_constant():
    weights = simplex_grid(2, 0.25)  # w_1 = 0, .25, .5, .75, 1 and w_2 = 1 - w_1
    # Objective 1 rises with w_1 through a non-linear map -> rho = 1 (ranks agree exactly).
    # Objective 2 falls as w_2 rises -> rho = -1.
    perfect_and_reversed = np.stack([np.exp(weights[:, 0]), -(weights[:, 1] ** 3)], axis=1)
    assert_allclose(steerability(weights, perfect_and_reversed), [1.0, -1.0], rtol=0, atol=1e-12)
    # A reward that never moves has no ranking: 0.0, not NaN, and no scipy warning.
    constant = np.stack([weights[:, 0], np.full(5, 0.7)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rho = steerability(weights, constant)
    assert_allclose(rho, [1.0, 0.0], rtol=0, atol=1e-12)
    assert rho[1] == 0.0


def test_steerability_constant_weight_column_is_zero():
    # Objective 2's weight is never varied, so its slider cannot be judged.
    weights = np.array([[0.0, 0.5], [0.25, 0.5], [0.5, 0.5]])
    rewards = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    rho = steerability(weights, rewards)
    assert_allclose(rho, [1.0, 0.0], rtol=0, atol=1e-12)
    assert rho[1] == 0.0


def test_steerability_hand_example_with_one_swap():
    # w = (0, .5, 1) has ranks (1, 2, 3); rewards (1, 3, 2) have ranks (1, 3, 2).
    # rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    weights = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    rewards = np.array([[1.0, 1.0], [3.0, 2.0], [2.0, 3.0]])
    # Objective 2: w_2 ranks (3, 2, 1) against rewards ranks (1, 2, 3) -> -1.
    assert_allclose(steerability(weights, rewards), [0.5, -1.0], rtol=0, atol=1e-12)


def test_steerability_bad_input_raises():
    with pytest.raises(ValueError, match="same shape"):
        steerability(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2 weightings"):
        steerability(np.ones((1, 2)), np.ones((1, 2)))


# ---------------------------------------------------------------------------------------------
# dominated_share


def test_dominated_share_hand_example():
    a = np.array(
        [
            [1.0, 1.0],  # dominated by B's (2, 2)
            [2.0, 2.0],  # equal to B's (2, 2): not counted
            [3.0, 0.0],  # dominated by B's (3, 0.5): equal first, better second
            [0.0, 3.0],  # nothing in B reaches 3 on objective 2
        ]
    )
    b = np.array([[2.0, 2.0], [3.0, 0.5], [1.0, 1.5]])  # (1, 1.5) is off B's front
    # 2 of A's 4 points -> 0.5
    assert dominated_share(a, b) == pytest.approx(0.5)
    # B's front: (2, 2) vs A's front (2, 2), (3, 0), (0, 3): (3, 0.5) is not dominated by (3, 0);
    # only (1, 1.5) is dominated (by (2, 2)) -> 1 of 3.
    assert dominated_share(b, a) == pytest.approx(1 / 3)


def test_dominated_share_against_itself_is_share_of_dominated_points():
    points = np.random.default_rng(0).integers(0, 5, size=(30, 3)).astype(float)
    expected = 1.0 - non_dominated(points).mean()
    assert dominated_share(points, points) == pytest.approx(expected)


def test_dominated_share_edge_cases():
    assert dominated_share([[1.0, 1.0]], np.zeros((0, 2))) == 0.0
    with pytest.raises(ValueError, match="empty"):
        dominated_share(np.zeros((0, 2)), [[1.0, 1.0]])
    with pytest.raises(ValueError, match="same number of objectives"):
        dominated_share([[1.0, 1.0]], [[1.0, 1.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# front_for_plot


def test_front_for_plot_hand_example():
    points = np.array(
        [
            [3.0, 1.0],  # 0: front
            [1.0, 3.0],  # 1: front
            [2.0, 2.0],  # 2: front
            [1.0, 1.0],  # 3: dominated by (2, 2)
            [2.0, 2.0],  # 4: duplicate of 2, drawn once
            [0.0, 2.5],  # 5: dominated by (1, 3)
        ]
    )
    # Front sorted by objective 1: (1, 3) idx 1, (2, 2) idx 2, (3, 1) idx 0.
    order = front_for_plot(points)
    assert_array_equal(order, [1, 2, 0])
    # Objective 2 falls along the line, as a maximisation front must.
    assert np.all(np.diff(points[order, 1]) < 0)


def test_front_for_plot_edge_cases():
    assert_array_equal(front_for_plot(np.zeros((0, 2))), np.zeros(0, dtype=np.int64))
    assert_array_equal(front_for_plot([[1.0, 1.0], [1.0, 1.0]]), [0])


# ---------------------------------------------------------------------------------------------
# module hygiene


def test_import_does_not_load_torch():
    # The app and the storage layer import this module; pulling in torch would cost seconds.
    root = Path(__file__).resolve().parents[3]
    code = "import sys, steering.evaluation.pareto; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
