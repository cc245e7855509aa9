"""Exposure per canonical asset: roll-up, concentration, the liquidation ladder."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.exceptions import InvalidParamsError, InvalidRiskInputsError
from aggregation.exposure import (
    LADDER_MOVES,
    CanonicalMap,
    asset_exposure,
    ladder_moves,
    liquidation_ladder,
)
from aggregation.lending import LendingBook, account_health, lending_accounts
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
    unified_risk,
)
from aggregation.scenarios import derive_pmrm_grid

# the devnet's assets (chains/world.py): wstETH = 1.18 ETH, rvETH = 1 ETH, USDC.e = USDC
ETH, BTC, USDC, WSTETH, RVETH, USDCE = range(6)
PRICES = np.array([2_000.0, 60_000.0, 1.0, 2_360.0, 2_000.0, 1.0])
UNDERLYING = np.array([0, 1, -1, 0, 0, -1], dtype=np.intp)
CANONICAL = np.array([ETH, BTC, USDC, ETH, ETH, USDC], dtype=np.intp)
SPOT = np.array([2_000.0, 60_000.0])
USERS = tuple(f"0x{i:040x}" for i in range(4))


def columns(rows: list[tuple[Any, ...]], kinds: str) -> list[np.ndarray]:
    """Columns of ``rows``; ``kinds``: one letter per column, i(ndex), f(loat), b(ool)."""
    dtype = {"i": np.intp, "f": np.float64, "b": np.bool_}
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in kinds]
    return [np.array(c, dtype=dtype[k]).reshape(-1) for c, k in zip(cols, kinds, strict=True)]


def build(
    *,
    options: list[tuple[Any, ...]] | None = None,
    perps: list[tuple[Any, ...]] | None = None,
    collateral: list[tuple[Any, ...]] | None = None,
    supplies: list[tuple[Any, ...]] | None = None,
    borrows: list[tuple[Any, ...]] | None = None,
    users: tuple[str, ...] = USERS,
    prices: np.ndarray = PRICES,
    underlying: np.ndarray = UNDERLYING,
) -> RiskInputs:
    """Rows as in test_risk.py; supplies (user, asset, chain, protocol, amount, LT)."""
    user, asset, chain, protocol, amount, lt = columns(supplies or [], "iiiiff")
    lending = SupplyPositions(
        user, asset, chain, protocol, amount, lt, lt - 0.05, np.full(user.shape, 1.05)
    )
    return RiskInputs.build(
        users,
        spot_usd=SPOT,
        carry_annual=np.zeros(2),
        asset_price_usd=prices,
        asset_underlying=underlying,
        options=OptionPositions(*columns(options or [], "iiiifffbf")),
        perps=PerpPositions(*columns(perps or [], "iiiifff")),
        collateral=CollateralPositions(*columns(collateral or [], "iiiiff")),
        supplies=lending,
        borrows=BorrowPositions(*columns(borrows or [], "iiiif")),
        n_chains=3,
        n_protocols=2,
    )


WORLD = build(
    options=[(2, ETH, 0, 1, -2.0, 2_200.0, 30 / 365, True, 0.6)],
    perps=[(2, ETH, 1, 1, 3.0, 5_700.0, 0.0), (3, BTC, 0, 1, -0.1, -6_100.0, 0.0)],
    collateral=[(2, USDC, 0, 1, 5_000.0, 0.0), (3, WSTETH, 2, 1, 1.0, 0.1)],
    supplies=[
        (0, ETH, 0, 0, 10.0, 0.8),  # user 0: ETH on chain 0, rvETH on chain 1
        (0, RVETH, 1, 0, 4.0, 0.7),
        (1, WSTETH, 2, 0, 5.0, 0.8),  # user 1: wstETH against bridged USDC.e
        (1, BTC, 0, 0, 0.5, 0.75),
    ],
    borrows=[(0, USDC, 0, 0, 12_000.0), (0, USDC, 1, 0, 2_000.0), (1, USDCE, 2, 0, 9_000.0)],
)


# ---------------------------------------------------------------- roll-up


def test_roll_up_by_hand() -> None:
    e = asset_exposure(WORLD, CANONICAL)
    assert list(e.roots) == [ETH, BTC, USDC]
    # ETH collateral: 10 ETH + 4 rvETH (peg 1) + 5 wstETH (x 1.18) + margin 1 wstETH
    assert e.collateral_coin[0].sum() == pytest.approx(10 + 4 + 5 * 1.18 + 1.18)
    assert e.collateral_usd[0].sum() == pytest.approx(20_000 + 8_000 + 11_800 + 2_360)
    assert e.collateral_usd[0, 0, 2] == pytest.approx(11_800.0)  # wstETH: protocol 0, chain 2
    assert e.collateral_coin[0, 1, 2] == pytest.approx(1.18)  # margin wstETH: protocol 1
    # USDC debt rolls up bridged USDC.e: 12,000 + 2,000 on chains 0/1, 9,000 on chain 2
    assert e.debt_usd[2, 0] == pytest.approx([12_000.0, 2_000.0, 9_000.0])
    assert e.perps_delta_coin[0, 1, 1] == 3.0
    assert e.perps_delta_usd[1, 1, 0] == pytest.approx(-6_000.0)
    assert e.asset_collateral_usd[WSTETH] == pytest.approx(11_800 + 2_360)
    assert e.asset_debt_usd[USDCE] == pytest.approx(9_000.0)
    assert -2.0 < e.options_delta_coin[0].sum() < 0.0  # short calls


def test_net_delta_matches_unified_risk() -> None:
    """Summed over users, the roll-up is the unified risk's spot delta per underlying."""
    e = asset_exposure(WORLD, CANONICAL)
    r = unified_risk(WORLD, derive_pmrm_grid())
    np.testing.assert_allclose(e.net_delta_coin[:2], r.delta_coin.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        (e.options_delta_usd + e.perps_delta_usd).sum(axis=(1, 2))[:2]
        + e.collateral_usd.sum(axis=(1, 2))[:2]
        - e.debt_usd.sum(axis=(1, 2))[:2],
        r.delta_usd.sum(axis=0),
        rtol=1e-12,
    )


