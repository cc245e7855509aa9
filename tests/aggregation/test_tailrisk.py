"""EWMA and GARCH(1,1) vols, filtered historical simulation, per-user VaR and ES."""

from __future__ import annotations

import numpy as np
import pytest

from aggregation.tailrisk import (
    ewma_volatility,
    fhs_scenarios,
    fit_garch,
    log_returns,
    tail_risk,
    var_es,
)


def simulate_garch(n: int, omega: float, alpha: float, beta: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    r = np.empty(n)
    s2 = omega / (1 - alpha - beta)
    for t in range(n):  # test data generator, sequential by nature
        r[t] = np.sqrt(s2) * z[t]
        s2 = omega + alpha * r[t] ** 2 + beta * s2
    return r


@pytest.fixture(scope="module")
def two_asset_returns() -> np.ndarray:
    eth = simulate_garch(2000, 4e-6, 0.08, 0.90, seed=1)
    noise = np.random.default_rng(2).standard_normal(2000) * 0.002
    return np.stack([eth, 0.9 * eth + noise], axis=1)  # a highly correlated second asset


def test_log_returns() -> None:
    np.testing.assert_allclose(log_returns([100.0, 110.0, 99.0]), np.log([1.1, 0.9]))
    assert log_returns(np.ones((5, 3))).shape == (4, 3)


def test_ewma_matches_riskmetrics_recursion() -> None:
    r = np.random.default_rng(0).standard_normal((50, 2)) * 0.03
    fit = ewma_volatility(r)
    s2 = np.mean(r**2, axis=0)
    expected = []
    for t in range(50):  # sigma2_t = 0.94 sigma2_{t-1} + 0.06 r_{t-1}^2
        expected.append(np.sqrt(s2))
        s2 = 0.94 * s2 + 0.06 * r[t] ** 2
    np.testing.assert_allclose(fit.vol, np.array(expected), rtol=1e-12)
    np.testing.assert_allclose(fit.forecast, np.sqrt(s2), rtol=1e-12)


def test_garch_recovers_simulated_parameters() -> None:
    r = simulate_garch(4000, 2e-6, 0.08, 0.90, seed=11)
    fit = fit_garch(r)
    assert fit.converged
    assert fit.alpha == pytest.approx(0.08, abs=0.03)
    assert fit.beta == pytest.approx(0.90, abs=0.04)
    assert fit.persistence < 1.0
    assert fit.long_run_vol == pytest.approx(np.sqrt(2e-6 / 0.02), rel=0.25)
    assert fit.vol.shape == r.shape
    assert np.isfinite(fit.log_likelihood)
    # the maximum beats the true parameters on the same (sample-variance started) likelihood
    s2, ll = np.mean(r**2), 0.0
    for x in r:
        ll += -0.5 * (np.log(2 * np.pi * s2) + x * x / s2)
        s2 = 2e-6 + 0.08 * x * x + 0.90 * s2
    assert fit.log_likelihood >= ll


def test_garch_stays_stationary_on_integrated_data() -> None:
    r = simulate_garch(1500, 1e-7, 0.10, 0.8999, seed=5)  # alpha + beta ~ 1
    fit = fit_garch(r)
    assert fit.persistence < 1.0
    assert fit.omega > 0.0
    assert min(fit.alpha, fit.beta) >= 0.0


def test_fhs_is_deterministic_and_rescaled(two_asset_returns: np.ndarray) -> None:
    cond = ewma_volatility(two_asset_returns)
    a = fhs_scenarios(two_asset_returns, cond.vol, cond.forecast, n_scenarios=5000, seed=9)
    b = fhs_scenarios(two_asset_returns, cond.vol, cond.forecast, n_scenarios=5000, seed=9)
    c = fhs_scenarios(two_asset_returns, cond.vol, cond.forecast, n_scenarios=5000, seed=10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (5000, 2)
    np.testing.assert_allclose(np.std(np.log1p(a), axis=0), cond.forecast, rtol=0.08)
    # multi-day horizons: about sqrt(h) times the one-day dispersion
    ten = fhs_scenarios(
        two_asset_returns, cond.vol, cond.forecast, n_scenarios=5000, horizon_days=10, seed=9
    )
    ratio = np.std(np.log1p(ten), axis=0) / np.std(np.log1p(a), axis=0)
    np.testing.assert_allclose(ratio, np.sqrt(10), rtol=0.1)


def test_var_es_order_statistics() -> None:
    pnl = np.arange(1.0, 1001.0) - 500.0  # 1000 scenarios: worst is -499
    var, es = var_es(pnl)
    assert float(var) == 490.0  # 10th worst
    assert float(es) == pytest.approx(-np.mean(pnl[:25]))  # mean of the 25 worst
    var2, _ = var_es(np.stack([pnl, 2 * pnl]))
    np.testing.assert_allclose(var2, [490.0, 980.0])


def test_tail_risk_per_user_linear_and_revaluation(two_asset_returns: np.ndarray) -> None:
    exposure = np.array([[1e6, 0.0], [2e6, 0.0], [-1e6, 0.0], [1e6, -1e6], [0.0, 0.0]])
    linear = tail_risk(two_asset_returns, delta_usd=exposure, n_scenarios=4000, seed=1)
    assert linear.var_99.shape == linear.es_975.shape == (5,)
    assert linear.var_99[1] == pytest.approx(2 * linear.var_99[0])  # positive homogeneity
    assert linear.var_99[4] == 0.0
    assert linear.var_99[3] < linear.var_99[0]  # the hedge leg diversifies
    again = tail_risk(two_asset_returns, delta_usd=exposure, n_scenarios=4000, seed=1)
    np.testing.assert_array_equal(linear.var_99, again.var_99)

    def revalue(shocks: np.ndarray) -> np.ndarray:
        pnl: np.ndarray = shocks @ exposure.T  # the same linear book, fully revalued
        return pnl

    full = tail_risk(two_asset_returns, revalue=revalue, n_scenarios=4000, seed=1)
    np.testing.assert_allclose(full.var_99, linear.var_99, rtol=1e-12)
    both = tail_risk(
        two_asset_returns, delta_usd=exposure, revalue=revalue, n_scenarios=4000, seed=1
    )
    np.testing.assert_allclose(both.es_975, 2 * linear.es_975, rtol=1e-12)


def test_normal_returns_give_normal_quantiles() -> None:
    r = np.random.default_rng(3).standard_normal(5000) * 0.02
    risk = tail_risk(r, delta_usd=[[1e6]], n_scenarios=40_000, seed=4, model="garch")
    sigma = 0.02 * 1e6
    assert float(risk.var_99[0]) == pytest.approx(2.326 * sigma, rel=0.1)
    assert float(risk.es_975[0]) == pytest.approx(2.338 * sigma, rel=0.1)


def test_tail_risk_rejects_bad_arguments(two_asset_returns: np.ndarray) -> None:
    with pytest.raises(ValueError, match="delta_usd"):
        tail_risk(two_asset_returns)
    with pytest.raises(ValueError, match="garch"):
        tail_risk(two_asset_returns, delta_usd=[[1.0, 1.0]], model="historical")
