"""Aave-v3-style lending health: worked examples, liquidation terms, liquidation prices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.lending import (
    LendingBook,
    account_health,
    collateral_seized,
    lending_liquidation_moves,
    liquidation_prices,
    max_repay_amount,
)

ETH, USDC, BTC = 0, 1, 2
PRICES = np.array([2_000.0, 1.0, 60_000.0])
UNDERLYING = np.array([0, -1, 1], dtype=np.intp)


def book(
    supplies: list[tuple[int, int, float, float]],
    borrows: list[tuple[int, int, float]],
    n_accounts: int | None = None,
) -> LendingBook:
    """``supplies``: (account, asset, amount, LT); ``borrows``: (account, asset, amount)."""
    s = np.array(supplies, dtype=np.float64).reshape(-1, 4)
    b = np.array(borrows, dtype=np.float64).reshape(-1, 3)
    n = len(s) and int(s[:, 0].max()) + 1
    n = max(n, len(b) and int(b[:, 0].max()) + 1)
    return LendingBook(
        n_accounts=n if n_accounts is None else n_accounts,
        supply_account=s[:, 0].astype(np.intp),
        supply_asset=s[:, 1].astype(np.intp),
        supply_amount=s[:, 2],
        liquidation_threshold=s[:, 3],
        ltv=s[:, 3] - 0.05,
        liquidation_bonus=np.full(len(s), 1.05),
        borrow_account=b[:, 0].astype(np.intp),
        borrow_asset=b[:, 1].astype(np.intp),
        borrow_amount=b[:, 2],
    )


# ---------------------------------------------------------------- worked examples


def test_health_factor_by_hand() -> None:
    # 10 ETH at $2,000, LT 82.5 %, against 10,000 USDC: HF = 16,500 / 10,000 = 1.65
    h = account_health(book([(0, ETH, 10.0, 0.825)], [(0, USDC, 10_000.0)]), PRICES)
    assert h.health_factor[0] == pytest.approx(1.65)
    assert h.collateral_usd[0] == 20_000.0
    assert h.debt_usd[0] == 10_000.0
    assert h.borrowing_power_usd[0] == pytest.approx(20_000 * 0.775)
    assert not h.liquidatable[0]
    assert h.close_factor[0] == 0.0


def test_no_debt_is_infinitely_healthy() -> None:
    lb = book([(0, ETH, 1.0, 0.8)], [], n_accounts=2)
    h = account_health(lb, PRICES)
    assert np.isinf(h.health_factor).all()
    assert not h.liquidatable.any()
    assert np.isnan(liquidation_prices(lb, PRICES)).all()


@pytest.mark.parametrize(
    ("eth", "debt_usdc", "close"),
    [
        (10.0, 17_000.0, 0.5),  # HF = 16,500 / 17,000 = 0.97: half
        (10.0, 18_000.0, 1.0),  # HF = 0.917 <= 0.95: all of it
        (0.8, 1_600.0, 1.0),  # HF = 0.825 and dust anyway
        (0.95, 1_600.0, 1.0),  # HF = 0.98 but debt (and collateral) below $2,000: dust
        (10.0, 10_000.0, 0.0),  # healthy
    ],
)
def test_close_factor(eth: float, debt_usdc: float, close: float) -> None:
    lb = book([(0, ETH, eth, 0.825)], [(0, USDC, debt_usdc)])
    h = account_health(lb, PRICES)
    assert h.close_factor[0] == close
    assert max_repay_amount(lb, h)[0] == pytest.approx(close * debt_usdc)


def test_collateral_seized_by_hand() -> None:
    # repay 1,000 USDC, seize ETH at $2,000 with a 5 % bonus: 1,000 / 2,000 x 1.05 = 0.525
    seized, repaid = collateral_seized(
        np.array([1_000.0]), np.array([1.0]), np.array([2_000.0]), np.array([1.05])
    )
    assert (seized[0], repaid[0]) == pytest.approx((0.525, 1_000.0))
    # only 0.3 ETH left: seize it all, repay 0.3 x 2,000 / 1.05 = 571.43
    seized, repaid = collateral_seized(
        np.array([1_000.0]), np.array([1.0]), np.array([2_000.0]), np.array([1.05]), np.array([0.3])
    )
    assert (seized[0], repaid[0]) == pytest.approx((0.3, 600.0 / 1.05))


def test_liquidation_price_by_hand() -> None:
    # 10 ETH (LT 0.825) against 10,000 USDC: p* = 10,000 / 8.25 = 1,212.12
    lb = book([(0, ETH, 10.0, 0.825)], [(0, USDC, 10_000.0)])
    assert liquidation_prices(lb, PRICES)[0] == pytest.approx(10_000 / 8.25)


def test_liquidation_price_when_collateral_is_also_debt() -> None:
    # account 0: 1 ETH (LT .8) + 10,000 USDC (LT .9), borrows 3 ETH: a *rising* ETH hurts:
    #   HF(p) = (0.8 p + 9,000) / 3 p = 1  ->  p* = 9,000 / 2.2 = 4,090.9
    # account 1: 10 ETH (LT .8) + 5,000 USDC (LT .9), borrows 6 ETH: HF > 1 at every price
    # account 2: 10 ETH (LT .8), borrows 9 ETH: HF = 0.889 whatever the price
    lb = book(
        [
            (0, ETH, 1.0, 0.8),
            (0, USDC, 10000.0, 0.9),
            (1, ETH, 10.0, 0.8),
            (1, USDC, 5000.0, 0.9),
            (2, ETH, 10.0, 0.8),
        ],
        [(0, ETH, 3.0), (1, ETH, 6.0), (2, ETH, 9.0)],
    )
    p = liquidation_prices(lb, PRICES)
    assert p[0] == pytest.approx(9_000 / 2.2)
    assert p[1] == pytest.approx(4_400 / 9_000)  # account 0 also dies if USDC depegs to 0.49
    assert np.isnan(p[2:]).all()  # accounts 1 and 2: no price of either asset does it


def test_liquidation_moves_are_exact() -> None:
    # ETH collateral vs USDC debt: down move m* with 16,500 (1 + m) = 10,000
    # USDC collateral vs ETH debt: up move with 18,000 = 10,000 (1 + m)
    lb = book(
        [(0, ETH, 10.0, 0.825), (1, USDC, 20_000.0, 0.9), (2, USDC, 1_000.0, 0.9)],
        [(0, USDC, 10_000.0), (1, ETH, 5.0), (2, USDC, 1_000.0)],
    )
    down, up = lending_liquidation_moves(lb, PRICES, UNDERLYING, 2)
    assert down[0, 0] == pytest.approx(10_000 / 16_500 - 1)
    assert np.isnan(up[0, 0])
    assert up[1, 0] == pytest.approx(18_000 / 10_000 - 1)
    assert np.isnan(down[1, 0])
    assert np.isnan(down[:2, 1]).all()
    assert np.isnan(up[:2, 1]).all()
    assert down[2, 0] == 0.0
    assert up[2, 1] == 0.0


# ---------------------------------------------------------------- properties

accounts = st.lists(
    st.tuples(
        st.floats(0.01, 100.0),  # ETH supplied
        st.floats(0.0, 50_000.0),  # USDC supplied
        st.floats(0.0, 50.0),  # ETH borrowed
        st.floats(1.0, 200_000.0),  # USDC borrowed
        st.floats(0.5, 0.95),  # LT
    ),
    min_size=1,
    max_size=6,
)


Row = tuple[float, float, float, float, float]


def random_book(rows: list[Row]) -> LendingBook:
    supplies = [(i, ETH, e, lt) for i, (e, _, _, _, lt) in enumerate(rows)]
    supplies += [(i, USDC, u, lt) for i, (_, u, _, _, lt) in enumerate(rows)]
    borrows = [(i, ETH, e) for i, (_, _, e, _, _) in enumerate(rows)]
    borrows += [(i, USDC, u) for i, (_, _, _, u, _) in enumerate(rows)]
    return book(supplies, borrows)


@settings(max_examples=50, deadline=None)
@given(rows=accounts, extra=st.floats(0.0, 1_000.0))
def test_health_is_monotone_in_collateral(rows: list[Row], extra: float) -> None:
    lb = random_book(rows)
    before = account_health(lb, PRICES).health_factor
    more = LendingBook(
        lb.n_accounts, lb.supply_account, lb.supply_asset, lb.supply_amount + extra,
        lb.liquidation_threshold, lb.ltv, lb.liquidation_bonus, lb.borrow_account,
        lb.borrow_asset, lb.borrow_amount,
    )  # fmt: skip
    assert (account_health(more, PRICES).health_factor >= before).all()


@settings(max_examples=50, deadline=None)
@given(rows=accounts)
def test_liquidation_price_gives_hf_one(rows: list[Row]) -> None:
    lb = random_book(rows)
    p_star = liquidation_prices(lb, PRICES)
    for i in np.flatnonzero(np.isfinite(p_star)):
        prices = PRICES.copy()
        prices[lb.supply_asset[i]] = p_star[i]
        hf = account_health(lb, prices).health_factor[lb.supply_account[i]]
        assert hf == pytest.approx(1.0, rel=1e-9)
