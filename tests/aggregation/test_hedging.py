"""Delta hedge with a Whalley-Wilmott no-trade band."""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.black76 import black76
from aggregation.hedging import plan_delta_hedge, whalley_wilmott_band


class Market(TypedDict):
    spot_usd: float
    cost_fraction: float
    risk_aversion_per_usd: float


COMMON = Market(spot_usd=3000.0, cost_fraction=5e-4, risk_aversion_per_usd=1e-4)


def test_band_formula_by_hand() -> None:
    # H = (3/2 e^{-rT} lambda S Gamma^2 / gamma)^(1/3)
    h = whalley_wilmott_band(net_gamma=0.02, rate=0.05, t_years=0.5, **COMMON)
    expected = (1.5 * np.exp(-0.025) * 5e-4 * 3000.0 * 0.02**2 / 1e-4) ** (1 / 3)
    assert float(h) == pytest.approx(expected, rel=1e-14)
    # scaling laws: lambda^(1/3), Gamma^(2/3), gamma^(-1/3); sign of Gamma irrelevant
    double_cost = whalley_wilmott_band(
        net_gamma=0.02, spot_usd=3000.0, cost_fraction=1e-3, risk_aversion_per_usd=1e-4
    )
    base = whalley_wilmott_band(net_gamma=0.02, **COMMON)
    assert float(double_cost / base) == pytest.approx(2 ** (1 / 3))
    short = whalley_wilmott_band(net_gamma=-0.04, **COMMON)
    assert float(short / base) == pytest.approx(2 ** (2 / 3))


def test_inside_band_no_trade_outside_trade_to_nearest_edge() -> None:
    plan = plan_delta_hedge(
        net_delta=[10.0, 10.0, -4.0, 2.0],
        net_gamma=[0.02, 0.02, 0.02, 0.0],
        current_hedge=[-10.5, -20.0, 0.0, 0.0],
        **COMMON,
    )
    half = plan.band_half_width
    np.testing.assert_allclose(plan.target_hedge, [-10.0, -10.0, 4.0, -2.0])
    np.testing.assert_array_equal(plan.rebalance, [False, True, True, True])
    assert plan.trade[0] == 0.0
    assert plan.hedge_after[1] == pytest.approx(-10.0 - half[1])  # up to the lower edge
    assert plan.hedge_after[2] == pytest.approx(4.0 - half[2])  # up to the lower edge
    assert plan.trade[3] == pytest.approx(-2.0)  # no gamma: no band, exact neutrality
    np.testing.assert_allclose(plan.net_delta_after, [-0.5, -half[1], -half[2], 0.0])
    np.testing.assert_allclose(plan.upper - plan.lower, 2 * half)


def test_rebalance_to_target_and_zero_cost() -> None:
    full = plan_delta_hedge(
        net_delta=5.0, net_gamma=0.05, current_hedge=0.0, to_band_edge=False, **COMMON
    )
    assert bool(full.rebalance)
    assert float(full.hedge_after) == pytest.approx(-5.0)
    free = plan_delta_hedge(
        net_delta=5.0,
        net_gamma=0.05,
        current_hedge=-4.999,
        spot_usd=3000.0,
        cost_fraction=0.0,
        risk_aversion_per_usd=1e-4,
    )
    assert float(free.band_half_width) == 0.0
    assert float(free.net_delta_after) == pytest.approx(0.0, abs=1e-12)


def test_book_of_options_from_black76() -> None:
    # a short straddle book on ETH: delta and gamma from black76 times quantities
    qty = np.array([-10.0, -10.0])
    g = black76(3000.0, 3000.0, 30 / 365, 0.65, 0.05, [True, False])
    plan = plan_delta_hedge(
        net_delta=np.sum(qty * g.delta),
        net_gamma=np.sum(qty * g.gamma),
        current_hedge=0.0,
        rate=0.05,
        t_years=30 / 365,
        **COMMON,
    )
    assert float(plan.band_half_width) > 0.0
    assert abs(float(plan.net_delta_after)) <= float(plan.band_half_width) + 1e-12


@settings(max_examples=200, deadline=None)
@given(
    delta=st.floats(-1e3, 1e3),
    gamma=st.floats(-10.0, 10.0),
    hedge=st.floats(-1e3, 1e3),
    cost=st.floats(0.0, 0.01),
    to_edge=st.booleans(),
)
def test_after_trade_inside_band_with_minimal_trade(
    delta: float, gamma: float, hedge: float, cost: float, to_edge: bool
) -> None:
    plan = plan_delta_hedge(
        net_delta=delta,
        net_gamma=gamma,
        current_hedge=hedge,
        spot_usd=2000.0,
        cost_fraction=cost,
        risk_aversion_per_usd=1e-3,
        to_band_edge=to_edge,
    )
    tol = 1e-9 * (1.0 + abs(delta) + abs(hedge))
    assert plan.band_half_width >= 0.0
    assert plan.lower - tol <= plan.hedge_after <= plan.upper + tol
    if not plan.rebalance:
        assert plan.trade == 0.0
    elif to_edge:  # the nearest point of the band: distance from the hedge to the band
        gap = max(float(plan.lower) - hedge, hedge - float(plan.upper))
        assert abs(float(plan.trade)) == pytest.approx(gap, rel=1e-9, abs=tol)
