"""Implied vol: round trips to 1e-10 over a wide grid, reasons for unusable prices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr  # type: ignore[import-untyped]

from aggregation.black76 import black76
from aggregation.implied_vol import (
    ImpliedVolResult,
    IVReason,
    implied_vol,
    normalised_otm_call,
    normalised_vega,
)

EPS = np.finfo(np.float64).eps


def _informative(  # noqa: PLR0917
    forward: float,
    strike: np.ndarray,
    t: np.ndarray,
    vol: np.ndarray,
    rate: float,
    is_call: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Prices, and where they carry the vol to 1e-10: where the price's own rounding
    (eps of the price; eps of max(F, K) for an in-the-money price, which is the difference
    of two large terms) moves the vol by less than 1e-12, i.e. vega is not negligible."""
    g = black76(forward, strike, t, vol, rate, is_call)
    df = np.exp(-rate * t)
    in_the_money = np.where(is_call, forward > strike, strike > forward)
    rounding = EPS * (g.price + np.where(in_the_money, df * np.maximum(forward, strike), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 where both underflow
        informative = rounding / (g.vega * 100.0) < 1e-12  # vega per 1.00 of vol
    # (near-)subnormal prices have lost relative precision: implied_vol says NO_INFORMATION
    return g.price, informative & (g.price >= 1e-300)


def test_round_trip_wide_grid() -> None:
    # strikes 0.2F..5F, expiries 1 hour..3 years, vols 5 %..300 %, calls and puts
    k, t, v, call = (
        a.ravel()
        for a in np.meshgrid(
            np.geomspace(0.2, 5.0, 61),
            np.geomspace(1 / 8760, 3.0, 31),
            np.geomspace(0.05, 3.0, 31),
            [True, False],
            indexing="ij",
        )
    )
    price, informative = _informative(1.0, k, t, v, 0.03, call)
    res = implied_vol(price, 1.0, k, t, 0.03, call)
    assert informative.mean() > 0.25  # the grid reaches far into the wings on purpose
    assert np.all(res.reason[informative] == IVReason.OK)
    assert np.all(res.reason[~res.ok] == IVReason.NO_INFORMATION)
    error = np.abs(res.vol - v)[informative]
    assert error.max() <= 1e-10
    # where the price carries less information the solve still lands near the vol
    ok = res.ok & ~informative
    assert np.all(np.abs(res.vol[ok] - v[ok]) < 0.05)


def test_round_trip_at_the_money_and_usd_scale() -> None:
    f = 3000.0
    k = np.array([3000.0, 2999.99, 3000.01, 1500.0, 6000.0])
    t = np.array([1 / 8760, 1 / 365, 0.25, 1.0, 2.0])
    v = np.array([0.05, 0.65, 1.2, 0.4, 2.5])
    for call in (True, False):
        price = black76(f, k, t, v, 0.05, call).price
        res = implied_vol(price, f, k, t, 0.05, call)
        np.testing.assert_allclose(res.vol, v, rtol=0, atol=1e-10)


def test_vollib_docstring_example() -> None:
    # vollib.black.implied_volatility: price 5.5811067246 (F = K = 100, t = 0.5, r = 2 %) -> 0.2
    res = implied_vol(5.5811067246048118, 100.0, 100.0, 0.5, 0.02, True)
    assert float(res.vol) == pytest.approx(0.2, abs=1e-13)


def test_agrees_with_vollib() -> None:
    vollib_iv = pytest.importorskip("vollib.black.implied_volatility")
    rng = np.random.default_rng(7)
    f, k = 2000.0, 2000.0 * rng.uniform(0.5, 2.0, 40)
    t, v = rng.uniform(0.01, 2.0, 40), rng.uniform(0.1, 1.5, 40)
    call = k > f
    price = black76(f, k, t, v, 0.01, call).price
    ours = implied_vol(price, f, k, t, 0.01, call).vol
    theirs = [
        vollib_iv.implied_volatility(p, f, kk, 0.01, tt, "c" if c else "p")
        for p, kk, tt, c in zip(price, k, t, call, strict=True)
    ]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- unusable prices


def test_reasons_for_unusable_prices() -> None:
    f, k, t, r = 100.0, 80.0, 0.5, 0.05
    df = np.exp(-r * t)
    cases = [
        (df * 19.0, f, k, t, True, IVReason.BELOW_INTRINSIC),  # call below df (F - K)
        (-0.01, f, 120.0, t, True, IVReason.BELOW_INTRINSIC),  # negative price
        (df * f, f, k, t, True, IVReason.ABOVE_MAX),  # call worth the forward
        (df * k * 1.01, f, k, t, False, IVReason.ABOVE_MAX),  # put above df K
        (5.0, f, k, 0.0, True, IVReason.ZERO_TIME),
        (5.0, f, k, -0.1, True, IVReason.ZERO_TIME),
        (0.0, f, 150.0, t, True, IVReason.NO_INFORMATION),  # OTM worth nothing
        (df * 20.0, f, k, t, True, IVReason.NO_INFORMATION),  # exactly intrinsic
        (np.nan, f, k, t, True, IVReason.INVALID_INPUT),
        (5.0, 0.0, k, t, True, IVReason.INVALID_INPUT),
        (5.0, f, -1.0, t, True, IVReason.INVALID_INPUT),
        (5.0, f, k, np.inf, True, IVReason.INVALID_INPUT),
    ]
    price, fwd, strike, tt, call, expected = (np.array(c) for c in zip(*cases, strict=True))
    res = implied_vol(price, fwd, strike, tt, r, call.astype(bool))
    assert isinstance(res, ImpliedVolResult)
    np.testing.assert_array_equal(res.reason, expected.astype(np.int8))
    assert np.all(np.isnan(res.vol))
    assert not res.ok.any()


def test_shapes_follow_broadcasting() -> None:
    price = black76(100.0, [[90.0], [110.0]], [0.1, 0.5, 1.0], 0.4, 0.0, True).price
    res = implied_vol(price, 100.0, [[90.0], [110.0]], [0.1, 0.5, 1.0], 0.0, True)
    assert res.vol.shape == res.reason.shape == (2, 3)
    np.testing.assert_allclose(res.vol, 0.4, atol=1e-12)
    scalar = implied_vol(float(price[0, 0]), 100.0, 90.0, 0.1, 0.0, True)
    assert scalar.vol.shape == ()


# ---------------------------------------------------------------- normalised function


def test_normalised_call_regions_agree_with_direct_formula() -> None:
    # away from cancellation the plain formula is exact: every region must agree with it
    x = -np.array([0.01, 0.3, 1.0, 2.0, 0.05, 0.5])
    s = np.array([0.05, 0.3, 0.5, 3.0, 0.001, 0.1])
    direct = np.exp(x / 2) * ndtr(x / s + s / 2) - np.exp(-x / 2) * ndtr(x / s - s / 2)
    np.testing.assert_allclose(normalised_otm_call(x, s), direct, rtol=1e-10)
    h = 1e-7
    fd = (normalised_otm_call(x, s + h) - normalised_otm_call(x, s - h)) / (2 * h)
    np.testing.assert_allclose(normalised_vega(x, s), fd, rtol=1e-6)


@settings(max_examples=150, deadline=None)
@given(
    moneyness=st.floats(min_value=0.2, max_value=5.0),
    t=st.floats(min_value=1 / 8760, max_value=3.0),
    vol=st.floats(min_value=0.05, max_value=3.0),
    rate=st.floats(min_value=-0.02, max_value=0.15),
    is_call=st.booleans(),
)
def test_round_trip_property(
    moneyness: float, t: float, vol: float, rate: float, is_call: bool
) -> None:
    k = np.array([moneyness])
    price, informative = _informative(
        1.0, k, np.array([t]), np.array([vol]), rate, np.array([is_call])
    )
    res = implied_vol(price, 1.0, k, t, rate, is_call)
    if informative[0]:
        assert res.reason[0] == IVReason.OK
        assert abs(res.vol[0] - vol) <= 1e-10
    else:
        assert res.reason[0] in (IVReason.OK, IVReason.NO_INFORMATION)
