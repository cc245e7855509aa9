"""Batch invariance: a user's unified risk does not depend on who else is in the batch.

Every per-user number of :func:`aggregation.risk.unified_risk` must be the same bits
whether it is computed over the whole book, over one user's slice or over any subset of
users (the API assembles reports from one pass over the book and the CLI from one user's
slice, and their bytes must agree). Compared with ``==`` (and the sign of zero), never
approximately.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

import aggregation.accounts as accounts_module
import aggregation.margin as margin_module
from aggregation.accounts import ProtocolRules
from aggregation.books import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
from aggregation.risk import Breakdown, UnifiedRisk, unified_risk, user_risk
from aggregation.scenarios import ScenarioGrid, deribit_pm_grid, derive_pmrm_grid, span16_grid

SPOT = np.array([2_000.0, 60_000.0, 150.0])
CARRY = np.array([0.05, 0.0, 0.07])
# assets: the three underlyings, a liquid-staked ETH, a stablecoin
PRICES = np.array([2_000.0, 60_000.0, 150.0, 2_100.0, 1.0])
UNDERLYING_OF = np.array([0, 1, 2, 0, -1], dtype=np.intp)
N_CHAINS, N_PROTOCOLS = 2, 3
GRIDS = {"derive": derive_pmrm_grid(), "deribit": deribit_pm_grid(), "span": span16_grid()}


def random_book(seed: int, n_users: int) -> RiskInputs:
    """A random book with crowded users: many positions per (account, underlying), the same
    contract held several times in one account, long and short, every kind of position."""
    rng = np.random.default_rng(seed)
    weight = rng.pareto(1.0, n_users) + 0.05  # a few users hold most positions

    def users(n: int) -> NDArray[np.intp]:
        return rng.choice(n_users, n, p=weight / weight.sum()).astype(np.intp)

    def ints(high: int, n: int) -> NDArray[np.intp]:
        return rng.integers(0, high, n).astype(np.intp)

    n_opt = int(rng.integers(0, 40 * n_users))
    und = ints(3, n_opt)
    moneyness = rng.choice(np.linspace(0.5, 1.6, 12), n_opt)
    expiry = rng.choice(np.array([0.0, 1.0, 7.0, 30.0, 90.0, 365.0]) / 365.0, n_opt)
    options = OptionPositions(
        users(n_opt), und, ints(N_CHAINS, n_opt), ints(N_PROTOCOLS, n_opt),
        rng.choice([-1.0, 1.0], n_opt) * rng.lognormal(0.0, 1.5, n_opt),
        SPOT[und] * moneyness, expiry, rng.random(n_opt) < 0.5,
        0.4 + 0.3 * (moneyness - 1.0) ** 2 + 0.1 * und,
    )  # fmt: skip
    n_perp = int(rng.integers(0, 10 * n_users))
    p_und = ints(3, n_perp)
    p_size = rng.normal(0.0, 3.0, n_perp)
    perps = PerpPositions(
        users(n_perp), p_und, ints(N_CHAINS, n_perp), ints(N_PROTOCOLS, n_perp), p_size,
        p_size * SPOT[p_und] * rng.normal(1.0, 0.1, n_perp), rng.normal(0.0, 50.0, n_perp),
    )  # fmt: skip
    n_coll = int(rng.integers(0, 5 * n_users))
    c_asset = ints(5, n_coll)
    collateral = CollateralPositions(
        users(n_coll), c_asset, ints(N_CHAINS, n_coll), ints(N_PROTOCOLS, n_coll),
        rng.uniform(-0.1, 1.0, n_coll) * 40_000.0 / PRICES[c_asset],
        np.where(UNDERLYING_OF[c_asset] < 0, 0.0, rng.uniform(0.0, 0.3, n_coll)),
    )  # fmt: skip
    n_sup = int(rng.integers(0, 4 * n_users))
    s_asset = ints(5, n_sup)
    lt = rng.uniform(0.5, 0.9, n_sup)
    supplies = SupplyPositions(
        users(n_sup), s_asset, ints(N_CHAINS, n_sup), ints(N_PROTOCOLS, n_sup),
        rng.uniform(100.0, 50_000.0, n_sup) / PRICES[s_asset], lt, lt - 0.05,
        np.full(n_sup, 1.05),
    )  # fmt: skip
    n_bor = int(rng.integers(0, 3 * n_users))
    b_asset = ints(5, n_bor)
    borrows = BorrowPositions(
        users(n_bor), b_asset, ints(N_CHAINS, n_bor), ints(N_PROTOCOLS, n_bor),
        rng.uniform(100.0, 40_000.0, n_bor) / PRICES[b_asset],
    )  # fmt: skip
    pu = (N_PROTOCOLS, 3)
    rules = ProtocolRules(
        rng.uniform(0.0, 0.2, N_PROTOCOLS), rng.uniform(0.2, 0.3, N_PROTOCOLS),
        rng.uniform(0.0, 0.1, N_PROTOCOLS), rng.uniform(0.0, 0.1, pu), rng.uniform(0.1, 0.2, pu),
        rng.uniform(0.0, 0.05, pu), rng.random(N_PROTOCOLS) < 0.3,
    )  # fmt: skip
    return RiskInputs.build(
        tuple(f"0x{i:040x}" for i in range(n_users)), spot_usd=SPOT, carry_annual=CARRY,
        asset_price_usd=PRICES, asset_underlying=UNDERLYING_OF, options=options, perps=perps,
        collateral=collateral, supplies=supplies, borrows=borrows, n_chains=N_CHAINS,
        n_protocols=N_PROTOCOLS, isolated=rng.random(n_users) < 0.2, rules=rules,
    )  # fmt: skip


def subset(inputs: RiskInputs, chosen: NDArray[np.intp]) -> RiskInputs:
    """The book of the users ``chosen`` (sorted), renumbered: its own contract table."""
    renumber = np.full(inputs.n_users, -1, np.intp)
    renumber[chosen] = np.arange(chosen.shape[0])

    def rows(book: Any) -> Any:
        keep = renumber[book.user] >= 0
        columns = {f.name: getattr(book, f.name)[keep] for f in fields(book)}
        columns["user"] = renumber[book.user[keep]]
        return type(book)(**columns)

    return RiskInputs.build(
        tuple(inputs.users[i] for i in chosen), spot_usd=inputs.spot_usd,
        carry_annual=inputs.carry_annual, asset_price_usd=inputs.asset_price_usd,
        asset_underlying=inputs.asset_underlying, options=rows(inputs.options),
        perps=rows(inputs.perps), collateral=rows(inputs.collateral),
        supplies=rows(inputs.supplies), borrows=rows(inputs.borrows),
        n_chains=inputs.n_chains, n_protocols=inputs.n_protocols,
        isolated=inputs.isolated[chosen], rules=inputs.rules,
    )  # fmt: skip


def same_bits(a: NDArray[Any], b: NDArray[Any]) -> bool:
    """Equal values, NaN where NaN, and the same sign of every zero."""
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(a, b, equal_nan=True) and (np.signbit(a) == np.signbit(b)).all())


def assert_rows_identical(batch: UnifiedRisk, rows: NDArray[np.intp], part: UnifiedRisk) -> None:
    """Rows ``rows`` of ``batch`` are ``part``'s rows, bit for bit, in every field."""
    for f in fields(UnifiedRisk):
        mine, theirs = getattr(batch, f.name), getattr(part, f.name)
        if isinstance(mine, Breakdown):
            for g in fields(Breakdown):
                a, b = getattr(mine, g.name)[rows], getattr(theirs, g.name)
                assert same_bits(a, b), f"{f.name}.{g.name}: {a} != {b}"
        elif isinstance(mine, np.ndarray):
            assert same_bits(mine[rows], theirs), f"{f.name}: {mine[rows]} != {theirs}"
        elif f.name == "users":
            assert tuple(mine[i] for i in rows) == theirs


