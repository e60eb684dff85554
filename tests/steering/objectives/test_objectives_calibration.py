"""Calibration z-scores, their JSON round trip, and the Spearman correlation table."""

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from steering.errors import UserError
from steering.objectives import (
    CALIBRATION_FILENAME,
    Calibration,
    correlation_table,
    fit_calibration,
    load_calibration,
)
from steering.objectives.calibration import STD_FLOOR


def test_fit_by_hand():
    # x = 1, 2, 3, 4, 5: mean 3, population std sqrt((4+1+0+1+4)/5) = sqrt(2).
    # Linear-interpolated quantiles: q05 = 1 + 0.05*4 = 1.2, q50 = 3, q95 = 1 + 0.95*4 = 4.8.
    calibration = fit_calibration({"a": [1, 2, 3, 4, 5]})
    s = calibration.stats["a"]
    assert (s.mean, s.q05, s.q50, s.q95, s.count) == pytest.approx((3, 1.2, 3, 4.8, 5))
    assert s.std == pytest.approx(np.sqrt(2))
    z = calibration.normalise({"a": np.array([3.0, 3 + np.sqrt(2)])})["a"]
    np.testing.assert_allclose(z, [0.0, 1.0])


def test_normalised_calibration_samples_have_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    raw = {"positivity": rng.uniform(-1, 1, 300), "fluency": rng.normal(-3, 0.5, 300)}
    z = fit_calibration(raw).normalise(raw)
    for values in z.values():
        assert values.mean() == pytest.approx(0, abs=1e-9)
        assert values.std() == pytest.approx(1)


def test_constant_objective_uses_the_std_floor():
    calibration = fit_calibration({"conciseness": [0.5] * 10})
    assert calibration.stats["conciseness"].std == STD_FLOOR
    z = calibration.normalise({"conciseness": [0.5, 0.5 + STD_FLOOR]})["conciseness"]
    np.testing.assert_allclose(z, [0.0, 1.0])
    assert np.all(np.isfinite(z))


def test_normalise_refuses_uncalibrated_objectives_and_fit_refuses_bad_input():
    calibration = fit_calibration({"a": [0.0, 1.0]})
    with pytest.raises(UserError, match="'b' has no calibration; calibrated objectives: a"):
        calibration.normalise({"b": [1.0]})
    with pytest.raises(UserError, match="at least 2"):
        fit_calibration({"a": [1.0]})
    with pytest.raises(UserError, match="NaN"):
        fit_calibration({"a": [1.0, float("nan")]})


def test_save_and_load_round_trip_in_an_adapter_directory(tmp_path):
    calibration = fit_calibration({"a": [1.0, 2.0, 4.0], "b": [0.0, 0.0, 1.0]})
    written = calibration.save(tmp_path / "adapters")
    assert written == tmp_path / "adapters" / CALIBRATION_FILENAME
    assert set(json.loads(written.read_text())["objectives"]) == {"a", "b"}
    assert load_calibration(tmp_path / "adapters") == calibration
    assert load_calibration(written) == calibration
    assert isinstance(calibration, Calibration)
    with pytest.raises(AttributeError):
        calibration.stats = {}  # frozen


def test_loading_a_missing_or_corrupt_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no calibration file"):
        load_calibration(tmp_path)
    (tmp_path / CALIBRATION_FILENAME).write_text("{not json")
    with pytest.raises(UserError, match="not a valid calibration file"):
        load_calibration(tmp_path)


def test_correlation_table_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    table = correlation_table(
        {"up": x, "down": -x, "squares": x**2, "flat": np.ones(5), "wiggle": [2, 1, 4, 3, 5]}
    )
    i = {name: k for k, name in enumerate(table.names)}
    assert table.count == 5
    assert table.rho[i["up"], i["down"]] == pytest.approx(-1.0)
    assert table.rho[i["up"], i["squares"]] == pytest.approx(1.0)  # ranks only
    assert table.rho[i["up"], i["flat"]] == 0.0  # constant: reported as 0, not NaN
    assert table.rho[i["flat"], i["flat"]] == 1.0
    # ranks 2,1,4,3,5 vs 1..5: d = 1,1,1,1,0, rho = 1 - 6*4 / (5*24) = 0.8
    assert table.rho[i["up"], i["wiggle"]] == pytest.approx(0.8)
    np.testing.assert_allclose(table.rho, table.rho.T)


def test_correlation_table_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, 50).astype(float)
    b = a + rng.normal(0, 1, 50)
    table = correlation_table({"a": a, "b": b})
    assert table.rho[0, 1] == pytest.approx(spearmanr(a, b).statistic)
    assert table.pairs() == [("a", "b", pytest.approx(table.rho[0, 1]))]
    assert table.to_markdown().splitlines()[0] == "| | a | b |"
    assert json.loads(json.dumps(table.to_json()))["names"] == ["a", "b"]


def test_correlation_table_refuses_mismatched_lengths():
    with pytest.raises(UserError, match="same samples"):
        correlation_table({"a": [1, 2, 3], "b": [1, 2]})
