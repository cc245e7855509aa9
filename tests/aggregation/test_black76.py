"""Black-76 prices and Greeks: textbook values, finite differences, parity, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.black76 import DAYS_PER_YEAR, VOL_POINT, Greeks, black76

# ---------------------------------------------------------------- published values


def test_haug_black76_example() -> None:
    # Haug, "The Complete Guide to Option Pricing Formulas", 2nd ed. (2007), section 1.1.3:
    # futures option, F = K = 19, T = 0.75, r = 10 %, vol = 28 %  ->  c = p = 1.7011.
    g = black76(19.0, 19.0, 0.75, 0.28, 0.10, [True, False])
    np.testing.assert_allclose(g.price, [1.7011, 1.7011], atol=5e-5)


def test_hull_crude_oil_put() -> None:
    # Hull, "Options, Futures, and Other Derivatives", chapter "Futures options" (Black's
    # model example): European put on crude-oil futures, F = K = 20, T = 4 months,
    # r = 9 %, vol = 25 %  ->  1.12.
    g = black76(20.0, 20.0, 4.0 / 12.0, 0.25, 0.09, False)
    assert float(g.price) == pytest.approx(1.12, abs=5e-3)


def test_haug_futures_delta_example() -> None:
    # Haug (2007), section 2.1.1 (delta, Black-76 case b = 0): F = 105, K = 100, T = 0.5,
    # r = 10 %, vol = 36 %  ->  call delta 0.5946, put delta -0.3566.
    g = black76(105.0, 100.0, 0.5, 0.36, 0.10, [True, False])
    np.testing.assert_allclose(g.delta, [0.5946, -0.3566], atol=5e-5)


def test_vollib_docstring_value() -> None:
    # vollib.black.black('c', F=100, K=100, t=0.5, r=0.02, sigma=0.2) = 5.5811067246048118
    assert float(black76(100.0, 100.0, 0.5, 0.2, 0.02, True).price) == pytest.approx(
        5.5811067246048118, rel=1e-14
    )


# ---------------------------------------------------------------- finite differences

GRID = {
    "forward": np.array([100.0, 100.0, 100.0, 3000.0, 3000.0, 50.0]),
    "strike": np.array([100.0, 80.0, 130.0, 2500.0, 4000.0, 55.0]),
    "t_years": np.array([1.0, 0.25, 0.5, 7 / 365, 1.5, 0.1]),
    "vol": np.array([0.2, 0.5, 0.8, 0.65, 1.2, 0.3]),
    "rate": np.array([0.05, 0.0, 0.03, 0.05, 0.1, 0.02]),
}


@pytest.mark.parametrize("is_call", [True, False])
def test_greeks_match_central_differences(is_call: bool) -> None:
    f, k, t, v, r = (GRID[n] for n in ("forward", "strike", "t_years", "vol", "rate"))
    g = black76(f, k, t, v, r, is_call)

    def price(**bump: np.ndarray) -> np.ndarray:
        args = {"forward": f, "strike": k, "t_years": t, "vol": v, "rate": r} | bump
        return black76(**args, is_call=is_call).price

    def delta(**bump: np.ndarray) -> np.ndarray:
        args = {"forward": f, "strike": k, "t_years": t, "vol": v, "rate": r} | bump
        return black76(**args, is_call=is_call).delta

    def vega(**bump: np.ndarray) -> np.ndarray:
        args = {"forward": f, "strike": k, "t_years": t, "vol": v, "rate": r} | bump
        return black76(**args, is_call=is_call).vega

    hf, hv, ht = f * 1e-5, 1e-5, 1e-6
    fd_delta = (price(forward=f + hf) - price(forward=f - hf)) / (2 * hf)
    fd_gamma = (delta(forward=f + hf) - delta(forward=f - hf)) / (2 * hf)
    fd_vega = (price(vol=v + hv) - price(vol=v - hv)) / (2 * hv) * VOL_POINT
    # theta: value change per calendar day as expiry approaches (forward held fixed)
    fd_theta = -(price(t_years=t + ht) - price(t_years=t - ht)) / (2 * ht) / DAYS_PER_YEAR
    fd_vanna = (delta(vol=v + hv) - delta(vol=v - hv)) / (2 * hv) * VOL_POINT
    fd_volga = (vega(vol=v + hv) - vega(vol=v - hv)) / (2 * hv) * VOL_POINT
    np.testing.assert_allclose(g.delta, fd_delta, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(g.gamma, fd_gamma, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(g.vega, fd_vega, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(g.theta, fd_theta, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(g.vanna, fd_vanna, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(g.volga, fd_volga, rtol=1e-4, atol=1e-10)


def test_put_call_parity_and_delta_gap() -> None:
    f, k, t, v, r = (GRID[n] for n in ("forward", "strike", "t_years", "vol", "rate"))
    call, put = black76(f, k, t, v, r, True), black76(f, k, t, v, r, False)
    df = np.exp(-r * t)
    np.testing.assert_allclose(call.price - put.price, df * (f - k), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(call.delta - put.delta, df, rtol=1e-14)
    for name in ("gamma", "vega", "vanna", "volga"):
        np.testing.assert_allclose(getattr(call, name), getattr(put, name), rtol=1e-12)


def test_long_vanilla_theta_is_negative_without_carry() -> None:
    g = black76(100.0, [80.0, 100.0, 120.0], 0.5, 0.6, 0.0, [True, False, True])
    assert np.all(g.theta < 0.0)


# ---------------------------------------------------------------- shapes and edge cases


def test_broadcasting_and_scalar_shapes() -> None:
    g = black76(100.0, np.array([[90.0], [110.0]]), np.array([0.1, 0.2, 0.3]), 0.5, 0.0, True)
    assert isinstance(g, Greeks)
    assert all(field.shape == (2, 3) for field in g)
    s = black76(100.0, 100.0, 1.0, 0.2, 0.0, True)
    assert all(field.shape == () for field in s)


def test_expiry_and_zero_vol_limits_without_warnings() -> None:
    # pytest runs with filterwarnings=error: a RuntimeWarning here fails the test
    f = 100.0
    k = np.array([90.0, 100.0, 110.0, 90.0, 100.0, 110.0])
    call = np.array([True, True, True, False, False, False])
    at_expiry = black76(f, k, 0.0, 0.5, 0.05, call)
    np.testing.assert_array_equal(at_expiry.price, [10.0, 0.0, 0.0, 0.0, 0.0, 10.0])
    np.testing.assert_array_equal(at_expiry.delta, [1.0, 0.5, 0.0, 0.0, -0.5, -1.0])
    for name in ("gamma", "vega", "theta", "vanna", "volga"):
        np.testing.assert_array_equal(getattr(at_expiry, name), 0.0)

    t, r = 0.5, 0.04
    df = np.exp(-r * t)
    zero_vol = black76(f, k, t, 0.0, r, call)
    np.testing.assert_allclose(zero_vol.price, df * np.array([10, 0, 0, 0, 0, 10.0]))
    np.testing.assert_allclose(zero_vol.delta, df * np.array([1, 0.5, 0, 0, -0.5, -1.0]))
    np.testing.assert_allclose(zero_vol.theta, r * zero_vol.price / 365.0)
    # vega at vol -> 0 tends to df F sqrt(t) n(0) at the money, 0 elsewhere
    atm_vega = df * f * np.sqrt(t) / np.sqrt(2 * np.pi) * VOL_POINT
    np.testing.assert_allclose(zero_vol.vega, [0, atm_vega, 0, 0, atm_vega, 0])
    assert float(black76(f, 100.0, t, 1e-9, r, True).vega) == pytest.approx(atm_vega, rel=1e-6)
    assert np.all(np.isfinite(black76(f, k, -1.0, 0.5, r, call).price))  # t < 0: expired


def test_extreme_inputs_stay_finite() -> None:
    k = np.geomspace(1e-3, 1e3, 61)
    for t in (1e-9, 1 / 8760, 30.0):
        for v in (1e-6, 0.05, 5.0):
            g = black76(1.0, k, t, v, 0.05, k > 1.0)
            assert all(np.all(np.isfinite(field)) for field in g)


# ---------------------------------------------------------------- properties

positive = st.floats(min_value=1.0, max_value=1e5)


@settings(max_examples=200, deadline=None)
@given(
    forward=positive,
    moneyness=st.floats(min_value=0.1, max_value=10.0),
    t=st.floats(min_value=0.0, max_value=5.0),
    vol=st.floats(min_value=0.0, max_value=4.0),
    rate=st.floats(min_value=-0.05, max_value=0.2),
)
def test_no_arbitrage_bounds_and_signs(
    forward: float, moneyness: float, t: float, vol: float, rate: float
) -> None:
    strike = forward * moneyness
    g = black76(forward, strike, t, vol, rate, [True, False])
    df = np.exp(-rate * t)
    slack = 1e-12 * max(forward, strike)
    c, p = (float(v) for v in g.price)
    assert df * max(forward - strike, 0.0) - slack <= c <= df * forward + slack
    assert df * max(strike - forward, 0.0) - slack <= p <= df * strike + slack
    assert -1e-15 <= g.delta[0] <= df + 1e-15
    assert -df - 1e-15 <= g.delta[1] <= 1e-15
    assert np.all(g.gamma >= 0.0)
    assert np.all(g.vega >= 0.0)
    assert float(g.delta[0] - g.delta[1]) == pytest.approx(df, rel=1e-12)
