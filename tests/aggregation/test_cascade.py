"""Liquidation cascade: worked rounds, conservation, fixed point, liquidity, determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.cascade import (
    LENDING,
    MARGIN,
    CascadeParams,
    CascadeResult,
    ConstantProduct,
    LinearImpact,
    cascade,
)
from aggregation.exceptions import InvalidParamsError, InvalidShockError
from aggregation.lending import LendingParams
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)

ETH, BTC, USDC, WSTETH, RVETH = range(5)
INDEX = {"ETH": ETH, "BTC": BTC, "USDC": USDC, "WSTETH": WSTETH, "RVETH": RVETH}
PRICES = np.array([2_000.0, 60_000.0, 1.0, 2_360.0, 2_000.0])
UNDERLYING = np.array([0, 1, -1, 0, 0], dtype=np.intp)
CANONICAL = np.array([ETH, BTC, USDC, ETH, ETH], dtype=np.intp)
USERS = tuple(f"0x{i:040x}" for i in range(6))


def columns(rows: list[tuple[Any, ...]], kinds: str) -> list[np.ndarray]:
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
) -> RiskInputs:
    """Rows as in test_risk.py; supplies (user, asset, chain, protocol, amount, LT), bonus 5 %."""
    user, asset, chain, protocol, amount, lt = columns(supplies or [], "iiiiff")
    lending = SupplyPositions(
        user, asset, chain, protocol, amount, lt, lt - 0.05, np.full(user.shape, 1.05)
    )
    return RiskInputs.build(
        USERS,
        spot_usd=np.array([2_000.0, 60_000.0]),
        carry_annual=np.zeros(2),
        asset_price_usd=PRICES,
        asset_underlying=UNDERLYING,
        options=OptionPositions(*columns(options or [], "iiiifffbf")),
        perps=PerpPositions(*columns(perps or [], "iiiifff")),
        collateral=CollateralPositions(*columns(collateral or [], "iiiiff")),
        supplies=lending,
        borrows=BorrowPositions(*columns(borrows or [], "iiiif")),
        n_chains=2,
        n_protocols=2,
    )


def shock(**moves: float) -> np.ndarray:
    out = np.zeros(len(PRICES))
    for name, move in moves.items():
        out[INDEX[name]] = move
    return out


def pools(**models: ConstantProduct | LinearImpact) -> CascadeParams:
    liquidity: list[ConstantProduct | LinearImpact | None] = [None] * len(PRICES)
    for name, model in models.items():
        liquidity[INDEX[name]] = model
    return CascadeParams(liquidity=tuple(liquidity))


# ---------------------------------------------------------------- worked example

# A: 10 ETH (LT 80 %) against 13,500 USDC; B: 10 ETH against 12,000 USDC. ETH -20 % -> 1,600.
TWO = build(
    supplies=[(0, ETH, 0, 0, 10.0, 0.8), (1, ETH, 0, 0, 10.0, 0.8)],
    borrows=[(0, USDC, 0, 0, 13_500.0), (1, USDC, 0, 0, 12_000.0)],
)
AMM = pools(ETH=ConstantProduct(reserve_usd=300_000.0))


def test_round_two_liquidation_comes_from_round_one_impact() -> None:
    r = cascade(TWO, CANONICAL, shock(ETH=-0.20), AMM)
    # round 0 at 1,600: A's HF = 12,800 / 13,500 = 0.948 <= 0.95 -> close factor 100 %:
    # repays 13,500, seizes 13,500 x 1.05 / 1,600 = 8.859375 ETH. B's HF = 1.067: healthy.
    assert r.price_usd[0, ETH] == pytest.approx(1_600.0)
    assert list(r.user_first_round[:2]) == [0, 1]
    assert r.sold_coin[0, ETH] == pytest.approx(8.859375)
    assert r.repaid_debt_usd[0, 0, 0] == pytest.approx(13_500.0)
    # the pool: x0 = 150 ETH, k = 150 x 300,000; after the shock x = sqrt(k / 1,600);
    # selling 8.859375 ETH: price = 1,600 (x / (x + 8.859375))^2
    x = np.sqrt(150 * 300_000 / 1_600)
    p1 = 1_600 * (x / (x + 8.859375)) ** 2
    assert r.price_usd[1, ETH] == pytest.approx(p1)
    assert p1 == pytest.approx(1_443.46, abs=0.01)
    # round 1 at 1,443.46: B's HF = 11,547.7 / 12,000 = 0.962 -> close factor 50 %
    assert r.repaid_debt_usd[1, 0, 0] == pytest.approx(6_000.0)
    assert r.sold_coin[1, ETH] == pytest.approx(6_000 * 1.05 / p1)
    assert list(r.users_liquidated) == [1, 1, 0]
    assert r.converged
    assert r.n_rounds == 3
    assert r.total_bad_debt_usd.sum() == 0.0
    # without price impact, B is never liquidated
    static = cascade(TWO, CANONICAL, shock(ETH=-0.20))
    assert list(static.user_first_round[:2]) == [0, -1]
    assert static.n_rounds == 2


def test_bad_debt_when_collateral_runs_out() -> None:
    r = cascade(TWO, CANONICAL, shock(ETH=-0.50))
    # at 1,000 A would need 14.175 ETH: all 10 seized repay 10 x 1,000 / 1.05 = 9,523.81
    # and 13,500 - 9,523.81 = 3,976.19 USDC is written off; B likewise, 2,476.19
    assert r.bad_debt_usd[0, 0, 0] == pytest.approx(3_976.190476 + 2_476.190476)
    d = r.deficits
    assert list(d.user) == [0, 1]
    assert list(d.asset) == [USDC, USDC]
    np.testing.assert_allclose(d.amount_usd, [3_976.190476, 2_476.190476])
    np.testing.assert_allclose(r.final_inputs.borrows.amount, 0.0)
    np.testing.assert_allclose(r.final_inputs.supplies.amount, 0.0)


def test_healthy_book_without_shock_liquidates_nothing() -> None:
    r = cascade(WORLD, CANONICAL, np.zeros(len(PRICES)), LIQUID)
    assert r.converged
    assert r.n_rounds == 1
    assert r.users_affected == 0
    assert r.sold_coin.sum() == 0.0
    assert r.bad_debt_usd.sum() == 0.0
    np.testing.assert_array_equal(r.price_usd[-1], PRICES)


# ---------------------------------------------------------------- derived assets


def test_depeg_on_top_of_the_root_move() -> None:
    book = build(
        supplies=[(0, WSTETH, 0, 0, 5.0, 0.8), (1, ETH, 1, 0, 5.0, 0.8)],
        borrows=[(0, USDC, 0, 0, 7_000.0), (1, USDC, 1, 0, 6_000.0)],
    )
    # ETH -20 % and wstETH -8 % on top: 2,360 x 0.8 x 0.92 = 1,736.96
    r = cascade(book, CANONICAL, shock(ETH=-0.20, WSTETH=-0.08))
    assert r.price_usd[0, WSTETH] == pytest.approx(2_360 * 0.8 * 0.92)
    assert r.price_usd[0, RVETH] == pytest.approx(1_600.0)
    # wstETH: 5 x 1,736.96 x 0.8 = 6,947.8 < 7,000 -> liquidated; ETH: 6,400 > 6,000
    assert list(r.user_first_round[:2]) == [0, -1]
    # selling wstETH through a thin pool depegs it further and, routed, sells ETH too
    thin = pools(WSTETH=LinearImpact(depth_usd=50_000.0), ETH=LinearImpact(depth_usd=1e6))
    routed = cascade(book, CANONICAL, shock(ETH=-0.20, WSTETH=-0.08), thin)
    assert routed.price_usd[1, WSTETH] < r.price_usd[0, WSTETH]
    assert routed.price_usd[1, ETH] < 1_600.0
    unrouted = cascade(
        book,
        CANONICAL,
        shock(ETH=-0.20, WSTETH=-0.08),
        CascadeParams(liquidity=thin.liquidity, route_to_root=False),
    )
    assert unrouted.price_usd[1, ETH] == pytest.approx(1_600.0)
    assert unrouted.price_usd[1, WSTETH] == pytest.approx(routed.price_usd[1, WSTETH] * (
        unrouted.price_usd[1, ETH] / routed.price_usd[1, ETH]))  # fmt: skip


def test_liquidity_models_by_hand() -> None:
    # linear: selling s x depth moves the price by -s; sold 8.859375 ETH at 1,600
    linear = cascade(TWO, CANONICAL, shock(ETH=-0.20), pools(ETH=LinearImpact(1e6)))
    assert linear.price_usd[1, ETH] == pytest.approx(1_600 * (1 - 8.859375 * 1_600 / 1e6))
    floor = cascade(TWO, CANONICAL, shock(ETH=-0.20), pools(ETH=LinearImpact(100.0, floor=0.5)))
    assert floor.price_usd[1, ETH] == pytest.approx(800.0)
    # a half-life of one round halves the impact each round: prices recover to the shock
    amm = ConstantProduct(300_000.0, half_life_rounds=1.0)
    r = cascade(TWO, CANONICAL, shock(ETH=-0.20), pools(ETH=amm))
    assert r.converged
    assert r.price_usd[-1, ETH] == pytest.approx(1_600.0, rel=1e-6)
    assert r.price_usd[1:, ETH].min() < 1_600.0
    with pytest.raises(InvalidParamsError):
        cascade(TWO, CANONICAL, shock(ETH=-0.20), pools(ETH=LinearImpact(0.0)))
    with pytest.raises(InvalidParamsError):
        cascade(TWO, CANONICAL, shock(), CascadeParams(max_rounds=0))


# ---------------------------------------------------------------- margin accounts


def test_margin_account_closed_with_deficit() -> None:
    # user 2: 5 ETH-PERP long from 2,000 on 1,000 USDC; ETH -40 % -> P&L -4,000
    book = build(
        perps=[(2, ETH, 1, 1, 5.0, 10_000.0, 0.0)], collateral=[(2, USDC, 1, 1, 1_000.0, 0.0)]
    )
    r = cascade(book, CANONICAL, shock(ETH=-0.40), pools(ETH=ConstantProduct(1e6)))
    assert r.user_first_round[2] == 0
    assert r.perp_flow_coin[0, ETH] == 5.0  # the long is sold
    assert r.closed_notional_usd[0, 1, 1] == pytest.approx(5 * 1_200.0)
    assert r.bad_debt_usd[0, 1, 1] == pytest.approx(3_000.0)
    assert r.liquidated_collateral_usd[0, 1, 1] == pytest.approx(1_000.0)
    d = r.deficits
    assert (d.user[0], d.protocol[0], d.chain[0], d.asset[0]) == (2, 1, 1, ETH)
    assert d.amount_coin[0] == pytest.approx(3_000.0 / 1_200.0)
    assert r.price_usd[1, ETH] < 1_200.0  # the closing sale moved the price
    assert r.final_inputs.perps.size[0] == 0.0
    # a short perp is bought back: the price rises
    short = build(
        perps=[(2, ETH, 1, 1, -5.0, -10_000.0, 0.0)], collateral=[(2, USDC, 1, 1, 1_000.0, 0.0)]
    )
    up = cascade(short, CANONICAL, shock(ETH=0.40), pools(ETH=ConstantProduct(1e6)))
    assert up.perp_flow_coin[0, ETH] == -5.0
    assert up.price_usd[1, ETH] > 2_800.0


def test_margin_is_per_protocol_and_chain() -> None:
    """Collateral on another chain does not margin a perp: the account on chain 1 holds a
    long perp and nothing else (equity 100 < MM 5 % x 4,000), so it is liquidated at once,
    while the options account on chain 0 (2,000 USDC against 2 x 9 % x 2,000) stays."""
    book = build(
        options=[(3, ETH, 0, 1, -2.0, 2_200.0, 30 / 365, True, 0.6)],
        perps=[(3, ETH, 1, 1, 2.0, 3_900.0, 0.0)],
        collateral=[(3, USDC, 0, 1, 2_000.0, 0.0)],
    )
    r = cascade(book, CANONICAL, shock())
    ev = r.accounts
    assert list(zip(ev.round, ev.user, ev.protocol, ev.chain, ev.kind, strict=True)) == [
        (0, 3, 1, 1, MARGIN)
    ]
    assert r.final_inputs.perps.size[0] == 0.0
    assert r.final_inputs.options.size[0] == -2.0
    # no margin left: the settled P&L (+100) pays the fee (2.5 % x 4,000 capped at 100)
    assert r.bad_debt_usd.sum() == 0.0
    assert r.closed_notional_usd[0, 1, 1] == pytest.approx(4_000.0)


def test_options_account_closed_at_intrinsic_with_penalty() -> None:
    # user 1: short 2 ETH puts K 2,200; 300 USDC and 0.5 ETH (haircut 15 %). ETH -20 %:
    # equity 300 + 680 = 980 < MM 2 (144 + 600) = 1,488. Owed 1,200 + 148.8 -> everything
    # (300 + 800) is taken and 248.8 is bad debt, booked on the puts' ETH.
    book = build(
        options=[(1, ETH, 0, 1, -2.0, 2_200.0, 30 / 365, False, 0.6)],
        collateral=[(1, USDC, 0, 1, 300.0, 0.0), (1, ETH, 0, 1, 0.5, 0.15)],
    )
    assert cascade(book, CANONICAL, shock()).users_affected == 0
    r = cascade(book, CANONICAL, shock(ETH=-0.20))
    assert r.user_first_round[1] == 0
    assert r.sold_coin[0, ETH] == pytest.approx(0.5)
    assert r.sold_coin[0, USDC] == pytest.approx(300.0)
    assert r.bad_debt_usd[0, 1, 0] == pytest.approx(248.8)
    d = r.deficits
    assert (d.asset[0], d.amount_coin[0]) == (ETH, pytest.approx(248.8 / 1_600.0))
    check_conservation(book, r)


def test_crash_in_steps() -> None:
    """``steps`` reaches the shock geometrically, each step to its fixed point: the final
    price is the shock's without impact, and with impact the sales happen on the way."""
    r = cascade(TWO, CANONICAL, shock(ETH=-0.36), CascadeParams(steps=2))
    assert r.price_usd[0, ETH] == pytest.approx(2_000.0 * 0.8)  # step 1: -20 %
    assert r.price_usd[-1, ETH] == pytest.approx(2_000.0 * 0.64)
    # A (liquidatable below 1,687.5) fails in step 1, B (below 1,500) in step 2
    assert list(r.user_first_round[:2]) == [0, 2]
    one = cascade(TWO, CANONICAL, shock(ETH=-0.36))
    assert set(np.flatnonzero(one.user_first_round >= 0)) == {0, 1}
    ev = r.accounts
    assert set(zip(ev.user.tolist(), ev.kind.tolist(), strict=True)) == {(0, LENDING), (1, LENDING)}
    with pytest.raises(InvalidParamsError, match="steps"):
        cascade(TWO, CANONICAL, shock(), CascadeParams(steps=0))