def test_concentration_by_hand() -> None:
    c = asset_exposure(WORLD, CANONICAL, top_n=3).concentration
    # ETH collateral holders: user 0 28,000, user 1 11,800, user 3 2,360 (margin)
    total = 28_000 + 11_800 + 2_360
    shares = np.array([28_000, 11_800, 2_360]) / total
    assert c.total_usd[0] == pytest.approx(total)
    assert c.hhi[0] == pytest.approx((shares**2).sum())
    assert c.effective_holders[0] == pytest.approx(1 / (shares**2).sum())
    assert list(c.top_user[0]) == [0, 1, 3]
    np.testing.assert_allclose(c.top_share[0], shares)
    assert c.n_holders[0] == 3
    # BTC: one holder (user 1) -> HHI 1, padded with -1; USDC: user 2's margin collateral
    assert c.hhi[1] == pytest.approx(1.0)
    assert list(c.top_user[1]) == [1, -1, -1]
    assert list(c.top_user[2]) == [2, -1, -1]
    debt = asset_exposure(WORLD, CANONICAL, basis="debt").concentration
    assert debt.hhi[2] == pytest.approx((14 / 23) ** 2 + (9 / 23) ** 2)
    gross = asset_exposure(WORLD, CANONICAL, basis="gross").concentration
    assert gross.n_holders[0] == 4  # user 2 joins through its perp and options


def test_no_holders() -> None:
    empty = build()
    c = asset_exposure(empty, CANONICAL).concentration
    assert (c.hhi == 0.0).all()
    assert (c.effective_holders == 0.0).all()
    assert (c.top_user == -1).all()


# ---------------------------------------------------------------- ladder


