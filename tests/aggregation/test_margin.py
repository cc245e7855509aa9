"""Portfolio and standard margin: worked examples, invariants, and the liquidation search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aggregation.margin as margin_module
from aggregation.black76 import black76
from aggregation.margin import (
    Instruments,
    MarginBook,
    margin_liquidation_moves,
    portfolio_margin,
    standard_margin,
    value_instruments,
)
from aggregation.scenarios import ScenarioGrid, deribit_pm_grid, derive_pmrm_grid

SPOT = np.array([2_000.0, 60_000.0])
CARRY = np.zeros(2)
DAY = 1.0 / 365.0
Option = tuple[int, int, float, float, float, bool, float]  # account, u, size, K, T, call, vol
Perp = tuple[int, int, float]  # account, underlying, size


def margin_book(
    options: list[Option] = (),  # type: ignore[assignment]
    perps: list[tuple[int, int, float]] = (),  # type: ignore[assignment]
    collateral: list[tuple[int, int, float]] = (),  # type: ignore[assignment]
    n_accounts: int = 1,
) -> MarginBook:
    """A book of one position per option (no dedupe); collateral = (account, u or -1, usd)."""
    o = np.array(options, dtype=np.float64).reshape(-1, 7)
    p = np.array(perps, dtype=np.float64).reshape(-1, 3)
    c = np.array(collateral, dtype=np.float64).reshape(-1, 3)
    instruments = Instruments(
        o[:, 1].astype(np.intp), o[:, 3], o[:, 4], o[:, 5].astype(np.bool_), o[:, 6]
    )
    return MarginBook(
        n_accounts, 2, instruments,
        o[:, 0].astype(np.intp), np.arange(len(o), dtype=np.intp), o[:, 2],
        p[:, 0].astype(np.intp), p[:, 1].astype(np.intp), p[:, 2],
        c[:, 0].astype(np.intp), c[:, 1].astype(np.intp), c[:, 2],
    )  # fmt: skip


def value(b: MarginBook, grid: ScenarioGrid | None = None) -> margin_module.Valuation:
    return value_instruments(b.instruments, SPOT, CARRY, grid or derive_pmrm_grid())


# ---------------------------------------------------------------- worked examples


def test_long_perp_by_hand() -> None:
    # long 1 ETH perp at $2,000. Worst regular scenario: -18 % -> loss 360; the -66 % tail
    # loses 1,320 x 0.77 x 0.18 / 0.66 = 277.2 < 360.
    # MM = 0.8 x 360 + 3 % x 2,000 = 348;  IM = 348 + 1 % x 2,000 = 368.
    b = margin_book(perps=[(0, 0, 1.0)])
    pm = portfolio_margin(b, value(b), return_pnl=True)
    assert pm.worst_loss_usd[0] == pytest.approx(360.0)
    assert pm.mm_usd[0] == pytest.approx(348.0)
    assert pm.im_usd[0] == pytest.approx(368.0)
    assert derive_pmrm_grid().moves[pm.worst_scenario[0]] == pytest.approx(-0.18)
    assert pm.worst_underlying[0] == 0
    assert pm.pnl_usd is not None
    assert pm.pnl_usd.shape == (1, 2, 31)
    assert pm.pnl_usd[0, 0, 23] == pytest.approx(-1_320.0 * 0.77 * 0.18 / 0.66)


def test_collateral_hedges_a_short_perp_and_stablecoins_do_not_move() -> None:
    # 1 ETH of collateral ($2,000, already after haircut) against a 1 ETH short perp: flat
    b = margin_book(perps=[(0, 0, -1.0)], collateral=[(0, 0, 2_000.0), (0, -1, 5_000.0)])
    pm = portfolio_margin(b, value(b))
    assert pm.worst_loss_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert pm.mm_usd[0] == pytest.approx(60.0)  # the perp contingency only


def test_short_call_worst_scenario_by_hand() -> None:
    # short 1 ATM call, T = 30 d, vol 60 %: worst = +18 % with vol up to 0.6 x 1.5 = 0.9
    t = 30 * DAY
    b = margin_book(options=[(0, 0, -1.0, 2_000.0, t, True, 0.6)])
    pm = portfolio_margin(b, value(b))
    base = float(black76(2_000.0, 2_000.0, t, 0.6, 0.0, True).price)
    shocked = float(black76(2_360.0, 2_000.0, t, 0.9, 0.0, True).price)
    assert pm.worst_loss_usd[0] == pytest.approx(shocked - base)
    assert pm.worst_scenario[0] == 0
    assert pm.mm_usd[0] == pytest.approx(0.8 * (shocked - base) + 0.003 * 2_000)
    assert pm.im_usd[0] == pytest.approx(pm.mm_usd[0] + 0.002 * 2_000)


@pytest.mark.parametrize(
    ("strike", "is_call", "im", "mm"),
    [
        (2_200.0, True, 260.0, 180.0),  # 10 % OTM: max(0.05, 0.13) x 2,000
        (2_050.0, True, 260.0, 180.0),  # 2.5 % OTM: max(0.125, 0.13)
        (1_800.0, True, 300.0, 180.0),  # ITM: 0.15 x 2,000
        (1_800.0, False, 260.0, 180.0),  # put 10 % OTM
        (100.0, False, 100.0, 100.0),  # deep OTM put: capped by K - mark (mark ~ 0)
    ],
)
def test_standard_margin_by_hand(strike: float, is_call: bool, im: float, mm: float) -> None:
    b = margin_book(options=[(0, 0, -1.0, strike, 30 * DAY, is_call, 0.6)])
    sm = standard_margin(b, value(b))
    assert sm.im_usd[0] == pytest.approx(im, abs=1e-6)
    assert sm.mm_usd[0] == pytest.approx(mm, abs=1e-6)


def test_standard_margin_perps_and_longs() -> None:
    b = margin_book(options=[(0, 0, 3.0, 2_000.0, 0.1, True, 0.6)], perps=[(0, 1, -0.5)])
    sm = standard_margin(b, value(b))
    assert sm.im_usd[0] == pytest.approx(0.066 * 30_000)  # long options need nothing
    assert sm.mm_usd[0] == pytest.approx(0.05 * 30_000)


def test_deribit_extended_moves_charge_short_otm_only() -> None:
    grid = deribit_pm_grid()
    extended = grid.short_otm_array()
    long_otm = margin_book(options=[(0, 0, 1.0, 3_000.0, 30 * DAY, True, 0.6)])
    pm = portfolio_margin(long_otm, value(long_otm, grid), return_pnl=True)
    assert pm.pnl_usd is not None
    np.testing.assert_array_equal(pm.pnl_usd[0, 0, extended], 0.0)
    short_otm = margin_book(options=[(0, 0, -1.0, 1_000.0, 30 * DAY, False, 0.6)])
    pm = portfolio_margin(short_otm, value(short_otm, grid), return_pnl=True)
    assert pm.pnl_usd is not None
    assert pm.pnl_usd[0, 0, extended].min() < pm.pnl_usd[0, 0, ~extended].min()


def test_instrument_dedupe() -> None:
    u = np.array([0, 1, 0, 0], dtype=np.intp)
    k = np.array([100.0, 100.0, 100.0, 90.0])
    t = np.full(4, 0.1)
    call = np.array([True, True, True, True])
    vol = np.full(4, 0.5)
    inst, inverse = Instruments.unique(u, k, t, call, vol)
    assert inst.strike_usd.shape == (3,)
    assert inverse[0] == inverse[2]
    np.testing.assert_array_equal(inst.strike_usd[inverse], k)
    np.testing.assert_array_equal(inst.underlying[inverse], u)


# ---------------------------------------------------------------- properties

options_st = st.lists(
    st.tuples(
        st.integers(0, 2),  # account
        st.integers(0, 1),  # underlying
        st.floats(-5.0, 5.0).filter(lambda x: abs(x) > 1e-3),  # size
        st.floats(0.5, 1.5),  # strike / spot
        st.floats(0.5, 200.0),  # days
        st.booleans(),
        st.floats(0.1, 1.5),  # vol
    ),
    max_size=6,
)
perps_st = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 1), st.floats(-3.0, 3.0)), max_size=3
)


def to_book(options: list[Option], perps: list[Perp]) -> MarginBook:
    rows = [(a, u, q, m * SPOT[u], d * DAY, c, v) for a, u, q, m, d, c, v in options]
    return margin_book(options=rows, perps=perps, n_accounts=3)


@settings(max_examples=40, deadline=None)
@given(options=options_st, perps=perps_st)
def test_im_at_least_mm_at_least_zero(options: list[Option], perps: list[Perp]) -> None:
    b = to_book(options, perps)
    v = value(b)
    for result in (portfolio_margin(b, v), standard_margin(b, v)):
        assert (result.mm_usd >= 0.0).all()
        assert (result.im_usd >= result.mm_usd).all()
    pm = portfolio_margin(b, v)
    holds = np.zeros(3, dtype=np.bool_)
    holds[b.option_account] = True
    holds[b.perp_account[b.perp_size != 0.0]] = True
    assert (pm.im_usd[holds] > pm.mm_usd[holds]).all()


@settings(max_examples=40, deadline=None)
@given(options=options_st, perps=perps_st, which=st.integers(0, 5), more=st.floats(0.01, 5.0))
def test_standard_margin_grows_with_a_short(
    options: list[Option], perps: list[Perp], which: int, more: float
):
    b = to_book(options, perps)
    shorts = np.flatnonzero(b.option_size < 0.0)
    if shorts.size == 0:
        return
    i = shorts[which % shorts.size]
    size = b.option_size.copy()
    size[i] -= more
    bigger = margin_book(n_accounts=3)
    bigger = MarginBook(
        3, 2, b.instruments, b.option_account, b.option_instrument, size,
        b.perp_account, b.perp_underlying, b.perp_size,
        bigger.collateral_account, bigger.collateral_underlying, bigger.collateral_value_usd,
    )  # fmt: skip
    v = value(b)
    assert (standard_margin(bigger, v).im_usd >= standard_margin(b, v).im_usd).all()
    assert (standard_margin(bigger, v).mm_usd >= standard_margin(b, v).mm_usd).all()


@settings(max_examples=40, deadline=None)
@given(
    option=options_st.filter(lambda xs: len(xs) > 0).map(lambda xs: xs[0]),
    size=st.floats(0.01, 10.0),
    more=st.floats(0.0, 10.0),
)
def test_portfolio_margin_grows_with_a_lone_short(option: Option, size: float, more: float):
    # In a mixed book a short call can *hedge* (e.g. a long perp), so cross margin may
    # fall; a lone short option's requirement can only grow with its size.
    _, u, _, m, d, c, vol = option
    small = to_book([(0, u, -size, m, d, c, vol)], [])
    large = to_book([(0, u, -size - more, m, d, c, vol)], [])
    v = value(small)
    assert portfolio_margin(large, v).mm_usd[0] >= portfolio_margin(small, v).mm_usd[0] - 1e-9
    assert portfolio_margin(large, v).im_usd[0] >= portfolio_margin(small, v).im_usd[0] - 1e-9


@settings(max_examples=25, deadline=None)
@given(options=options_st, perps=perps_st)
def test_sparse_and_small_paths_agree(options: list[Option], perps: list[Perp]) -> None:
    b = to_book(options, perps)
    v = value(b)
    small = portfolio_margin(b, v, return_pnl=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(margin_module, "_SPARSE_MIN", 0)
        mp.setattr(margin_module, "_SCENARIO_BLOCK", 5)
        mp.setattr(margin_module, "_FULL_SCAN_MAX", 0)
        large = portfolio_margin(b, v, return_pnl=True)
    assert small.pnl_usd is not None
    assert large.pnl_usd is not None
    np.testing.assert_allclose(small.pnl_usd, large.pnl_usd, atol=1e-9)
    np.testing.assert_allclose(small.mm_usd, large.mm_usd, atol=1e-9)


# ---------------------------------------------------------------- liquidation search


def test_linear_liquidation_move_is_exact() -> None:
    # long 1 ETH perp, $500 of USDC: equity(m) = 500 + 2,000 m, MM(m) = 348 (1 + m)
    #   -> 152 + 1,652 m = 0 at m = -0.0920
    b = margin_book(perps=[(0, 0, 1.0)], collateral=[(0, -1, 500.0)])
    v = value(b)
    pm = portfolio_margin(b, v)
    down, up = margin_liquidation_moves(
        b,
        v,
        equity_usd=np.array([500.0]),
        mm_usd=pm.mm_usd,
        mm_by_underlying_usd=pm.mm_by_underlying_usd,
    )
    assert down[0, 0] == pytest.approx(-152.0 / 1_652.0)
    assert np.isnan(up[0, 0])
    assert np.isnan(down[0, 1])
    below, _ = margin_liquidation_moves(
        b,
        v,
        equity_usd=np.array([100.0]),
        mm_usd=pm.mm_usd,
        mm_by_underlying_usd=pm.mm_by_underlying_usd,
    )
    assert (below == 0.0).all()  # already below maintenance: distance 0 everywhere


@pytest.mark.parametrize("coarse_path", [False, True])
def test_option_liquidation_move_matches_brute_force(coarse_path: bool) -> None:
    # short 2 ETH puts (K 1,900, 20 d) + long 0.5 ETH perp, $1,500 cash
    t = 20 * DAY
    b = margin_book(
        options=[(0, 0, -2.0, 1_900.0, t, False, 0.7)],
        perps=[(0, 0, 0.5)],
        collateral=[(0, -1, 1_500.0)],
    )
    v = value(b)
    pm = portfolio_margin(b, v)
    mark = float(black76(2_000.0, 1_900.0, t, 0.7, 0.0, False).price)
    equity = 1_500.0 - 2.0 * mark
    with pytest.MonkeyPatch.context() as mp:
        if coarse_path:
            mp.setattr(margin_module, "_FULL_SCAN_MAX", 0)
        down, _ = margin_liquidation_moves(
            b, v, equity_usd=np.array([equity]), mm_usd=pm.mm_usd,
            mm_by_underlying_usd=pm.mm_by_underlying_usd,
        )  # fmt: skip

    def f(m: float) -> float:
        put = float(black76(2_000.0 * (1 + m), 1_900.0, t, 0.7, 0.0, False).price)
        return 1_500.0 - 2.0 * put + 0.5 * 2_000.0 * m - float(pm.mm_usd[0]) * (1 + m)

    lo, hi = -0.5, 0.0  # f(lo) < 0 <= f(hi): bisect to machine precision
    assert f(lo) < 0.0 <= f(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0.0 else (lo, mid)
    assert down[0, 0] == pytest.approx(hi, abs=1e-3)  # interpolated inside a 1 % bracket
