"""Conditional volatility (EWMA, GARCH(1,1)) and per-user VaR / Expected Shortfall by
filtered historical simulation.

Concept:

- returns are daily log returns ``r_t = ln(P_t / P_{t-1})``, arrays ``(days,)`` or
  ``(days, assets)``; ``sigma2_t`` is the variance of ``r_t`` known the day before.
- EWMA (RiskMetrics 1996): ``sigma2_t = lam sigma2_{t-1} + (1 - lam) r_{t-1}^2``, lam 0.94.
- GARCH(1,1) (Bollerslev 1986): ``sigma2_t = omega + alpha r_{t-1}^2 + beta sigma2_{t-1}``,
  fitted by Gaussian maximum likelihood with ``omega > 0``, ``alpha, beta >= 0`` and
  ``alpha + beta < 1`` (covariance stationarity). Both recursions start from the sample
  variance and run as linear filters (``scipy.signal.lfilter``), not Python loops.
- Filtered historical simulation (Barone-Adesi et al. 1999): standardise each day's
  returns by that day's conditional vol, bootstrap whole days (keeping the cross-asset
  dependence) with a seeded ``numpy.random.Generator``, rescale by the current forecast
  vol and sum over the horizon. Shocks are simple returns ``exp(R) - 1`` per asset.
- P&L per user and scenario: linear exposures ``delta_usd @ shocks`` and/or a revaluation
  callable; ``VaR_q = -P&L_(k)`` with ``k = ceil(n (1 - q))`` (k-th worst of ``n``
  scenarios) and ``ES_q`` = minus the mean of the ``k`` worst, so losses are positive.

Units: vols per day (multiply by sqrt(365) for annual crypto vol); exposures and P&L in
USD. Invariants: results are deterministic for a given seed; ``ES_97.5 >= VaR_97.5``;
VaR and ES scale linearly with linear exposures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize  # type: ignore[import-untyped]
from scipy.signal import lfilter  # type: ignore[import-untyped]

__all__ = [
    "RISKMETRICS_LAMBDA",
    "ConditionalVol",
    "GarchFit",
    "TailRisk",
    "ewma_volatility",
    "fhs_scenarios",
    "fit_garch",
    "log_returns",
    "tail_risk",
    "var_es",
]

RISKMETRICS_LAMBDA = 0.94
"""RiskMetrics decay for daily data."""
_PNL_CHUNK_CELLS = 4_000_000  # users x scenarios evaluated at once (32 MB of float64)

Revalue = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""``shocks (scenarios, assets)`` simple returns -> P&L ``(scenarios, users)`` in USD."""


@dataclass(frozen=True, slots=True)
class ConditionalVol:
    """Daily conditional vol of each observed return and the forecast for the next day."""

    vol: NDArray[np.float64]  # (days,) or (days, assets)
    forecast: NDArray[np.float64]  # () or (assets,)


@dataclass(frozen=True, slots=True)
class GarchFit:
    """GARCH(1,1) parameters (daily, returns in natural units) and the filtered vols."""

    omega: float
    alpha: float
    beta: float
    log_likelihood: float
    converged: bool
    vol: NDArray[np.float64]  # (days,)
    forecast: float  # next-day vol

    @property
    def persistence(self) -> float:
        """``alpha + beta`` (< 1: stationary)."""
        return self.alpha + self.beta

    @property
    def long_run_vol(self) -> float:
        """``sqrt(omega / (1 - alpha - beta))``, daily."""
        return math.sqrt(self.omega / (1.0 - self.persistence))


@dataclass(frozen=True, slots=True)
class TailRisk:
    """Per-user loss measures in USD (positive = loss), from ``n_scenarios`` scenarios."""

    var_99: NDArray[np.float64]
    es_975: NDArray[np.float64]
    n_scenarios: int
    horizon_days: int
    seed: int


def log_returns(prices: ArrayLike) -> NDArray[np.float64]:
    """Daily log returns along axis 0 of a price history ``(days + 1, ...)``."""
    out: NDArray[np.float64] = np.diff(np.log(np.asarray(prices, dtype=np.float64)), axis=0)
    return out


def ewma_volatility(returns: ArrayLike, lam: float = RISKMETRICS_LAMBDA) -> ConditionalVol:
    """RiskMetrics EWMA conditional vol, seeded with the sample variance of the history."""
    r = np.asarray(returns, dtype=np.float64)
    r2 = r * r
    start = np.mean(r2, axis=0)
    # y_t = lam y_{t-1} + (1 - lam) r_t^2 is sigma2_{t+1}; y_{-1} = sigma2_0 = start
    y = lfilter([1.0 - lam], [1.0, -lam], r2, axis=0, zi=(lam * start)[None, ...])[0]
    sigma2 = np.concatenate([start[None, ...], y[:-1]], axis=0)
    return ConditionalVol(np.sqrt(sigma2), np.sqrt(y[-1]))


def _garch_variance(
    r2: NDArray[np.float64], omega: float, alpha: float, beta: float, start: float
) -> NDArray[np.float64]:
    """``sigma2_0 .. sigma2_T`` (one more than returns: the last is the forecast)."""
    u = omega + alpha * r2
    y = lfilter([1.0], [1.0, -beta], u, zi=np.array([beta * start]))[0]
    out: NDArray[np.float64] = np.concatenate([[start], y])
    return out