# ---------------------------------------------------------------- properties

# margin accounts hold their collateral where their positions are (same protocol, chain)
WORLD = build(
    options=[(3, ETH, 0, 1, -2.0, 2_200.0, 30 / 365, True, 0.6)],
    perps=[(3, ETH, 0, 1, 2.0, 3_900.0, 0.0), (4, BTC, 1, 1, 0.2, 11_800.0, 0.0)],
    collateral=[(3, USDC, 0, 1, 2_000.0, 0.0), (4, WSTETH, 1, 1, 2.0, 0.1)],
    supplies=[(0, ETH, 0, 0, 10.0, 0.8), (0, RVETH, 1, 0, 4.0, 0.7), (1, WSTETH, 1, 0, 5.0, 0.8),
              (2, BTC, 0, 0, 0.5, 0.75), (5, ETH, 0, 0, 3.0, 0.83)],
    borrows=[(0, USDC, 0, 0, 11_000.0), (0, USDC, 1, 0, 3_000.0), (1, USDC, 1, 0, 7_500.0),
             (2, USDC, 0, 0, 18_000.0), (5, ETH, 0, 0, 1.0)],
)  # fmt: skip
LIQUID = pools(
    ETH=ConstantProduct(400_000.0),
    WSTETH=LinearImpact(100_000.0),
    RVETH=ConstantProduct(50_000.0, half_life_rounds=2.0),
    BTC=LinearImpact(500_000.0),
)


