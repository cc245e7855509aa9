"""Portfolio and standard margin, and the protocol rule per account: worked examples,
invariants, liquidation searches (grid and exact) and what a liquidation takes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aggregation.accounts as accounts_module
import aggregation.margin as margin_module
from aggregation.accounts import (
    ProtocolRules,
    account_liquidation_moves,
    account_state,
    liquidate_accounts,
)
from aggregation.black76 import black76
from aggregation.books import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
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


# ---------------------------------------------------------------- the protocol rule, per account

# assets ETH, BTC, USDC; underlyings ETH, BTC; protocols: 0 an options market, 1 a perps
# market (margin at par); 2 chains
A_ETH, A_BTC, A_USDC = 0, 1, 2


def accounts_book(
    options: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    perps: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    collateral: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    *,
    spot: tuple[float, float] = (2_000.0, 60_000.0),
    usdc: float = 1.0,
    n_users: int = 2,
) -> RiskInputs:
    """Rows: option (user, u, chain, protocol, size, K, call); perp (user, u, chain,
    protocol, size, open notional, funding); collateral (user, asset, chain, protocol,
    amount, haircut). Options expire in 30 days at vol 0.6 (the rule ignores both)."""
    o = [(*r[:5], r[5], 30 * DAY, r[6], 0.6) for r in options]
    kinds = {"i": np.intp, "f": np.float64, "b": np.bool_}

    def cols(rows: list[tuple[Any, ...]], letters: str) -> list[np.ndarray]:
        data = list(zip(*rows, strict=True)) if rows else [() for _ in letters]
        return [np.array(c, dtype=kinds[k]).reshape(-1) for c, k in zip(data, letters, strict=True)]

    no_i, no_f = np.zeros(0, np.intp), np.zeros(0)
    rules = ProtocolRules.uniform(2, 2)
    rules.collateral_at_par[1] = True
    return RiskInputs.build(
        tuple(f"0x{i:040x}" for i in range(n_users)),
        spot_usd=np.array(spot), carry_annual=np.zeros(2),
        asset_price_usd=np.array([spot[0], spot[1], usdc]),
        asset_underlying=np.array([0, 1, -1], dtype=np.intp),
        options=OptionPositions(*cols(o, "iiiifffbf")),
        perps=PerpPositions(*cols(perps, "iiiifff")),
        collateral=CollateralPositions(*cols(collateral, "iiiiff")),
        supplies=SupplyPositions(no_i, no_i, no_i, no_i, no_f, no_f, no_f, no_f),
        borrows=BorrowPositions(no_i, no_i, no_i, no_i, no_f), n_chains=2, n_protocols=2,
        rules=rules,
    )  # fmt: skip


def test_options_account_by_hand() -> None:
    # short 2 puts K 2,200 at 2,000; 300 USDC + 0.5 ETH (haircut 15 %)
    # equity 300 + 850 = 1,150; MM = 2 (9 % x 2,000 + 200) = 760; IM = 2 (300 + 200) = 1,000
    book = accounts_book(
        options=[(0, 0, 0, 0, -2.0, 2_200.0, False), (0, 0, 0, 0, 3.0, 1_000.0, True)],
        collateral=[(0, A_USDC, 0, 0, 300.0, 0.0), (0, A_ETH, 0, 0, 0.5, 0.15)],
    )
    st = account_state(book)
    assert st.accounts.n_accounts == 1  # the long call adds nothing: options are not marked
    assert (st.equity_usd[0], st.mm_usd[0], st.im_usd[0]) == pytest.approx(
        (1_150.0, 760.0, 1_000.0)
    )
    assert not st.liquidatable[0]
    # down: 300 + 850 (1 + m) - 2 (0.09 x 2,000 (1 + m) + 2,200 - 2,000 (1 + m)) = 0
    down, up = account_liquidation_moves(book, st)
    assert down[0, 0] == pytest.approx(
        (4_400.0 - 300.0 - 850.0 + 360.0 - 4_000.0) / (850.0 - 360.0 + 4_000.0)
    )
    # up: the puts expire worthless above 2,200; 300 + 850 (1 + m) >= 360 (1 + m) forever
    assert np.isnan(up[0, 0])
    assert np.isnan(down[0, 1])  # nothing on BTC
    assert np.isnan(up[0, 1])


def test_put_requirement_is_capped_at_the_strike() -> None:
    # a far out-of-the-money put: 9 % x 2,000 = 180 > K = 100, so MM = 100
    book = accounts_book(
        options=[(0, 0, 0, 0, -1.0, 100.0, False), (1, 0, 0, 0, -1.0, 100.0, False)],
        collateral=[(0, A_USDC, 0, 0, 150.0, 0.0), (1, A_USDC, 0, 0, 99.0, 0.0)],
    )
    st = account_state(book)
    np.testing.assert_allclose(st.mm_usd, [100.0, 100.0])
    assert list(st.liquidatable) == [False, True]
    down, up = account_liquidation_moves(book, st)
    # user 0: MM <= 100 at every price (cap above 1,111.1, 9 % S + (100 - S)+ below)
    assert np.isnan(down[0, 0])
    assert np.isnan(up[0, 0])
    assert down[1, 0] == up[1, 0] == 0.0


def test_perps_account_by_hand_margin_at_par() -> None:
    # long 2 ETH from 2,000 with 300 USDC of margin; USDC's oracle says 1.01, the market 1
    book = accounts_book(
        perps=[(0, 0, 1, 1, 2.0, 4_000.0, -10.0)],
        collateral=[(0, A_USDC, 1, 1, 300.0, 0.0)], usdc=1.01, spot=(1_900.0, 60_000.0),
    )  # fmt: skip
    st = account_state(book)
    # equity = 300 + 3,800 - 4,000 - 10 = 90 < MM = 5 % x 3,800 = 190
    assert (st.equity_usd[0], st.mm_usd[0], st.im_usd[0]) == pytest.approx((90.0, 190.0, 380.0))
    assert st.margin_ratio[0] == pytest.approx(190.0 / 90.0)
    liq = liquidate_accounts(book, st)
    # settled -210 leaves 90; the fee 2.5 % x 3,800 = 95 is capped at 90: 300 taken in all
    assert liq.seized_coin[0] == pytest.approx(300.0)
    assert liq.perp_deficit_usd[0] == 0.0
    assert liq.perp_rows.tolist() == [0]
    assert liq.accounts.tolist() == [0]
    # at 1,850 the settlement (-310) exceeds the margin (300): 10 of bad debt, no fee
    lower = accounts_book(
        perps=[(0, 0, 1, 1, 2.0, 4_000.0, -10.0)],
        collateral=[(0, A_USDC, 1, 1, 300.0, 0.0)], spot=(1_850.0, 60_000.0),
    )  # fmt: skip
    liq = liquidate_accounts(lower, account_state(lower))
    assert liq.seized_coin[0] == pytest.approx(300.0)
    assert liq.perp_deficit_usd[0] == pytest.approx(10.0)


def test_options_liquidation_takes_the_quote_token_first() -> None:
    # at 1,600: equity 600 + 0.5 x 1,600 x 0.85 = 1,280 < MM 2 (144 + 600) = 1,488;
    # owed: intrinsic 1,200 + penalty 10 % x 1,488 = 1,348.8 -> 600 USDC, then 748.8 of ETH
    book = accounts_book(
        options=[(0, 0, 0, 0, -2.0, 2_200.0, False)],
        collateral=[(0, A_ETH, 0, 0, 0.5, 0.15), (0, A_USDC, 0, 0, 600.0, 0.0)],
        spot=(1_600.0, 60_000.0),
    )
    st = account_state(book)
    assert st.mm_usd[0] == pytest.approx(1_488.0)
    liq = liquidate_accounts(book, st)
    c = book.collateral
    seized = dict(zip(c.asset[liq.collateral_rows].tolist(), liq.seized_coin.tolist(), strict=True))
    assert seized[A_USDC] == pytest.approx(600.0)
    assert seized[A_ETH] == pytest.approx(748.8 / 1_600.0)
    assert liq.option_deficit_usd.sum() == 0.0
    # with 300 USDC instead, everything is taken and 248.8 is bad debt on the puts
    poorer = accounts_book(
        options=[(0, 0, 0, 0, -2.0, 2_200.0, False)],
        collateral=[(0, A_ETH, 0, 0, 0.5, 0.15), (0, A_USDC, 0, 0, 300.0, 0.0)],
        spot=(1_600.0, 60_000.0),
    )
    liq = liquidate_accounts(poorer, account_state(poorer))
    np.testing.assert_allclose(liq.seized_coin, poorer.collateral.amount[liq.collateral_rows])
    assert liq.option_deficit_usd.sum() == pytest.approx(1_348.8 - 300.0 - 800.0)


def _f(book: RiskInputs, u: int, m: float) -> np.ndarray:
    """equity - MM of every account with underlying ``u`` (and its assets) moved by ``m``."""
    spot = book.spot_usd.copy()
    spot[u] *= 1.0 + m
    price = book.asset_price_usd * np.where(book.asset_underlying == u, 1.0 + m, 1.0)
    st = account_state(replace(book, spot_usd=spot, asset_price_usd=price))
    return np.asarray(st.equity_usd - st.mm_usd)


@pytest.mark.parametrize(("seed", "large"), [(0, False), (1, True), (2, False), (3, True)])
def test_account_liquidation_moves_are_exact(
    seed: int, large: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random accounts: no crossing before the root on a fine grid, f(root) = 0 and f < 0
    just beyond; NaN only where no grid move crosses. ``large``: the code paths of big
    books (accounts numbered by sorting, only rows with positions searched)."""
    if large:
        monkeypatch.setattr(accounts_module, "_SMALL_ROWS", 0)
        monkeypatch.setattr(accounts_module, "_DENSE_KEYS", 0)
        monkeypatch.setattr(accounts_module, "_DENSE_PER_ROW", 0)
    rng = np.random.default_rng(seed)
    n_users, rows = 12, 40
    spot = (2_000.0, 60_000.0)
    options = [
        (int(rng.integers(n_users)), u, int(rng.integers(2)), 0, float(rng.normal(0, 1.5)),
         spot[u] * float(rng.uniform(0.05, 1.6)), bool(rng.random() < 0.5))
        for u in rng.integers(0, 2, rows)
    ]  # fmt: skip
    perps = [
        (int(rng.integers(n_users)), u, int(rng.integers(2)), 1, s,
         s * spot[u] * float(rng.uniform(0.9, 1.1)), 0.0)
        for u, s in zip(rng.integers(0, 2, rows // 2), rng.normal(0, 0.5, rows // 2), strict=True)
    ]  # fmt: skip
    collateral = [
        (k, a, c, p, float(rng.uniform(0.2, 3.0)) * (1.0 if a != A_USDC else 2_000.0),
         0.15 * (a != A_USDC))
        for k in range(n_users) for c in range(2) for p in range(2)
        for a in (A_ETH, A_USDC) if rng.random() < 0.6
    ]  # fmt: skip
    book = accounts_book(options, perps, collateral, n_users=n_users)
    st = account_state(book)
    down, up = account_liquidation_moves(book, st)
    grids = {-1.0: -np.linspace(0.002, 0.998, 499), 1.0: np.linspace(0.01, 6.0, 600)}
    for u in range(2):
        for d, roots in ((-1.0, down[:, u]), (1.0, up[:, u])):
            f = np.stack([_f(book, u, m) for m in grids[d]], axis=1)  # (accounts, moves)
            for a in range(st.accounts.n_accounts):
                r = roots[a]
                if st.liquidatable[a]:
                    assert r == 0.0
                    continue
                before = np.abs(grids[d]) < abs(r) - 1e-9 if not np.isnan(r) else slice(None)
                assert (f[a, before] >= -1e-6).all(), (u, d, a, r)
                if np.isnan(r):
                    continue
                assert _f(book, u, r)[a] == pytest.approx(0.0, abs=1e-6)
                assert _f(book, u, r + d * 1e-6)[a] < 0.0