def fit_garch(returns: ArrayLike) -> GarchFit:
    """Gaussian MLE of GARCH(1,1) on one return series (SLSQP, stationarity constrained).

    The fit runs on returns scaled to unit sample variance (well-conditioned ``omega``);
    ``omega`` is scaled back. Needs a few hundred returns for stable estimates.
    """
    r = np.asarray(returns, dtype=np.float64).ravel()
    scale = float(np.mean(r * r))
    r2 = r * r / scale

    def negative_log_likelihood(theta: NDArray[np.float64]) -> float:
        omega, alpha, beta = (float(v) for v in theta)
        sigma2 = _garch_variance(r2, omega, alpha, beta, 1.0)[:-1]
        return 0.5 * float(np.sum(np.log(sigma2) + r2 / sigma2))

    fit = minimize(
        negative_log_likelihood,
        x0=np.array([0.05, 0.05, 0.90]),
        method="SLSQP",
        bounds=[(1e-8, 10.0), (0.0, 1.0), (0.0, 1.0)],
        constraints=[{"type": "ineq", "fun": lambda th: 1.0 - 1e-6 - th[1] - th[2]}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    omega, alpha, beta = (float(v) for v in fit.x)
    sigma2 = _garch_variance(r * r, omega * scale, alpha, beta, scale)
    n = r.size
    log_likelihood = -float(fit.fun) - 0.5 * n * (math.log(2.0 * math.pi) + math.log(scale))
    return GarchFit(
        omega=omega * scale,
        alpha=alpha,
        beta=beta,
        log_likelihood=log_likelihood,
        converged=bool(fit.success),
        vol=np.sqrt(sigma2[:-1]),
        forecast=math.sqrt(sigma2[-1]),
    )


def fhs_scenarios(
    returns: ArrayLike,
    conditional_vol: ArrayLike,
    forecast_vol: ArrayLike,
    *,
    n_scenarios: int = 10_000,
    horizon_days: int = 1,
    seed: int = 0,
) -> NDArray[np.float64]:
    """Simple-return shocks ``(n_scenarios, assets)`` by filtered historical simulation.

    Each scenario sums ``horizon_days`` bootstrapped days of standardised residuals,
    each rescaled by the (constant over the horizon) forecast vol.
    """
    r = np.asarray(returns, dtype=np.float64)
    r = r[:, None] if r.ndim == 1 else r
    vol = np.asarray(conditional_vol, dtype=np.float64).reshape(r.shape)
    residuals = r / vol
    rng = np.random.default_rng(seed)
    days = rng.integers(0, r.shape[0], size=(horizon_days, n_scenarios))
    log_shock = residuals[days].sum(axis=0) * np.asarray(forecast_vol, dtype=np.float64)
    out: NDArray[np.float64] = np.expm1(log_shock)
    return out


def var_es(
    pnl: ArrayLike, *, var_level: float = 0.99, es_level: float = 0.975
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Empirical VaR and ES (positive = loss) of P&L ``(..., scenarios)`` along the last axis."""
    p = np.asarray(pnl, dtype=np.float64)
    n = p.shape[-1]
    k_var = max(1, math.ceil(n * (1.0 - var_level) - 1e-9))
    k_es = max(1, math.ceil(n * (1.0 - es_level) - 1e-9))
    worst = np.partition(p, (k_var - 1, k_es - 1), axis=-1)
    var: NDArray[np.float64] = -worst[..., k_var - 1]
    es: NDArray[np.float64] = -np.mean(worst[..., :k_es], axis=-1)  # the k_es worst
    return var, es


def tail_risk(
    returns: ArrayLike,
    *,
    delta_usd: ArrayLike | None = None,
    revalue: Revalue | None = None,
    model: str = "ewma",
    n_scenarios: int = 10_000,
    horizon_days: int = 1,
    seed: int = 0,
) -> TailRisk:
    """VaR 99 % and ES 97.5 % per user by FHS over a ``(days, assets)`` return history.

    ``delta_usd`` is ``(users, assets)``: USD P&L per 100 % move of each asset (linear
    exposure). ``revalue`` maps shocks ``(scenarios, assets)`` to P&L ``(scenarios,
    users)`` (full revaluation, e.g. Black-76 on shocked forwards); both add up.
    ``model`` is ``"ewma"`` (lam 0.94) or ``"garch"`` (fitted per asset).
    """
    if delta_usd is None and revalue is None:
        raise ValueError("tail_risk needs delta_usd, revalue or both")
    r = np.asarray(returns, dtype=np.float64)
    r = r[:, None] if r.ndim == 1 else r
    if model == "ewma":
        cond = ewma_volatility(r)
        vol, forecast = cond.vol, cond.forecast
    elif model == "garch":
        fits = [fit_garch(r[:, j]) for j in range(r.shape[1])]  # per asset, not per user
        vol = np.stack([f.vol for f in fits], axis=1)
        forecast = np.array([f.forecast for f in fits])
    else:
        raise ValueError(f"unknown vol model {model!r}; use 'ewma' or 'garch'")
    shocks = fhs_scenarios(
        r, vol, forecast, n_scenarios=n_scenarios, horizon_days=horizon_days, seed=seed
    )
    full = None if revalue is None else np.asarray(revalue(shocks), dtype=np.float64).T
    if delta_usd is None and full is not None:
        var, es = var_es(full)
    else:
        exposure = np.atleast_2d(np.asarray(delta_usd, dtype=np.float64))
        var = np.empty(exposure.shape[0])
        es = np.empty(exposure.shape[0])
        rows = max(1, _PNL_CHUNK_CELLS // n_scenarios)
        for lo in range(0, exposure.shape[0], rows):  # chunks bound memory, ~1e6 cells each
            pnl = exposure[lo : lo + rows] @ shocks.T
            if full is not None:
                pnl += full[lo : lo + rows]
            var[lo : lo + rows], es[lo : lo + rows] = var_es(pnl)
    return TailRisk(var, es, n_scenarios, horizon_days, seed)