def check_conservation(book: RiskInputs, r: CascadeResult, *, usdc_debt: bool = False) -> None:
    """Collateral sold = seized = initial - final; with USDC-only debt (price 1), debt
    repaid + written off = initial - final debt exactly."""
    final = r.final_inputs
    sold = r.sold_coin.sum(axis=0)
    seized = np.bincount(book.supplies.asset, book.supplies.amount - final.supplies.amount, 5)
    seized = seized.astype(np.float64)  # an empty book counts in integers
    seized += np.bincount(
        book.collateral.asset, book.collateral.amount - final.collateral.amount, 5
    )
    np.testing.assert_allclose(sold, seized, rtol=1e-9, atol=1e-9)
    assert (final.supplies.amount >= -1e-12).all()
    assert (final.borrows.amount >= -1e-9).all()
    assert (r.bad_debt_usd >= 0.0).all()
    assert (r.liquidated_collateral_usd >= 0.0).all()
    assert r.deficits.amount_usd.sum() == pytest.approx(r.bad_debt_usd.sum(), abs=1e-6)
    assert r.converged
    assert (final.borrows.amount <= book.borrows.amount + 1e-9).all()
    if usdc_debt:
        lending_bad = r.deficits.amount_usd[r.deficits.asset == USDC].sum()
        gone = (book.borrows.amount - final.borrows.amount).sum()
        assert gone == pytest.approx(r.repaid_debt_usd.sum() + lending_bad, rel=1e-9, abs=1e-6)


