"""Scenario grids: the published shapes (Derive PMRM, Deribit PM, SPAN-16) and vol shocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.scenarios import (
    TAIL_MOVES,
    AbsoluteVolShock,
    ScenarioGrid,
    TermPowerVolShock,
    deribit_pm_grid,
    derive_pmrm_grid,
    span16_grid,
)

DAY = 1.0 / 365.0

# ---------------------------------------------------------------- Derive PMRM


def test_derive_grid_shape_and_moves() -> None:
    grid = derive_pmrm_grid()
    assert grid.n_scenarios == 31  # 7 x 3 + 2 (the +-18 % ends vol-up only) + 8 tails
    mult = grid.spot_multipliers(2)
    assert mult.shape == (2, 31)
    regular = mult[0, :23]
    expected = {1.18, 1.135, 1.09, 1.045, 1.0, 0.955, 0.91, 0.865, 0.82}
    assert set(np.round(regular, 6)) == expected
    direction = grid.direction_array()
    for end in (1.18, 0.82):
        at = np.isclose(regular, end)
        assert at.sum() == 1
        assert direction[:23][at][0] == 1
    for inner in (1.135, 1.0, 0.865):
        assert sorted(direction[:23][np.isclose(regular, inner)]) == [-1, 0, 1]
    np.testing.assert_allclose(mult[0, 23:], 1.0 + np.array(TAIL_MOVES))
    assert not grid.short_otm_array().any()


def test_derive_tail_weights_by_hand() -> None:
    weights = derive_pmrm_grid().weight_array()
    np.testing.assert_array_equal(weights[:23], 1.0)
    # 0.77 x 0.18 / 0.66 = 0.21; 0.77 x 0.18 / 5 = 0.02772
    assert weights[23] == pytest.approx(0.21)
    assert weights[-1] == pytest.approx(0.02772)
    assert (weights[23:] <= 1.0).all()


def test_derive_vol_shock_by_hand() -> None:
    shock = TermPowerVolShock()
    # T = 30 d: x = 1 -> up 0.6 x 1.5 = 0.9, down 0.6 x 0.7 = 0.42
    up, down = shock.shocked(0.6, 30 * DAY)
    assert (float(up), float(down)) == pytest.approx((0.9, 0.42))
    # T = 7.5 d (short-term power 0.3): x = 4^0.3
    x = 4.0**0.3
    up, down = shock.shocked(0.6, 7.5 * DAY)
    assert (float(up), float(down)) == pytest.approx((0.6 * (1 + 0.5 * x), 0.6 * (1 - 0.3 * x)))
    # T = 120 d (long-term power 0.13): x = 0.25^0.13
    x = 0.25**0.13
    up, _ = shock.shocked(0.6, 120 * DAY)
    assert float(up) == pytest.approx(0.6 * (1 + 0.5 * x))
    # T below the 1-day floor behaves like 1 day; a low vol's up-shock is floored at 0.4
    assert shock.shocked(0.6, 0.1 * DAY)[0] == pytest.approx(shock.shocked(0.6, DAY)[0])
    assert float(shock.shocked(0.1, 1.0)[0]) == pytest.approx(0.4)
    # down-shock never negative: x = 30^0.3 = 2.77 > 1 / 0.3 needs range_down 0.4
    assert float(TermPowerVolShock(range_down=0.4).shocked(0.5, DAY)[1]) == 0.0


def test_shocked_vols_depend_on_each_options_expiry() -> None:
    grid = derive_pmrm_grid()
    vols = grid.shocked_vols(np.array([0.6, 0.6]), np.array([2 * DAY, 180 * DAY]))
    assert vols.shape == (2, 31)
    direction = grid.direction_array()
    np.testing.assert_array_equal(vols[:, direction == 0], 0.6)
    short_up, long_up = vols[:, 0]
    assert short_up > long_up > 0.6  # short-dated vol moves more


@settings(max_examples=60, deadline=None)
@given(
    vol=st.floats(0.0, 5.0),
    t=st.floats(0.0, 5.0),
    grid=st.sampled_from([derive_pmrm_grid(), deribit_pm_grid(), span16_grid()]),
)
def test_vol_shocks_bracket_the_vol(vol: float, t: float, grid: ScenarioGrid) -> None:
    vols = grid.shocked_vols(np.array([vol]), np.array([t]))[0]
    direction = grid.direction_array()
    assert (vols[direction > 0] >= vol).all()
    assert (vols[direction == 0] == vol).all()
    assert ((vols[direction < 0] <= vol) & (vols[direction < 0] >= 0.0)).all()


# ---------------------------------------------------------------- Deribit PM


def test_deribit_grid_shape() -> None:
    grid = deribit_pm_grid()
    assert grid.n_scenarios == 27 + 8
    moves = np.asarray(grid.moves)
    np.testing.assert_allclose(np.unique(moves[:27]), np.linspace(-0.16, 0.16, 9))
    assert 0.0 in moves[:27]
    assert (np.bincount(grid.direction_array()[:27] + 1) == 9).all()
    assert grid.short_otm_array()[27:].all()
    assert not grid.short_otm_array()[:27].any()
    np.testing.assert_allclose(moves[27:], TAIL_MOVES)
    np.testing.assert_array_equal(grid.direction_array()[27:], 1)  # extended: vol up
    # dampened by range / |move|: -33 % -> 0.16 / 0.33
    assert grid.weight_array()[28] == pytest.approx(0.16 / 0.33)


# ---------------------------------------------------------------- SPAN-16


def test_span16_by_hand() -> None:
    grid = span16_grid(scan_range=0.15, vol_shock=AbsoluteVolShock(0.1, 0.1))
    mult = grid.spot_multipliers(1)[0]
    expected = [1.0, 1.05, 0.95, 1.10, 0.90, 1.15, 0.85]
    np.testing.assert_allclose(np.unique(mult[:14]), sorted(expected))
    np.testing.assert_allclose(mult[14:], [1.30, 0.70])
    np.testing.assert_allclose(grid.weight_array()[14:], 0.35)
    np.testing.assert_array_equal(grid.direction_array()[14:], 0)
    vols = grid.shocked_vols(np.array([0.05]), np.array([0.1]))[0]
    assert set(np.round(vols[:14], 12)) == {0.15, 0.0}  # 0.05 +- 0.10, floored at 0


@settings(max_examples=40, deadline=None)
@given(
    scan=st.floats(0.01, 0.45),
    per_underlying=st.lists(st.floats(0.01, 0.45), max_size=4),
)
def test_span16_always_has_16_scenarios(scan: float, per_underlying: list[float]) -> None:
    grid = span16_grid(scan_range=scan, scan_range_by_underlying=tuple(per_underlying))
    assert grid.n_scenarios == 16
    mult = grid.spot_multipliers(5)
    assert mult.shape == (5, 16)
    ranges = [*per_underlying, scan, scan, scan, scan, scan][:5]
    np.testing.assert_allclose(mult[:, -2], 1.0 + 2.0 * np.array(ranges))


def test_grid_validation() -> None:
    with pytest.raises(ValueError, match="share one length"):
        ScenarioGrid("bad", "", (0.1, 0.2), (1,), (1.0, 1.0), (False, False), AbsoluteVolShock())
    with pytest.raises(ValueError, match="weights"):
        ScenarioGrid("bad", "", (0.1,), (1,), (1.5,), (False,), AbsoluteVolShock())
    with pytest.raises(ValueError, match="<= 0"):
        span16_grid(scan_range=0.6).spot_multipliers(1)
