"""Capital sizing: tail measures, shocks, determinism, smoothing and coverage alerts."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.loader import load_snapshot
from insurance.config import AlertLevels
from insurance.exceptions import SizingError
from insurance.sizing import (
    correlated_shocks,
    publish_requirement,
    size_capital,
    smooth,
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
    assert screened.cascades_run == 60
    assert screened.tail.var_usd <= first.tail.var_usd

    with backstop.store.transaction() as conn:
        published = publish_requirement(conn, first, 100)
        bigger = replace(first, raw_required=first.raw_required * 3)
        second = publish_requirement(conn, bigger, 100)
    assert published == first.raw_required
    assert second == published + published // 100  # at most 1 % per update