def test_conservation_on_a_mixed_book() -> None:
    for move in (-0.1, -0.3, -0.5, -0.7, 0.3):
        r = cascade(WORLD, CANONICAL, shock(ETH=move, WSTETH=-0.05, BTC=move / 2), LIQUID)
        check_conservation(WORLD, r)
    deep = cascade(WORLD, CANONICAL, shock(ETH=-0.5, WSTETH=-0.05, BTC=-0.25), LIQUID)
    assert deep.users_affected >= 4
    assert deep.n_rounds >= 2


def test_deterministic() -> None:
    a = cascade(WORLD, CANONICAL, shock(ETH=-0.45, WSTETH=-0.05), LIQUID)
    b = cascade(WORLD, CANONICAL, shock(ETH=-0.45, WSTETH=-0.05), LIQUID)
    for name in ("price_usd", "sold_coin", "bad_debt_usd", "user_first_round", "perp_flow_coin"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.deficits.amount_usd, b.deficits.amount_usd)


@st.composite
def long_books(draw: st.DrawFn) -> RiskInputs:
    """Volatile collateral against USDC debt, long perps: every fall hurts."""
    supplies, borrows, perps, collateral = [], [], [], []
    for user in range(draw(st.integers(1, 6))):
        chain, protocol = draw(st.integers(0, 1)), 0
        asset = draw(st.sampled_from([ETH, WSTETH, RVETH, BTC]))
        amount = draw(st.floats(0.5, 20.0))
        lt = draw(st.sampled_from([0.7, 0.8, 0.85]))
        value = amount * PRICES[asset] * lt
        supplies.append((user, asset, chain, protocol, amount, lt))
        borrows.append((user, USDC, chain, protocol, value * draw(st.floats(0.3, 0.99))))
        if draw(st.booleans()):
            size = draw(st.floats(0.1, 5.0))
            perps.append((user, ETH, chain, 1, size, size * 2_000.0, 0.0))
            collateral.append((user, USDC, chain, 1, draw(st.floats(100.0, 5_000.0)), 0.0))
    return build(supplies=supplies, borrows=borrows, perps=perps, collateral=collateral)


