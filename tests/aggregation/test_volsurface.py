"""SVI slices and surfaces: on-chain encoding, interpolation, arbitrage reports."""

from __future__ import annotations

import numpy as np
import pytest

from aggregation.black76 import black76
from aggregation.exceptions import AggregationError, ArbitrageError, InvalidSurfaceError
from aggregation.volsurface import (
    WAD,
    SviSlice,
    VolSurface,
    durrleman_g,
    svi_total_variance,
)
from chains.deploy import svi_params
from chains.world import ATM_VOL, OPTIONS_EXPIRIES_S

YEAR_S = 365 * 86_400
NOW_S = 1_700_000_000


def oracle_surface(atm: float, *, published_s: int = NOW_S, now_s: int = NOW_S) -> VolSurface:
    """A surface from the exact integers the devnet deployer writes to the VolOracle."""
    expiries = [NOW_S + e for e in OPTIONS_EXPIRIES_S]
    params = [svi_params(atm, e - published_s) for e in expiries]
    a, b, rho, m, sigma = (list(col) for col in zip(*params, strict=True))
    return VolSurface.from_wad(
        expiry_s=expiries,
        updated_at_s=[published_s] * len(expiries),
        atm_vol_wad=[round(atm * WAD)] * len(expiries),
        svi_a=a,
        svi_b=b,
        svi_rho=rho,
        svi_m=m,
        svi_sigma=sigma,
        now_s=now_s,
    )


def test_svi_formula() -> None:
    # w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))
    w = svi_total_variance([0.0, 0.3], a=0.04, b=0.1, rho=-0.5, m=0.1, sigma=0.2)
    expected = [0.04 + 0.1 * (0.05 + np.sqrt(0.01 + 0.04)), 0.04 + 0.1 * (-0.1 + np.sqrt(0.08))]
    np.testing.assert_allclose(w, expected, rtol=1e-15)


@pytest.mark.parametrize("underlying", sorted(ATM_VOL))
def test_oracle_encoding_gives_atm_vol_at_each_expiry(underlying: str) -> None:
    # chains.deploy.svi_params writes a, b in total variance with w(0) = atm^2 T
    atm = ATM_VOL[underlying]
    surface = oracle_surface(atm)
    t = np.array(OPTIONS_EXPIRIES_S) / YEAR_S
    np.testing.assert_allclose(surface.vol(100.0, 100.0, t), atm, rtol=1e-12)
    assert surface.arbitrage == ()
    assert surface.checked() is surface
    # put skew: rho < 0 makes low strikes richer than high strikes
    smile = surface.vol([70.0, 100.0, 130.0], 100.0, t[1])
    assert smile[0] > smile[1]
    assert smile[0] > smile[2]


def test_from_wad_keeps_annualised_vol_between_updates() -> None:
    # published a day ago: total variance is carried to the shorter time left (sticky vol)
    surface = oracle_surface(0.65, published_s=NOW_S - 86_400)
    assert len(surface.slices) == 4
    t_left = (np.array(OPTIONS_EXPIRIES_S) - 0) / YEAR_S
    np.testing.assert_allclose(surface.vol(1.0, 1.0, t_left), 0.65, rtol=1e-12)
    # valued after the first expiry: that slice is dropped
    later = oracle_surface(0.65, now_s=NOW_S + 2 * 86_400)
    assert [s.expiry_s for s in later.slices] == [NOW_S + e for e in OPTIONS_EXPIRIES_S[1:]]


def test_slice_from_wad_scales_integers() -> None:
    s = SviSlice.from_wad(
        0.25,
        atm_vol_wad=650_000_000_000_000_000,
        a_wad=10**16,
        b_wad=2 * 10**16,
        rho_wad=-35 * 10**16,
        m_wad=-(10**15),
        sigma_wad=2 * 10**17,
        expiry_s=123,
    )
    assert (s.a, s.b, s.rho, s.m, s.sigma, s.atm_vol) == (0.01, 0.02, -0.35, -0.001, 0.2, 0.65)
    assert s.label() == "expiry 123 (T=0.25y)"


def test_interpolation_is_linear_in_total_variance_and_flat_outside() -> None:
    s1 = SviSlice(0.1, 0.004, 0.02, -0.3, 0.0, 0.2)
    s2 = SviSlice(0.5, 0.03, 0.05, -0.3, 0.0, 0.2)
    surface = VolSurface((s2, s1))  # any order
    assert [s.t_years for s in surface.slices] == [0.1, 0.5]
    k = np.array([-0.5, 0.0, 0.4])
    w1, w2 = s1.total_variance(k), s2.total_variance(k)
    np.testing.assert_allclose(surface.total_variance(k, 0.3), 0.5 * (w1 + w2), rtol=1e-14)
    np.testing.assert_allclose(surface.total_variance(k, 0.1), w1, rtol=1e-14)
    vol = surface.vol(np.exp(k), 1.0, 0.5)
    np.testing.assert_allclose(vol, np.sqrt(w2 / 0.5), rtol=1e-14)
    # flat vol before the first and after the last slice
    np.testing.assert_allclose(surface.vol(np.exp(k), 1.0, 0.01), np.sqrt(w1 / 0.1), rtol=1e-14)
    np.testing.assert_allclose(surface.vol(np.exp(k), 1.0, 3.0), np.sqrt(w2 / 0.5), rtol=1e-14)
    assert surface.vol(np.exp(k), 1.0, 0.0).shape == (3,)  # expired: first slice's vol
    grid = surface.vol(np.exp(k)[:, None], 1.0, np.array([0.05, 0.2, 1.0]))
    assert grid.shape == (3, 3)