def test_ladder_by_hand() -> None:
    moves = np.array([-0.7, -0.3, -0.2, -0.1, 0.0, 0.5])
    lad = liquidation_ladder(WORLD, CANONICAL, moves=moves, include_margin=False)
    # user 0, chain 0: 16,000 (1 + m) < 12,000 -> m < -25 %; chain 1: 5,600 (1 + m) < 2,000
    # -> m < -64.3 %
    # user 1, chain 2: 9,440 (1 + m) < 9,000 -> m < -4.66 % (BTC sits in another account)
    eth = lad.collateral_usd[0]
    assert eth[-1] == eth[-2] == 0.0
    assert eth[3] == pytest.approx(11_800 * 0.9)  # -10 %: user 1's wstETH only
    assert eth[2] == pytest.approx(11_800 * 0.8)
    assert eth[1] == pytest.approx((20_000 + 11_800) * 0.7)
    assert eth[0] == pytest.approx((20_000 + 11_800 + 8_000) * 0.3)
    assert lad.collateral_coin[0, 1] == pytest.approx(10 + 5 * 1.18)
    assert lad.debt_usd[0, 1] == pytest.approx(21_000.0)
    assert list(lad.accounts[0]) == [3, 2, 1, 1, 0, 0]
    np.testing.assert_allclose(lad.price_usd[0], 2_000 * (1 + moves))
    # USDC up makes the USDC debts heavier: user 1 fails at +4.89 %, user 0 chain 0 at +33 %
    up = liquidation_ladder(WORLD, CANONICAL, moves=np.array([0.04, 0.05, 0.34]),
                            include_margin=False)  # fmt: skip
    assert list(up.accounts[2]) == [0, 1, 2]
    assert up.debt_usd[2, 1] == pytest.approx(9_000 * 1.05)


def test_ladder_counts_margin_accounts() -> None:
    """Margin accounts (one per (user, protocol, chain)) under the protocol rule: user 2
    writes 2 ETH puts K 1,800 on 1,000 USDC, user 3 is long an ETH perp on 1 wstETH."""
    book = build(
        options=[(2, ETH, 0, 1, -2.0, 1_800.0, 30 / 365, False, 0.6)],
        perps=[(3, ETH, 2, 1, 1.0, 2_000.0, 0.0)],
        collateral=[(2, USDC, 0, 1, 1_000.0, 0.0), (3, WSTETH, 2, 1, 1.0, 0.1)],
        supplies=[(0, ETH, 0, 0, 10.0, 0.8)],
        borrows=[(0, USDC, 0, 0, 12_000.0)],
    )
    lending = liquidation_ladder(book, CANONICAL, include_margin=False)
    both = liquidation_ladder(book, CANONICAL)
    assert (lending.margin_collateral_usd == 0.0).all()
    # user 2: 1,000 - 2 (9 % S + 1,800 - S) = 0 at S = 2,600 / 1.82; user 3: 2,124 (1 + m)
    # + 2,000 m - 100 (1 + m) = 0. Both are unified_risk's distances to liquidation.
    # User 2 also fails high: 1,000 - 2 x 9 % S = 0 at S = 5,555.6.
    risk = unified_risk(book, derive_pmrm_grid())
    down, up = risk.liq_move_down[:, ETH], risk.liq_move_up[:, ETH]
    np.testing.assert_allclose(down[[2, 3]], [2_600.0 / 1.82 / 2_000.0 - 1.0, -2_024.0 / 4_024.0])
    assert up[2] == pytest.approx(1_000.0 / 0.18 / 2_000.0 - 1.0)
    assert np.isnan(up[3])
    for level, m in enumerate(LADDER_MOVES):
        failing = [u for u in (2, 3) if m < down[u] or m > up[u]]
        expected = sum(1_000.0 if u == 2 else 2_360.0 * (1 + m) for u in failing)
        assert both.margin_collateral_usd[0, level] == pytest.approx(expected)
        assert both.accounts[0, level] == lending.accounts[0, level] + len(failing)


def test_ladder_margin_accounts_are_per_chain() -> None:
    """A perp alone on its chain (its margin on another chain) is liquidatable at every
    level; an account exactly at maintenance fails on any fall but not on a rise."""
    book = build(
        perps=[(2, ETH, 1, 1, 3.0, 5_700.0, 0.0), (3, BTC, 0, 1, -0.1, -6_100.0, 0.0)],
        collateral=[(3, USDC, 1, 1, 5_000.0, 0.0)],
    )
    lad = liquidation_ladder(book, CANONICAL, moves=[-0.1, 0.1])
    # user 3's BTC perp (equity 100 < MM 300) counts everywhere; user 2's ETH perp (equity
    # 300 = MM 300) below 0 only
    np.testing.assert_array_equal(lad.accounts[0], [2, 1])
    np.testing.assert_array_equal(lad.accounts[1], [1, 1])


