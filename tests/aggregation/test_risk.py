"""Unified user risk: a hand-built world, hedged books, breakdowns, incremental updates."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aggregation.margin as margin_module
from aggregation.black76 import black76
from aggregation.exceptions import InvalidRiskInputsError, UnknownUserError
from aggregation.risk import (
    BorrowPositions,
    Breakdown,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
    UnifiedRisk,
    unified_risk,
    user_risk,
)
from aggregation.scenarios import derive_pmrm_grid

DAY = 1.0 / 365.0
ETH, BTC, USDC, STETH = 0, 1, 2, 3
SPOT = np.array([2_000.0, 60_000.0])
CARRY = np.array([0.05, 0.0])
PRICES = np.array([2_000.0, 60_000.0, 1.0, 2_100.0])
UNDERLYING_OF = np.array([0, 1, -1, 0], dtype=np.intp)
GRID = derive_pmrm_grid()
USERS = tuple(f"0x{i:040X}" for i in range(5))


def arrays(rows: list[tuple[Any, ...]], kinds: str) -> list[np.ndarray]:
    """Columns of ``rows``; ``kinds`` has one letter per column: i(ndex), f(loat), b(ool)."""
    dtype = {"i": np.intp, "f": np.float64, "b": np.bool_}
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in kinds]
    return [np.array(col, dtype=dtype[k]).reshape(-1) for col, k in zip(cols, kinds, strict=True)]


def build(
    *,
    options: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    perps: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    collateral: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    supplies: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    borrows: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
    users: tuple[str, ...] = USERS,
    **kwargs: Any,
) -> RiskInputs:
    """Rows: option (user, u, chain, protocol, size, K, T, call, vol); perp (user, u, chain,
    protocol, size, open notional, funding); collateral (user, asset, chain, protocol,
    amount, haircut); supply (user, asset, chain, protocol, amount, LT); borrow (user,
    asset, chain, protocol, amount)."""
    user, asset, chain, protocol, amount, lt = arrays(list(supplies), "iiiiff")
    lending = SupplyPositions(
        user, asset, chain, protocol, amount, lt, lt - 0.05, np.full(user.shape, 1.05)
    )
    return RiskInputs.build(
        users,
        spot_usd=SPOT, carry_annual=CARRY, asset_price_usd=PRICES,
        asset_underlying=UNDERLYING_OF,
        options=OptionPositions(*arrays(list(options), "iiiifffbf")),
        perps=PerpPositions(*arrays(list(perps), "iiiifff")),
        collateral=CollateralPositions(*arrays(list(collateral), "iiiiff")),
        supplies=lending,
        borrows=BorrowPositions(*arrays(list(borrows), "iiiif")),
        n_chains=2, n_protocols=2, **kwargs,
    )  # fmt: skip


def spot_delta(k: float, t: float, vol: float, call: bool, u: int = ETH) -> float:
    """dPrice/dSpot by central differences on the spot (forward = spot e^(carry T))."""
    h = 1e-3
    up, down = ((SPOT[u] + d) * np.exp(CARRY[u] * t) for d in (h, -h))
    prices = black76(np.array([up, down]), k, t, vol, 0.0, call).price
    return float((prices[0] - prices[1]) / (2 * h))


HEDGE = spot_delta(2_100.0, 60 * DAY, 0.6, True)
WORLD = build(
    options=[
        (0, ETH, 0, 0, 1.0, 2_000.0, 30 * DAY, True, 0.6),  # user 0: long and short
        (0, ETH, 1, 1, -1.0, 2_000.0, 30 * DAY, True, 0.6),  # the same call: flat
        (1, ETH, 0, 0, 2.0, 2_100.0, 60 * DAY, True, 0.6),  # user 1: calls + perp hedge
    ],
    perps=[
        (1, ETH, 1, 0, -2.0 * HEDGE, -2.0 * HEDGE * 2_000.0, 0.0),
        (4, ETH, 0, 1, 1.0, 1_900.0, 5.0),  # user 4: long 1 ETH from $1,900, +$5 funding
    ],
    collateral=[
        (0, USDC, 0, 0, 10_000.0, 0.0),
        (1, USDC, 0, 0, 5_000.0, 0.0),
        (4, USDC, 0, 1, 500.0, 0.0),
        (4, STETH, 1, 1, 0.1, 0.1),
    ],
    supplies=[(2, ETH, 0, 0, 10.0, 0.825), (2, BTC, 1, 1, 1.0, 0.75)],
    borrows=[(2, USDC, 0, 0, 10_000.0), (2, BTC, 1, 1, 0.5)],
)


@pytest.fixture(scope="module")
def risk() -> UnifiedRisk:
    return unified_risk(WORLD, GRID, return_pnl=True)


# ---------------------------------------------------------------- worked examples


def test_long_and_short_same_call_is_flat(risk: UnifiedRisk) -> None:
    assert risk.delta_coin[0] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert risk.gamma[0, ETH] == pytest.approx(0.0, abs=1e-15)
    assert risk.vega_per_vol_point[0, ETH] == pytest.approx(0.0, abs=1e-12)
    assert risk.options_mtm_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert risk.worst_loss_usd[0] == pytest.approx(0.0, abs=1e-9)
    assert risk.worst_scenario[0] == -1
    assert risk.mm_usd[0] == pytest.approx(2 * 0.003 * 2_000)  # contingencies only
    assert risk.im_usd[0] == pytest.approx(2 * 0.005 * 2_000)


def test_delta_hedged_calls(risk: UnifiedRisk) -> None:
    assert risk.delta_coin[1, ETH] == pytest.approx(0.0, abs=1e-6)
    assert risk.delta_usd[1, ETH] == pytest.approx(0.0, abs=1e-3)
    assert risk.gamma[1, ETH] > 0.0
    assert risk.vega_per_vol_point[1, ETH] > 0.0
    assert risk.theta_per_day[1, ETH] < 0.0


def test_lending_user_by_hand(risk: UnifiedRisk) -> None:
    # ETH account: 16,500 / 10,000 = 1.65; BTC account: 45,000 / 30,000 = 1.5
    assert risk.health_factor[2] == pytest.approx(1.5)
    assert risk.collateral_usd[2] == pytest.approx(80_000.0)
    assert risk.debt_usd[2] == pytest.approx(40_000.0)
    assert risk.equity_usd[2] == pytest.approx(40_000.0)
    assert risk.collateral_haircut_usd[2] == pytest.approx(16_500.0 + 45_000.0)
    np.testing.assert_allclose(risk.delta_coin[2], [10.0, 0.5])
    # ETH account dies when 16,500 (1 + m) = 10,000; the BTC account only at -100 %
    assert risk.liq_move_down[2, ETH] == pytest.approx(10_000 / 16_500 - 1)
    assert np.isnan(risk.liq_move_down[2, BTC])
    assert np.isnan(risk.liq_move_up[2]).all()
    assert risk.distance_to_liquidation[2, ETH] == pytest.approx(1 - 10_000 / 16_500)
    assert risk.mm_usd[2] == 0.0
    assert risk.margin_ratio[2] == 0.0


def test_empty_user(risk: UnifiedRisk) -> None:
    assert risk.equity_usd[3] == 0.0
    assert risk.im_usd[3] == 0.0
    assert np.isinf(risk.health_factor[3])
    assert np.isnan(risk.distance_to_liquidation[3]).all()


def test_perp_user_by_hand(risk: UnifiedRisk) -> None:
    # perp P&L 2,000 - 1,900 + 5 = 105; collateral 500 + 0.1 x 2,100 = 710 (689 after haircut)
    assert risk.perp_pnl_usd[4] == pytest.approx(105.0)
    assert risk.collateral_usd[4] == pytest.approx(710.0)
    assert risk.margin_equity_usd[4] == pytest.approx(794.0)
    assert risk.equity_usd[4] == pytest.approx(815.0)
    # ETH exposure 2,000 + 189 = 2,189: worst -18 % loses 394.02
    # MM = 0.8 x 394.02 + 3 % x 2,000 = 375.216;  IM = MM + 1 % x 2,000
    assert risk.worst_loss_usd[4] == pytest.approx(0.18 * 2_189)
    assert risk.mm_usd[4] == pytest.approx(375.216)
    assert risk.im_usd[4] == pytest.approx(395.216)
    assert risk.margin_ratio[4] == pytest.approx(375.216 / 794.0)
    assert risk.delta_coin[4, ETH] == pytest.approx(1.105)
    # on chain: the perp and 500 USDC are one account (protocol 1, chain 0), the stETH
    # another (chain 1): equity 605 against MM 5 % x 2,000 = 100 (IM 10 %: 200), and 189
    assert risk.account_equity_usd[4] == pytest.approx(605.0 + 189.0)
    assert risk.account_mm_usd[4] == pytest.approx(100.0)
    assert risk.account_im_usd[4] == pytest.approx(200.0)
    assert risk.account_margin_ratio[4] == pytest.approx(100.0 / 605.0)
    assert risk.liquidatable_accounts[4] == 0
    # the perp account dies when 505 + m (2,000 - 100) = 0; the stETH cannot help it
    assert risk.liq_move_down[4, ETH] == pytest.approx(-505.0 / 1_900.0)
    assert np.isnan(risk.liq_move_up[4, ETH])


def test_accounts_are_per_protocol_and_chain(risk: UnifiedRisk) -> None:
    """User 0's long and short of one call are flat cross-margined, but on chain the short
    sits alone in (protocol 1, chain 1) with no collateral: MM 9 % x 2,000 = 180 > 0."""
    assert risk.mm_usd[0] < risk.margin_equity_usd[0]  # the portfolio view: well covered
    assert risk.account_mm_usd[0] == pytest.approx(180.0)
    assert risk.account_equity_usd[0] == pytest.approx(10_000.0)
    assert risk.account_margin_ratio[0] == np.inf
    assert risk.liquidatable_accounts[0] == 1
    np.testing.assert_array_equal(risk.liq_move_down[0], [0.0, 0.0])  # now, whatever moves
    np.testing.assert_array_equal(risk.distance_to_liquidation[0], [0.0, 0.0])
    # user 1's perp hedge (chain 1) has no margin of its own either; user 2 only lends
    assert risk.liquidatable_accounts[1] == 1
    assert risk.account_mm_usd[2] == 0.0
    assert risk.account_margin_ratio[2] == 0.0
    # the same books with the collateral beside each short leg are safe
    covered = build(
        options=[(0, ETH, 1, 1, -1.0, 2_000.0, 30 * DAY, True, 0.6)],
        collateral=[(0, USDC, 1, 1, 181.0, 0.0)],
    )
    r = unified_risk(covered, GRID)
    assert r.liquidatable_accounts[0] == 0
    # 181 - 0.09 S - (S - 2,000)+ = 0 above the strike: S = (181 + 2,000) / 1.09
    assert r.liq_move_up[0, ETH] == pytest.approx(2_181.0 / 1.09 / 2_000.0 - 1.0)
    assert np.isnan(r.liq_move_down[0, ETH])


def test_breakdowns_add_up(risk: UnifiedRisk) -> None:
    for breakdown in (risk.by_chain, risk.by_protocol):
        assert breakdown.equity_usd.shape == (5, 2)
        np.testing.assert_allclose(breakdown.collateral_usd.sum(1), risk.collateral_usd)
        np.testing.assert_allclose(breakdown.debt_usd.sum(1), risk.debt_usd)
        np.testing.assert_allclose(breakdown.options_mtm_usd.sum(1), risk.options_mtm_usd)
        np.testing.assert_allclose(breakdown.perp_pnl_usd.sum(1), risk.perp_pnl_usd)
        np.testing.assert_allclose(breakdown.equity_usd.sum(1), risk.equity_usd, atol=1e-9)
    assert risk.by_chain.debt_usd[2] == pytest.approx([10_000.0, 30_000.0])
    for breakdown in (risk.by_chain, risk.by_protocol):
        np.testing.assert_allclose(breakdown.account_mm_usd.sum(1), risk.account_mm_usd)
        np.testing.assert_allclose(breakdown.account_equity_usd.sum(1), risk.account_equity_usd)
    assert risk.by_chain.account_mm_usd[0] == pytest.approx([0.0, 180.0])


def test_pnl_matrix_on_request(risk: UnifiedRisk) -> None:
    assert risk.pnl_usd is not None
    assert risk.pnl_usd.shape == (5, 2, GRID.n_scenarios)
    worst = np.maximum(0.0, -risk.pnl_usd.min(axis=2)).sum(axis=1)
    np.testing.assert_allclose(worst, risk.worst_loss_usd, atol=1e-9)


def test_isolated_user_gets_standard_margin() -> None:
    isolated = np.array([False, True, False, False, False])
    r = unified_risk(replace(WORLD, isolated=isolated), GRID)
    perp = 2.0 * HEDGE * 2_000.0
    assert r.im_usd[1] == pytest.approx(0.066 * perp)  # long calls need nothing
    assert r.mm_usd[1] == pytest.approx(0.05 * perp)


# ---------------------------------------------------------------- layout and updates


def test_user_lookup_and_errors() -> None:
    assert WORLD.user_index(USERS[3].lower()) == 3
    with pytest.raises(UnknownUserError, match="0xdead"):
        WORLD.user_index("0xdead")
    with pytest.raises(UnknownUserError):
        WORLD.user_slice(5)
    with pytest.raises(InvalidRiskInputsError, match="user"):
        build(perps=[(7, ETH, 0, 0, 1.0, 2_000.0, 0.0)])
    with pytest.raises(InvalidRiskInputsError, match="chain"):
        build(borrows=[(0, USDC, 2, 0, 1.0)])


def assert_same_rows(full: UnifiedRisk, one: UnifiedRisk, i: int, j: int = 0) -> None:
    """Row ``i`` of ``full`` equals row ``j`` of ``one`` (the one-user result by default)."""
    for f in fields(full):
        a, b = getattr(full, f.name), getattr(one, f.name)
        if isinstance(a, Breakdown):
            for g in fields(a):
                np.testing.assert_allclose(getattr(a, g.name)[i], getattr(b, g.name)[j])
        elif isinstance(a, np.ndarray):
            np.testing.assert_allclose(a[i], b[j], rtol=1e-9, atol=1e-7, err_msg=f.name)


def test_user_risk_matches_the_full_run(risk: UnifiedRisk) -> None:
    for i in range(WORLD.n_users):
        assert_same_rows(risk, user_risk(WORLD, i, GRID, return_pnl=True), i)


def test_build_sorts_by_user() -> None:
    shuffled = build(
        perps=[(4, ETH, 0, 0, 1.0, 2_000.0, 0.0), (0, ETH, 0, 0, -1.0, -2_000.0, 0.0)],
        collateral=[(4, USDC, 0, 0, 1.0, 0.0), (1, USDC, 0, 0, 2.0, 0.0)],
    )
    np.testing.assert_array_equal(shuffled.perps.user, [0, 4])
    np.testing.assert_array_equal(shuffled.offsets[1], [0, 1, 1, 1, 1, 2])
    one = shuffled.user_slice(4)
    np.testing.assert_array_equal(one.perps.size, [1.0])
    np.testing.assert_array_equal(one.collateral.amount, [1.0])


def test_incremental_update_after_a_new_position() -> None:
    full = unified_risk(WORLD, GRID)
    trade = (4, ETH, 0, 0, -1.0, 1_800.0, 10 * DAY, False, 0.7)  # user 4 sells a put
    after = build(
        options=[trade],
        perps=[(4, ETH, 0, 1, 1.0, 1_900.0, 5.0)],
        collateral=[(4, USDC, 0, 1, 500.0, 0.0), (4, STETH, 1, 1, 0.1, 0.1)],
    )
    # user 4's slice plus the new position (user index 0 inside the slice), written back
    one = WORLD.user_slice(4).append(
        options=OptionPositions(*arrays([(0, *trade[1:])], "iiiifffbf"))
    )
    full.set_user(4, unified_risk(one, GRID))
    assert full.options_mtm_usd[4] < 0.0
    assert_same_rows(full, unified_risk(after, GRID), 4, 4)
    assert_same_rows(full, unified_risk(WORLD, GRID), 2, 2)  # other rows untouched


@pytest.mark.parametrize("seed", [1, 2])
def test_random_world_full_and_sliced_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n = 12, 60
    user = rng.integers(0, n_users, n)
    u = rng.integers(0, 2, n)
    options = [
        (user[i], u[i], i % 2, i % 2, rng.normal(0, 2), SPOT[u[i]] * rng.uniform(0.7, 1.3),
         rng.uniform(1, 120) * DAY, bool(i % 3), rng.uniform(0.3, 1.0))
        for i in range(n)
    ]  # fmt: skip
    perps = [(user[i], u[i], 0, 1, rng.normal(0, 1), SPOT[u[i]], 0.0) for i in range(0, n, 3)]
    collateral = [(k, USDC, 0, 0, 20_000.0, 0.0) for k in range(n_users)]
    supplies = [(k, ETH, 1, 0, 5.0, 0.8) for k in range(0, n_users, 2)]
    borrows = [(k, USDC, 1, 0, 6_000.0 + 100 * k) for k in range(0, n_users, 2)]
    users = tuple(f"0x{k:040x}" for k in range(n_users))
    world = build(
        options=options,
        perps=perps,
        collateral=collateral,
        supplies=supplies,
        borrows=borrows,
        users=users,
    )
    with pytest.MonkeyPatch.context() as mp:  # force the large-book code paths
        mp.setattr(margin_module, "_SPARSE_MIN", 0)
        mp.setattr(margin_module, "_FULL_SCAN_MAX", 0)
        mp.setattr(margin_module, "_SCENARIO_BLOCK", 7)
        full = unified_risk(world, GRID)
    for i in range(n_users):
        assert_same_rows(full, user_risk(world, i, GRID), i)


# ---------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None)
@given(
    size=st.floats(0.01, 20.0),
    moneyness=st.floats(0.5, 2.0),
    days=st.floats(1.0, 365.0),
    vol=st.floats(0.1, 2.0),
    call=st.booleans(),
)
def test_hedged_books_have_zero_delta(
    size: float, moneyness: float, days: float, vol: float, call: bool
) -> None:
    k, t = 2_000.0 * moneyness, days * DAY
    hedge = -size * spot_delta(k, t, vol, call)
    world = build(
        options=[
            (0, ETH, 0, 0, size, k, t, call, vol),  # user 0: long + short the same option
            (0, ETH, 1, 0, -size, k, t, call, vol),
            (1, ETH, 0, 0, size, k, t, call, vol),  # user 1: option + delta-hedging perp
        ],
        perps=[(1, ETH, 0, 0, hedge, hedge * 2_000.0, 0.0)],
    )
    r = unified_risk(world, GRID)
    assert abs(r.delta_coin[0, ETH]) < 1e-12 * size
    assert abs(r.delta_coin[1, ETH]) < 1e-6 * max(size, 1.0)