def test_butterfly_violation_is_reported_with_slice_and_k() -> None:
    good = SviSlice(0.2, 0.01, 0.05, -0.3, 0.0, 0.2, expiry_s=1_700_100_000)
    # steep wing with a tiny sigma: negative density around the money
    bad = SviSlice(0.5, 0.001, 0.6, 0.95, 0.0, 0.02, expiry_s=1_700_500_000)
    surface = VolSurface((good, bad))
    butterflies = [v for v in surface.arbitrage if v.kind == "butterfly"]
    assert len(butterflies) == 1
    violation = butterflies[0]
    assert violation.slice_label == "expiry 1700500000 (T=0.5y)"
    assert violation.value < 0.0
    assert float(durrleman_g(violation.k, **bad.params())) == pytest.approx(violation.value)
    assert "butterfly arbitrage in expiry 1700500000" in str(violation)
    with pytest.raises(ArbitrageError, match="1700500000"):
        surface.checked()
    with pytest.raises(AggregationError):
        VolSurface((good, bad), strict=True)


def test_durrleman_g_sign_matches_butterfly_spreads() -> None:
    # g < 0 <=> call prices are locally concave in strike (negative density)
    for sl, arbitrage_free in (
        (SviSlice(0.5, 0.02, 0.1, -0.4, 0.0, 0.3), True),
        (SviSlice(0.5, 0.001, 0.6, 0.95, 0.0, 0.02), False),
    ):
        k = np.linspace(-1.0, 1.0, 2001)
        vol = np.sqrt(sl.total_variance(k) / sl.t_years)
        calls = black76(1.0, np.exp(k), sl.t_years, vol, 0.0, True).price
        strikes = np.exp(k)
        slopes = np.diff(calls) / np.diff(strikes)
        convex = np.all(np.diff(slopes) > -1e-9)
        assert convex == arbitrage_free
        assert bool(np.all(durrleman_g(k, **sl.params()) >= 0.0)) == arbitrage_free


def test_calendar_violation_names_both_expiries() -> None:
    early = SviSlice(0.1, 0.02, 0.05, 0.0, 0.0, 0.2, expiry_s=1)
    late = SviSlice(0.3, 0.01, 0.05, 0.0, 0.0, 0.2, expiry_s=2)  # less variance later
    (violation,) = VolSurface((early, late)).arbitrage
    assert violation.kind == "calendar"
    assert violation.before_label == "expiry 1 (T=0.1y)"
    assert violation.slice_label == "expiry 2 (T=0.3y)"
    assert violation.value == pytest.approx(0.01)
    assert "calendar arbitrage between expiry 1" in str(violation)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ((0.1, 0.01, -0.1, 0.0, 0.0, 0.2), "b >= 0"),
        ((0.1, 0.01, 0.1, 1.0, 0.0, 0.2), "rho"),
        ((0.1, 0.01, 0.1, 0.0, 0.0, 0.0), "sigma"),
        ((0.1, -0.05, 0.1, 0.0, 0.0, 0.2), "minimum total variance"),
        ((0.0, 0.01, 0.1, 0.0, 0.0, 0.2), "t_years"),
    ],
)
def test_invalid_slices_raise(
    params: tuple[float, float, float, float, float, float], message: str
) -> None:
    with pytest.raises(InvalidSurfaceError, match=message):
        SviSlice(*params)


def test_invalid_surfaces_raise() -> None:
    s = SviSlice(0.1, 0.01, 0.1, 0.0, 0.0, 0.2)
    with pytest.raises(InvalidSurfaceError, match="at least one"):
        VolSurface(())
    with pytest.raises(InvalidSurfaceError, match="share"):
        VolSurface((s, s))
    with pytest.raises(ValueError, match="published"):
        VolSurface.from_wad(
            expiry_s=[NOW_S + 10],
            updated_at_s=[NOW_S + 10],
            atm_vol_wad=[WAD // 2],
            svi_a=[10**16],
            svi_b=[10**16],
            svi_rho=[0],
            svi_m=[0],
            svi_sigma=[10**17],
            now_s=NOW_S,
        )
