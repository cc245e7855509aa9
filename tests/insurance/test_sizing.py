"""Capital sizing: tail measures, shocks, determinism, smoothing and coverage alerts; the
``max_cascades`` screen against every path through the cascade, on small synthetic books
with short positions (short perps, short calls, ETH/BTC borrowed against USDC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.cascade import cascade
from aggregation.loader import load_snapshot
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
from aggregation.snapshot import PriceHistory, Snapshot
from insurance.config import AlertLevels, SizingConfig
from insurance.exceptions import SizingError
from insurance.sizing import (
    PathLosses,
    correlated_shocks,
    default_max_cascades,
    first_order_bad_debt,
    oracle_vols,
    publish_requirement,
    simulate_bad_debt,
    size_capital,
    smooth,
    tail_count,
    tail_fit,
)

LOSSES = st.lists(st.floats(0, 1e9, allow_nan=False), min_size=50, max_size=400).map(np.asarray)


@settings(max_examples=60, deadline=None)
@given(LOSSES, st.floats(0.9, 0.999))
def test_es_is_at_least_var(losses: np.ndarray, confidence: float) -> None:
    fit = tail_fit(losses, confidence=confidence, tail_quantile=0.8)
    assert fit.es_usd >= fit.var_usd - 1e-6 * max(1.0, fit.var_usd)
    assert fit.es_empirical_usd >= 0


@pytest.mark.parametrize("shape", [0.0, 0.3])
def test_gpd_tail_is_fitted_and_monotone_in_the_confidence(shape: float) -> None:
    rng = np.random.default_rng(11)
    losses = np.where(rng.random(20_000) < 0.7, 0.0, 0.0)  # zero-inflated, like bad debt
    tail = rng.pareto(1 / shape, 20_000) if shape else rng.exponential(1.0, 20_000)
    losses = np.where(rng.random(20_000) < 0.3, tail * 1_000, losses)
    fits = [tail_fit(losses, confidence=q, tail_quantile=0.9) for q in (0.95, 0.99, 0.995, 0.999)]
    assert all(f.gpd_shape is not None for f in fits)
    assert fits[0].gpd_shape == pytest.approx(shape, abs=0.1)
    es = [f.es_usd for f in fits]
    var = [f.var_usd for f in fits]
    assert es == sorted(es)
    assert var == sorted(var)
    assert all(e >= v for e, v in zip(es, var, strict=True))
    # the GPD and the empirical ES agree where the sample is rich (99 %)
    assert fits[1].es_usd == pytest.approx(fits[1].es_empirical_usd, rel=0.15)


def test_too_few_exceedances_fall_back_to_the_empirical_tail() -> None:
    losses = np.array([0.0] * 95 + [1.0, 2.0, 3.0, 4.0, 5.0])
    fit = tail_fit(losses, confidence=0.99, tail_quantile=0.9)
    assert fit.gpd_shape is None
    assert (fit.var_usd, fit.es_usd) == (5.0, 5.0)
    with pytest.raises(SizingError, match="no simulated paths"):
        tail_fit(np.array([]), confidence=0.99, tail_quantile=0.9)


def test_shocks_are_deterministic_correlated_and_fat_tailed() -> None:
    vol = np.array([0.04, 0.03])
    corr = np.array([[1.0, 0.7], [0.7, 1.0]])
    kw: dict[str, Any] = {"paths": 40_000, "horizon_days": 1.0, "dof": 4.0}
    a = correlated_shocks(vol, corr, seed=3, **kw)
    b = correlated_shocks(vol, corr, seed=3, **kw)
    c = correlated_shocks(vol, corr, seed=4, **kw)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    logs = np.log1p(a)
    assert np.corrcoef(logs.T)[0, 1] == pytest.approx(0.7, abs=0.03)
    assert logs.std(axis=0) == pytest.approx(vol, rel=0.05)
    kurtosis = ((logs[:, 0] - logs[:, 0].mean()) ** 4).mean() / logs[:, 0].var() ** 2
    assert kurtosis > 4.0  # a normal has 3
    assert (a > -1.0).all()


@settings(max_examples=200, deadline=None)
@given(st.none() | st.integers(0, 10**15), st.integers(0, 10**15), st.integers(0, 10_000))
def test_smoothing_moves_at_most_the_step(previous: int | None, raw: int, bps: int) -> None:
    out = smooth(previous, raw, bps)
    if previous is None or previous == 0:
        assert out == raw
    else:
        assert abs(out - previous) <= previous * bps // 10_000
        assert min(previous, raw) <= out <= max(previous, raw)


def test_alert_levels() -> None:
    levels = AlertLevels(ok=1.2, warn=1.0)
    assert [levels.level(x) for x in (2.0, 1.2, 1.1, 1.0, 0.5)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "critical",
    ]


@pytest.mark.chain
def test_sizing_on_the_devnet_is_deterministic_and_published_smoothly(backstop: Any) -> None:
    with backstop.store.engine.connect() as conn:
        snapshot = load_snapshot(conn, backstop.registry)
    config = replace(backstop.config.sizing, floor=Decimal(1_000), max_step_bps=100)
    first = size_capital(snapshot, config, decimals=6, paths=300, seed=9)
    again = size_capital(snapshot, config, decimals=6, paths=300, seed=9)
    other = size_capital(snapshot, config, decimals=6, paths=300, seed=10)
    assert first == again
    assert first.tail != other.tail
    assert first.raw_required_usd == max(first.floor_usd, first.tail.es_usd, first.gearing_usd)
    assert first.raw_required >= first.raw_required_usd * 10**6
    assert first.exposure_usd > 0
    assert first.tail.es_usd >= first.tail.var_usd
    assert set(first.assets) == {"ETH", "BTC"}
    looser = size_capital(snapshot, replace(config, confidence=0.99), decimals=6, paths=300, seed=9)
    assert looser.tail.es_usd <= first.tail.es_usd
    screened = size_capital(snapshot, config, decimals=6, paths=300, seed=9, max_cascades=60)
    assert screened.cascades_run == 60 + 20  # the screened paths and a sample of the rest
    assert screened.screen is not None
    assert screened.screen.max_cascades == 60
    assert screened.tail.var_usd <= first.tail.var_usd
    assert screened.tail.es_empirical_usd == pytest.approx(first.tail.es_empirical_usd, rel=0.01)

    with backstop.store.transaction() as conn:
        published = publish_requirement(conn, first, 100)
        bigger = replace(first, raw_required=first.raw_required * 3)
        second = publish_requirement(conn, bigger, 100)
    assert published == first.raw_required
    assert second == published + published // 100  # at most 1 % per update


# ---------------------------------------------------------------- the screen vs every path

ETH, BTC, USDC = range(3)
SPOT = np.array([2_000.0, 60_000.0])
IDX = np.intp
Rows = Sequence[tuple[Any, ...]]


def _book(
    n_users: int,
    *,
    supplies: Rows = (),
    borrows: Rows = (),
    collateral: Rows = (),
    perps: Rows = (),
    calls: Rows = (),
) -> Snapshot:
    """A one-chain book: protocol 0 lends (LT 0.83, bonus 5 %), protocol 1 runs the margin
    accounts. Rows: supplies/borrows/collateral (user, asset, USD); perps (user,
    underlying, signed USD notional, entry / spot); calls (user, underlying, signed USD
    notional, strike / spot, days)."""

    def cols(rows: Rows, n: int) -> list[np.ndarray]:
        return [np.array(c) for c in zip(*rows, strict=True)] if rows else [np.empty(0)] * n

    prices = np.array([*SPOT, 1.0])
    su, sa, sv = cols(supplies, 3)
    bu, ba, bv = cols(borrows, 3)
    cu, ca, cv = cols(collateral, 3)
    pu, pk, pn, pe = cols(perps, 4)
    ou, ok, on, om, od = cols(calls, 5)
    zeros = np.zeros
    sa, ba, ca, pk, ok = (a.astype(IDX) for a in (sa, ba, ca, pk, ok))
    inputs = RiskInputs.build(
        tuple(f"0x{i:040x}" for i in range(n_users)),
        spot_usd=SPOT, carry_annual=zeros(2), asset_price_usd=prices,
        asset_underlying=np.array([0, 1, -1], IDX),
        options=OptionPositions(
            ou.astype(IDX), ok, zeros(ou.size, IDX), np.ones(ou.size, IDX), on / SPOT[ok],
            SPOT[ok] * om, od / 365.0, np.ones(ou.size, np.bool_), np.full(ou.size, 0.6),
        ),
        perps=PerpPositions(
            pu.astype(IDX), pk, zeros(pu.size, IDX), np.ones(pu.size, IDX), pn / SPOT[pk], pn * pe,
            zeros(pu.size),
        ),
        collateral=CollateralPositions(
            cu.astype(IDX), ca, zeros(cu.size, IDX), np.ones(cu.size, IDX), cv / prices[ca],
            zeros(cu.size),
        ),
        supplies=SupplyPositions(
            su.astype(IDX), sa, zeros(su.size, IDX), zeros(su.size, IDX), sv / prices[sa],
            np.full(su.size, 0.83), np.full(su.size, 0.8), np.full(su.size, 1.05),
        ),
        borrows=BorrowPositions(bu.astype(IDX), ba, zeros(bu.size, IDX), zeros(bu.size, IDX),
                                bv / prices[ba]),
        n_chains=1, n_protocols=2,
    )  # fmt: skip
    times = np.arange(3, dtype=np.int64) * 3_600  # too short a history: the fallback vol
    history = tuple(
        PriceHistory(name, 1, times, np.full(3, spot))
        for name, spot in zip(("ETH", "BTC"), SPOT, strict=True)
    )
    return Snapshot(
        inputs=inputs, watermark={1: 0}, block_time_s={1: 0}, chain_ids=(1,),
        protocols=("lending@1", "perps@1"), underlyings=("ETH", "BTC"),
        assets=("ETH", "BTC", "USDC"), asset_canonical=np.arange(3, dtype=IDX),
        history=history,
        warnings=(), complete=True,
    )  # fmt: skip


def _rows(*columns: Any) -> list[tuple[Any, ...]]:
    """Rows from columns (scalars repeat)."""
    return list(zip(*np.broadcast_arrays(*columns), strict=True))


def _mixed_book(seed: int = 3) -> Snapshot:
    """300 users, healthy today, a quarter each: ETH/BTC supplied against USDC debt (lose in
    falls), USDC supplied against ETH/BTC debt (lose in rallies), long or short perps, and
    short calls (lose in rallies)."""
    rng = np.random.default_rng(seed)
    q = 75
    user = np.arange(4 * q)
    und = rng.integers(0, 2, 4 * q)
    usd = rng.uniform(5e3, 5e4, 4 * q)
    health = rng.uniform(1.05, 1.6, 2 * q)
    side = np.where(rng.random(q) < 0.5, -1.0, 1.0)
    longs, shorts, perps, calls = (slice(i * q, (i + 1) * q) for i in range(4))
    debt = usd[: 2 * q] * 0.83 / health
    return _book(
        4 * q,
        supplies=_rows(user[longs], und[longs], usd[longs])
        + _rows(user[shorts], USDC, usd[shorts]),
        borrows=_rows(user[longs], USDC, debt[:q]) + _rows(user[shorts], und[shorts], debt[q:]),
        collateral=_rows(user[2 * q :], USDC, usd[2 * q :] * rng.uniform(0.1, 0.35, 2 * q)),
        perps=_rows(user[perps], und[perps], side * usd[perps], rng.normal(1.0, 0.01, q)),
        calls=_rows(user[calls], und[calls], -usd[calls], rng.uniform(1.0, 1.3, q),
                    rng.uniform(7, 30, q)),
    )  # fmt: skip


CONFIG = SizingConfig(paths=1_000, seed=5, horizon_days=3.0, confidence=0.99)


@pytest.fixture(scope="module")
def mixed() -> tuple[Snapshot, np.ndarray, PathLosses]:
    """The mixed book, ``size_capital``'s paths for ``CONFIG``, and every path's bad debt."""
    snapshot = _mixed_book()
    vols, corr = oracle_vols(snapshot)
    moves = correlated_shocks(vols, corr, paths=CONFIG.paths, horizon_days=CONFIG.horizon_days,
                              dof=CONFIG.tail_dof, seed=CONFIG.seed)  # fmt: skip
    return snapshot, moves, simulate_bad_debt(snapshot, moves)


def test_the_synthetic_book_is_live_and_loses_both_ways(mixed: Any) -> None:
    snapshot, moves, exact = mixed
    x = snapshot.inputs
    assert cascade(x, snapshot.asset_canonical, np.zeros(3)).users_affected == 0
    worst = np.argsort(-exact.loss_usd)[: tail_count(CONFIG.paths, CONFIG.confidence)]
    eth = moves[worst, 0]
    assert (eth > 0).any()  # the tail holds rallies ...
    assert (eth < 0).any()  # ... and falls


def test_screened_es_matches_every_path_through_the_cascade(mixed: Any) -> None:
    """Tolerance: the screened ES within 1 % of the exact one (here it is exact)."""
    snapshot, moves, exact = mixed
    fit = tail_fit(exact.loss_usd, confidence=0.99, tail_quantile=0.9)
    k = tail_count(CONFIG.paths, 0.99)  # 10
    for max_cascades in (4 * k, 8 * k):
        screened = simulate_bad_debt(snapshot, moves, max_cascades=max_cascades, seed=5)
        assert screened.cascades_run == max_cascades + max(20, max_cascades // 4)
        known = ~np.isnan(screened.loss_usd)
        assert np.array_equal(screened.loss_usd[known], exact.loss_usd[known])
        worst = np.argsort(-exact.loss_usd)[:k]
        assert np.isin(worst, screened.screened).all()  # the screen caught the whole tail
        got = tail_fit(screened.loss_usd, confidence=0.99, tail_quantile=0.9,
                       screened=max_cascades)  # fmt: skip
        assert got.es_empirical_usd == pytest.approx(fit.es_empirical_usd, rel=0.01)
        assert got.var_usd <= fit.var_usd + 1e-6  # never above the exact answer
        # the GPD threshold sits inside the screened stratum: same fit as the exact losses
        # at that threshold (unrun paths are never counted as zeros below it)
        same = tail_fit(exact.loss_usd, confidence=0.99, tail_quantile=0.9,
                        screened=max_cascades)  # fmt: skip
        assert (got.threshold_usd, got.exceedances) == (same.threshold_usd, same.exceedances)
        assert got.es_usd == pytest.approx(same.es_usd, rel=1e-9)


def test_a_book_that_only_loses_in_rallies_is_caught() -> None:
    """Short ETH perps and ETH borrowed against USDC: no collateral loses in a fall, so a
    screen on collateral losses alone would rank every path zero."""
    rng = np.random.default_rng(8)
    n = 60
    usd = rng.uniform(1e4, 5e4, n)
    users = np.arange(n)
    half = n // 2
    snapshot = _book(
        n,
        supplies=_rows(users[:half], USDC, usd[:half]),
        borrows=_rows(users[:half], ETH, usd[:half] * 0.83 / rng.uniform(1.05, 1.3, half)),
        collateral=_rows(users[half:], USDC, usd[half:] * rng.uniform(0.08, 0.2, half)),
        perps=_rows(users[half:], ETH, -usd[half:], 1.0),
    )
    vols, corr = oracle_vols(snapshot)
    moves = correlated_shocks(vols, corr, paths=500, horizon_days=5.0, dof=4.0, seed=2)
    exact = simulate_bad_debt(snapshot, moves)
    assert exact.loss_usd.max() > 0
    assert (exact.loss_usd[moves[:, ETH] <= 0] == 0).all()  # falls cost nothing
    screened = simulate_bad_debt(snapshot, moves, max_cascades=20)
    assert screened.score_usd is not None
    assert (moves[screened.screened, ETH] > 0).all()  # the screen took rallies only
    full = tail_fit(exact.loss_usd, confidence=0.99, tail_quantile=0.9)
    got = tail_fit(screened.loss_usd, confidence=0.99, tail_quantile=0.9, screened=20)
    assert got.es_usd == pytest.approx(full.es_empirical_usd, rel=0.01)
    assert got.var_usd == pytest.approx(full.var_usd, rel=1e-9)


@pytest.mark.parametrize(
    ("move", "bad_usd"),
    [(-0.6, 2_190.48), (-0.3, 0.0), (0.0, 0.0), (0.3, 5_000.0), (0.9, 3_776.19 + 17_000.0)],
)
def test_the_first_order_bad_debt_is_the_cascades_on_a_linear_book(
    move: float, bad_usd: float
) -> None:
    """Where nothing is convex the screen's loss is the cascade's bad debt, both ways: ETH
    supplied against 6,000 USDC (exhausted below -37 %), 7,000 USD of ETH borrowed against
    USDC (above +36 %), a 20,000 USD short perp on 1,000 USDC margin (above +5 %)."""
    snapshot = _book(
        3,
        supplies=[(0, ETH, 10_000.0), (1, USDC, 10_000.0)],
        borrows=[(0, USDC, 6_000.0), (1, ETH, 7_000.0)],
        collateral=[(2, USDC, 1_000.0)],
        perps=[(2, ETH, -20_000.0, 1.0)],
    )
    screen = first_order_bad_debt(snapshot, np.array([[move, 0.0]]))
    shock = np.array([move, 0.0, 0.0])
    bad = cascade(snapshot.inputs, snapshot.asset_canonical, shock).bad_debt_usd.sum()
    assert bad == pytest.approx(bad_usd, abs=0.01)
    assert screen[0] == pytest.approx(bad, rel=1e-9, abs=1e-6)


def test_screened_means_are_estimated_not_counted_as_zero(mixed: Any) -> None:
    snapshot, _, exact = mixed
    losses = exact.loss_usd
    full = size_capital(snapshot, CONFIG, decimals=6)
    assert full.screen is None
    assert (full.mean_bad_debt_se_usd, full.loss_probability_se) == (0.0, 0.0)
    assert full.mean_bad_debt_usd == pytest.approx(losses.mean())
    assert full.loss_probability == pytest.approx((losses > 0).mean())
    cut = size_capital(snapshot, CONFIG, decimals=6, max_cascades=40)
    assert cut.cascades_run == 60
    assert cut.screen is not None
    assert (cut.screen.max_cascades, cut.screen.sampled, cut.screen.unscreened) == (40, 20, 960)
    assert cut.screen.sampled_above_var == 0
    assert cut.tail.es_empirical_usd == pytest.approx(full.tail.es_empirical_usd, rel=0.01)
    assert cut.mean_bad_debt_se_usd > 0.0
    assert abs(cut.mean_bad_debt_usd - losses.mean()) <= 3 * cut.mean_bad_debt_se_usd
    assert abs(cut.loss_probability - (losses > 0).mean()) <= 3 * cut.loss_probability_se
    # counting the unscreened paths as zero would be far off: most losing paths are there
    zeroed = np.where(np.isnan(simulate_bad_debt(snapshot, _moves(snapshot), max_cascades=40,
                                                 sample=0).loss_usd), 0.0, losses)  # fmt: skip
    assert (zeroed > 0).mean() < 0.5 * (losses > 0).mean()
    bound = size_capital(snapshot, CONFIG, decimals=6, max_cascades=40, sample=0)
    assert bound.cascades_run == 40
    assert bound.mean_bad_debt_se_usd == bound.loss_probability_se == float("inf")
    assert bound.mean_bad_debt_usd <= losses.mean()  # a lower bound, and said so
    assert bound.tail.es_empirical_usd == cut.tail.es_empirical_usd


def _moves(snapshot: Snapshot) -> np.ndarray:
    vols, corr = oracle_vols(snapshot)
    return correlated_shocks(vols, corr, paths=CONFIG.paths, horizon_days=CONFIG.horizon_days,
                             dof=CONFIG.tail_dof, seed=CONFIG.seed)  # fmt: skip


def test_too_few_cascades_for_the_es_are_refused(mixed: Any) -> None:
    snapshot, _, _ = mixed
    assert default_max_cascades(1_000, 0.99) == 200
    assert default_max_cascades(100_000, 0.995) == 2_000  # 4x the 500 tail paths
    with pytest.raises(SizingError, match="--max-cascades 40 or more"):
        size_capital(snapshot, CONFIG, decimals=6, max_cascades=5)