@settings(max_examples=25, deadline=None)
@given(long_books(), st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.booleans())
def test_properties_with_impact(book: RiskInputs, a: float, b: float, full: bool) -> None:
    lending = LendingParams(close_factor=1.0) if full else LendingParams()
    params = CascadeParams(liquidity=LIQUID.liquidity, lending=lending, max_rounds=200)
    r = cascade(book, CANONICAL, shock(ETH=-a, BTC=-b), params)
    check_conservation(book, r, usdc_debt=True)
    assert r.n_rounds <= params.max_rounds


@settings(max_examples=25, deadline=None)
@given(long_books(), st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.booleans())
def test_deeper_shock_never_helps_without_impact(
    book: RiskInputs, a: float, b: float, full: bool
) -> None:
    """Exact without price impact: a deeper fall liquidates no less and leaves no less
    bad debt (with impact, see test_gap_risk_shallower_shock_more_bad_debt)."""
    lending = LendingParams(close_factor=1.0) if full else LendingParams()
    params = CascadeParams(lending=lending)
    shallow, deep = sorted((a, b))
    r1 = cascade(book, CANONICAL, shock(ETH=-shallow, BTC=-shallow / 2), params)
    r2 = cascade(book, CANONICAL, shock(ETH=-deep, BTC=-deep / 2), params)
    assert r2.bad_debt_usd.sum() >= r1.bad_debt_usd.sum() - 1e-6
    assert r2.users_affected >= r1.users_affected
    assert (r2.user_first_round >= 0).sum() >= (r1.user_first_round >= 0).sum()
    sold1, sold2 = r1.sold_coin.sum(axis=0), r2.sold_coin.sum(axis=0)
    assert (sold2 >= sold1 - 1e-9).all()