def batch_risk(inputs: RiskInputs, grid: ScenarioGrid, *, large: bool) -> UnifiedRisk:
    """The whole book's risk; ``large`` forces the code paths of large books."""
    with pytest.MonkeyPatch.context() as mp:
        if large:
            mp.setattr(margin_module, "_SPARSE_MIN", 0)
            mp.setattr(margin_module, "_FULL_SCAN_MAX", 0)
            mp.setattr(margin_module, "_SCENARIO_BLOCK", 5)
            mp.setattr(accounts_module, "_SMALL_ROWS", 0)
            mp.setattr(accounts_module, "_DENSE_KEYS", 0)
            mp.setattr(accounts_module, "_DENSE_PER_ROW", 0)
        return unified_risk(inputs, grid, return_pnl=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_users=st.integers(1, 24),
    grid=st.sampled_from(sorted(GRIDS)),
    large=st.booleans(),
)
def test_batch_rows_are_single_user_results(
    seed: int, n_users: int, grid: str, large: bool
) -> None:
    book = random_book(seed, n_users)
    batch = batch_risk(book, GRIDS[grid], large=large)
    for i in range(n_users):
        one = user_risk(book, i, GRIDS[grid], return_pnl=True)
        assert_rows_identical(batch, np.array([i]), one)


@pytest.mark.parametrize("seed", [3, 17, 2024])
def test_any_subset_gives_the_same_rows(seed: int) -> None:
    book = random_book(seed, 40)
    grid = GRIDS["derive"]
    batch = batch_risk(book, grid, large=True)
    rng = np.random.default_rng(seed)
    for size in (2, 7, 23):
        chosen = np.sort(rng.choice(book.n_users, size, replace=False)).astype(np.intp)
        part = unified_risk(subset(book, chosen), grid, return_pnl=True)
        assert_rows_identical(batch, chosen, part)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_sums_restart_exactly(seed: int) -> None:
    """Each run's cumulative sums are its own ``np.cumsum``, bit for bit, whatever the
    runs around it (one table, or one per width class with a long run among short ones)."""
    rng = np.random.default_rng(seed)
    for lengths in (rng.integers(1, 5, 50), np.concatenate([rng.integers(1, 3, 3000), [700]])):
        rng.shuffle(lengths)
        start = np.zeros(int(lengths.sum()), np.bool_)
        start[np.cumsum(lengths) - lengths] = True
        values = rng.normal(0.0, 1e6, start.shape[0]) * rng.choice([1e-9, 1.0, 1e9], start.size)
        got = accounts_module._Segments.of(start).cumsum(values)
        for lo, n in zip(np.cumsum(lengths) - lengths, lengths, strict=True):
            assert same_bits(got[lo : lo + n], np.cumsum(values[lo : lo + n]))