@st.composite
def lending_books(draw: st.DrawFn) -> RiskInputs:
    n = draw(st.integers(1, 6))
    supplies = [
        (draw(st.integers(0, 3)), draw(st.sampled_from([ETH, BTC, WSTETH, RVETH, USDC])),
         draw(st.integers(0, 2)), draw(st.integers(0, 1)), draw(st.floats(0.1, 20.0)),
         draw(st.sampled_from([0.7, 0.8, 0.9])))
        for _ in range(n)
    ]  # fmt: skip
    borrows = [
        (draw(st.integers(0, 3)), draw(st.sampled_from([USDC, USDCE, ETH, BTC])),
         draw(st.integers(0, 2)), draw(st.integers(0, 1)), draw(st.floats(100.0, 30_000.0)))
        for _ in range(draw(st.integers(0, 5)))
    ]  # fmt: skip
    return build(supplies=supplies, borrows=borrows)


@settings(max_examples=40, deadline=None)
@given(lending_books())
def test_ladder_matches_brute_force(inputs: RiskInputs) -> None:
    """At every level, the ladder equals HF < 1 recomputed at the moved prices."""
    moves = ladder_moves(-0.9, 1.0, 0.1)
    lad = liquidation_ladder(inputs, CANONICAL, moves=moves, include_margin=False)
    s, b = inputs.supplies, inputs.borrows
    acc = lending_accounts((s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain), 2, 3)
    book = LendingBook(acc.user.shape[0], acc.supply_account, s.asset, s.amount,
                       s.liquidation_threshold, s.ltv, s.liquidation_bonus,
                       acc.borrow_account, b.asset, b.amount)  # fmt: skip
    for k, root in enumerate(lad.roots):
        for level, m in enumerate(moves):
            price = PRICES * np.where(root == CANONICAL, 1.0 + m, 1.0)
            health = account_health(book, price)
            near = np.isclose(health.health_factor, 1.0, rtol=1e-9)
            if near.any():
                continue  # exactly at the boundary: either side is right
            liq = health.liquidatable
            assert lad.accounts[k, level] == liq.sum()
            assert lad.collateral_usd[k, level] == pytest.approx(
                health.collateral_usd[liq].sum(), rel=1e-9, abs=1e-6
            )


# ---------------------------------------------------------------- validation


def test_canonical_map() -> None:
    cmap = CanonicalMap.of(WORLD, CANONICAL)
    assert list(cmap.roots) == [ETH, BTC, USDC]
    assert list(cmap.underlying_root) == [ETH, BTC]
    np.testing.assert_allclose(cmap.peg, [1, 1, 1, 1.18, 1, 1])
    with pytest.raises(InvalidRiskInputsError, match="not a root"):
        CanonicalMap.of(WORLD, [ETH, BTC, USDC, RVETH, WSTETH, USDC])
    with pytest.raises(InvalidRiskInputsError, match="share its root's underlying"):
        CanonicalMap.of(WORLD, [ETH, BTC, USDC, USDC, ETH, USDC])
    with pytest.raises(InvalidRiskInputsError, match="shape"):
        CanonicalMap.of(WORLD, [ETH, BTC])
    # a BTC perp, but no asset is tied to underlying 1: its spot has no root to follow
    untied = np.array([0, -1, -1, 0, 0, -1], dtype=np.intp)
    orphan = build(perps=[(0, BTC, 0, 0, 1.0, 60_000.0, 0.0)], underlying=untied)
    with pytest.raises(InvalidRiskInputsError, match="underlying 1 has options or perps"):
        asset_exposure(orphan, CANONICAL)


def test_ladder_moves() -> None:
    assert LADDER_MOVES[0] == pytest.approx(-0.9)
    assert LADDER_MOVES[-1] == pytest.approx(2.0)
    assert 0.0 in LADDER_MOVES
    with pytest.raises(InvalidParamsError):
        ladder_moves(-1.0, 1.0, 0.1)
    with pytest.raises(InvalidParamsError):
        liquidation_ladder(WORLD, CANONICAL, moves=np.array([0.1, -0.1]))
    with pytest.raises(InvalidParamsError):
        asset_exposure(WORLD, CANONICAL, top_n=0)