def test_gap_risk_shallower_shock_more_bad_debt() -> None:
    """Known limit of monotonicity (module docstring): one oracle price per round.

    A (10 ETH / 5,700 USDC, liquidatable below 712.5) and a large B (liquidatable below
    760). At 700 both are liquidated in round 0 and A stays solvent; at 750 only B is,
    its sale gaps the price far below A's liquidation price, and A leaves bad debt.
    """
    book = build(
        supplies=[(0, ETH, 0, 0, 10.0, 0.8), (1, ETH, 0, 0, 400.0, 0.8)],
        borrows=[(0, USDC, 0, 0, 5_700.0), (1, USDC, 0, 0, 243_200.0)],
    )
    prm = pools(ETH=ConstantProduct(reserve_usd=600_000.0))
    shallow = cascade(book, CANONICAL, shock(ETH=-0.625), prm)  # 750
    deep = cascade(book, CANONICAL, shock(ETH=-0.65), prm)  # 700
    assert shallow.user_first_round[0] == 1
    assert deep.user_first_round[0] == 0
    assert shallow.bad_debt_usd.sum() > deep.bad_debt_usd.sum()


def test_invalid_shock() -> None:
    with pytest.raises(InvalidShockError, match="shape"):
        cascade(TWO, CANONICAL, [0.1])
    with pytest.raises(InvalidShockError, match="asset 0"):
        cascade(TWO, CANONICAL, shock(ETH=-1.0))
