"""Capital sizing: how much the backstop must hold, from simulated bad debt.

Concept (REFERENCES.md §7, Nexus Mutual MCR on Solvency II lines)::

    required = max(floor, ES_q(simulated bad debt), exposure / gearing)

1. **Shocks.** One move per risky root asset (the snapshot's underlyings) over
   ``horizon_days``: multivariate Student-t (``tail_dof``, scaled to unit variance), i.e.
   correlated fat-tailed log returns ``sigma_h x T - sigma_h^2 / 2``. ``sigma`` per asset is
   the EWMA (lambda 0.94) forecast over the indexed oracle history, returns normalised by
   the square root of their spacing in days (oracle rounds are irregular), clamped to
   ``[VOL_FLOOR_ANNUAL, VOL_CAP_ANNUAL]``; too short a history falls back to
   ``FALLBACK_VOL_ANNUAL``. The correlation is estimated on common timestamps (too few:
   ``FALLBACK_CORRELATION``), then made positive definite. Derived assets follow their
   root (the cascade's convention); stablecoins do not move.
2. **Bad debt per path**: the shock through :func:`aggregation.cascade.cascade` (fire
   sales, rounds of liquidations); the path's loss is its total bad debt in USD. With
   ``max_cascades`` only the paths with the largest first-order collateral loss are run
   through the cascade, the others count as no bad debt (a lower bound, exact when the
   screen ranks the tail correctly; for large books).
3. **Tail.** Empirical VaR/ES at ``confidence`` (``k = ceil(n (1 - q))`` worst paths), and
   a generalized-Pareto fit (``scipy.stats.genpareto``, location 0) to the exceedances over
   the ``tail_quantile`` quantile: ``VaR_q = u + beta/xi ((n/N_u (1-q))^-xi - 1)``,
   ``ES_q = (VaR_q + beta - xi u) / (1 - xi)``. The GPD ES is used when there are at
   least ``MIN_EXCEEDANCES`` exceedances and ``xi < 1``; otherwise the empirical ES.
4. **Smoothing** (:func:`smooth`): the published requirement moves at most
   ``max_step_bps`` per update towards the raw one (Nexus: 1 %).

Coverage ratio = pool / requirement, with the alert levels of ``[insurance.alerts]``.

Invariants (tested): deterministic for a seed; ES >= VaR; the requirement is
non-decreasing in the confidence level. Units: USD in the math (floats), the fund
asset's smallest unit (an integer, rounded up) for what is published.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import genpareto  # type: ignore[import-untyped]
from sqlalchemy import Connection, insert, select

from aggregation.cascade import cascade
from aggregation.snapshot import Snapshot
from aggregation.tailrisk import RISKMETRICS_LAMBDA, ewma_volatility
from insurance.config import SizingConfig
from insurance.exceptions import SizingError
from insurance.models import REQUIREMENTS
from insurance.waterfall import BPS

__all__ = [
    "FALLBACK_VOL_ANNUAL",
    "SizingResult",
    "TailFit",
    "correlated_shocks",
    "exposure_usd",
    "oracle_vols",
    "publish_requirement",
    "simulate_bad_debt",
    "size_capital",
    "smooth",
    "tail_fit",
]

Float = NDArray[np.float64]
DAYS_PER_YEAR = 365.0
FALLBACK_VOL_ANNUAL = 0.8
VOL_FLOOR_ANNUAL = 0.2
VOL_CAP_ANNUAL = 3.0
FALLBACK_CORRELATION = 0.6
MIN_RETURNS = 10
MIN_EXCEEDANCES = 30
_DAY_S = 86_400.0
_EIGEN_FLOOR = 1e-6
_XI_ZERO = 1e-9  # |xi| below this: the exponential tail (xi -> 0 limit)


@dataclass(frozen=True, slots=True)
class TailFit:
    """Tail measures of simulated losses (USD, positive = loss)."""

    var_usd: float
    es_usd: float
    es_empirical_usd: float
    threshold_usd: float
    exceedances: int
    gpd_shape: float | None  # xi; None when the GPD was not used
    gpd_scale: float | None  # beta


@dataclass(frozen=True, slots=True)
class SizingResult:
    """One sizing run; ``required`` is in the fund asset's smallest unit."""

    paths: int
    seed: int
    confidence: float
    horizon_days: float
    assets: tuple[str, ...]
    vol_daily: tuple[float, ...]
    correlation: tuple[tuple[float, ...], ...]
    tail: TailFit
    mean_bad_debt_usd: float
    loss_probability: float
    cascades_run: int
    exposure_usd: float
    floor_usd: float
    gearing_usd: float
    raw_required_usd: float
    binding: str  # "floor", "es" or "gearing"
    raw_required: int
    watermark: Mapping[int, int]


def oracle_vols(snapshot: Snapshot) -> tuple[Float, Float]:
    """Daily vol per underlying and their correlation, from the snapshot's oracle history."""
    vols: list[float] = []
    series: list[dict[int, float]] = []
    for history in snapshot.history:
        times = history.updated_at_s.astype(np.float64) / _DAY_S
        prices = history.price_usd
        ok = np.flatnonzero((np.diff(times) > 0) & (prices[1:] > 0) & (prices[:-1] > 0))
        if ok.size < MIN_RETURNS:
            vols.append(FALLBACK_VOL_ANNUAL / math.sqrt(DAYS_PER_YEAR))
            series.append({})
            continue
        z = np.log(prices[ok + 1] / prices[ok]) / np.sqrt(np.diff(times)[ok])
        forecast = float(ewma_volatility(z, RISKMETRICS_LAMBDA).forecast)
        low, high = (v / math.sqrt(DAYS_PER_YEAR) for v in (VOL_FLOOR_ANNUAL, VOL_CAP_ANNUAL))
        vols.append(min(max(forecast, low), high))
        series.append(dict(zip(history.updated_at_s[ok + 1].tolist(), z.tolist(), strict=True)))
    k = len(vols)
    corr = np.full((k, k), FALLBACK_CORRELATION)
    for i in range(k):
        for j in range(i):
            common = sorted(series[i].keys() & series[j].keys())
            if len(common) >= MIN_RETURNS:
                a = np.array([series[i][t] for t in common])
                b = np.array([series[j][t] for t in common])
                if a.std() > 0 and b.std() > 0:
                    corr[i, j] = corr[j, i] = float(np.corrcoef(a, b)[0, 1])
    np.fill_diagonal(corr, 1.0)
    return np.asarray(vols, dtype=np.float64), _positive_definite(corr)


def _positive_definite(corr: Float) -> Float:
    values, vectors = np.linalg.eigh(corr)
    fixed = vectors @ np.diag(np.maximum(values, _EIGEN_FLOOR)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    out: Float = fixed / np.outer(scale, scale)
    return out


def correlated_shocks(
    vol_daily: Float, corr: Float, *, paths: int, horizon_days: float, dof: float, seed: int
) -> Float:
    """Simple-return moves ``(paths, assets)``: multivariate Student-t log returns."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(corr)
    normal = rng.standard_normal((paths, vol_daily.size)) @ chol.T
    mixing = np.sqrt(rng.chisquare(dof, paths) / dof)[:, None]
    t = normal / mixing * math.sqrt((dof - 2.0) / dof)  # unit variance
    sigma = vol_daily * math.sqrt(horizon_days)
    out: Float = np.expm1(sigma * t - 0.5 * sigma * sigma)
    return out


def exposure_usd(snapshot: Snapshot) -> float:
    """What the backstop covers: lending debt plus gross perp notional, USD."""
    x = snapshot.inputs
    debt = float(np.sum(x.borrows.amount * x.asset_price_usd[x.borrows.asset]))
    perps = float(np.sum(np.abs(x.perps.size) * x.spot_usd[x.perps.underlying]))
    return debt + perps


def _shock_matrix(snapshot: Snapshot, moves: Float) -> Float:
    """Cascade shocks ``(paths, snapshot assets)``: each underlying's move on its root."""
    full = np.zeros((moves.shape[0], len(snapshot.assets)))
    for j, name in enumerate(snapshot.underlyings):
        if name in snapshot.assets:
            full[:, snapshot.assets.index(name)] = moves[:, j]
    return full


def simulate_bad_debt(
    snapshot: Snapshot, moves: Float, *, max_cascades: int | None = None
) -> tuple[Float, int]:
    """Total bad debt (USD) of each path, and how many paths ran through the cascade."""
    shocks = _shock_matrix(snapshot, moves)
    x = snapshot.inputs
    order = np.arange(shocks.shape[0])
    if max_cascades is not None and max_cascades < shocks.shape[0]:
        # screen: first-order loss of lending supplies and margin collateral, per path
        weight = np.zeros(len(snapshot.assets))
        roots = snapshot.asset_canonical
        np.add.at(
            weight, roots[x.supplies.asset], x.supplies.amount * x.asset_price_usd[x.supplies.asset]
        )
        np.add.at(
            weight,
            roots[x.collateral.asset],
            x.collateral.amount * x.asset_price_usd[x.collateral.asset],
        )
        order = np.argsort(shocks @ weight, kind="stable")[:max_cascades]
    losses = np.zeros(shocks.shape[0])
    for i in order:
        result = cascade(x, snapshot.asset_canonical, shocks[i])
        losses[i] = max(0.0, float(result.bad_debt_usd.sum()))
    return losses, int(order.size)


def tail_fit(losses: Float, *, confidence: float, tail_quantile: float) -> TailFit:
    """Empirical and GPD tail measures at ``confidence`` (module docstring, step 3)."""
    n = losses.size
    if n == 0:
        raise SizingError("no simulated paths; run with --paths 100 or more")
    k = max(1, math.ceil(n * (1.0 - confidence) - 1e-9))
    worst = np.sort(losses)[::-1]
    var, es = float(worst[k - 1]), float(worst[:k].mean())
    u = float(np.quantile(losses, tail_quantile))
    excess = losses[losses > u] - u
    if confidence <= tail_quantile or excess.size < MIN_EXCEEDANCES or float(excess.std()) == 0:
        return TailFit(var, es, es, u, int(excess.size), None, None)
    with warnings.catch_warnings():  # the optimiser may warn on degenerate samples
        warnings.simplefilter("ignore", RuntimeWarning)
        xi, _, beta = (float(v) for v in genpareto.fit(excess, floc=0.0))
    if not (math.isfinite(xi) and math.isfinite(beta) and beta > 0 and xi < 1.0):
        return TailFit(var, es, es, u, int(excess.size), None, None)
    ratio = n / excess.size * (1.0 - confidence)
    gpd_var = u - beta * math.log(ratio) if abs(xi) < _XI_ZERO else u + beta / xi * (ratio**-xi - 1)
    gpd_var = max(gpd_var, u)
    gpd_es = (gpd_var + beta - xi * u) / (1.0 - xi)
    return TailFit(gpd_var, max(gpd_es, gpd_var), es, u, int(excess.size), xi, beta)


def size_capital(
    snapshot: Snapshot,
    config: SizingConfig,
    *,
    decimals: int,
    paths: int | None = None,
    seed: int | None = None,
    max_cascades: int | None = None,
) -> SizingResult:
    """Run the Monte Carlo and return the raw requirement (module docstring)."""
    n = config.paths if paths is None else paths
    s = config.seed if seed is None else seed
    if n < 1:
        raise SizingError(f"--paths {n}: need at least one path (e.g. 2000)")
    if not snapshot.underlyings:
        raise SizingError("the snapshot holds no risky asset; index the chains first")
    vols, corr = oracle_vols(snapshot)
    moves = correlated_shocks(
        vols, corr, paths=n, horizon_days=config.horizon_days, dof=config.tail_dof, seed=s
    )
    losses, ran = simulate_bad_debt(snapshot, moves, max_cascades=max_cascades)
    tail = tail_fit(losses, confidence=config.confidence, tail_quantile=config.tail_quantile)
    exposure = exposure_usd(snapshot)
    floor = float(config.floor)
    geared = exposure / config.gearing
    candidates = {"floor": floor, "es": tail.es_usd, "gearing": geared}
    binding = max(candidates, key=lambda name: candidates[name])
    raw = candidates[binding]
    return SizingResult(
        paths=n,
        seed=s,
        confidence=config.confidence,
        horizon_days=config.horizon_days,
        assets=tuple(snapshot.underlyings),
        vol_daily=tuple(float(v) for v in vols),
        correlation=tuple(tuple(float(c) for c in row) for row in corr),
        tail=tail,
        mean_bad_debt_usd=float(losses.mean()),
        loss_probability=float(np.mean(losses > 0)),
        cascades_run=ran,
        exposure_usd=exposure,
        floor_usd=floor,
        gearing_usd=geared,
        raw_required_usd=raw,
        binding=binding,
        raw_required=math.ceil(raw * 10**decimals),
        watermark=dict(snapshot.watermark),
    )


def smooth(previous: int | None, raw: int, max_step_bps: int) -> int:
    """``raw`` moved to within ``max_step_bps`` of ``previous`` (the first update is raw)."""
    if previous is None or previous <= 0:
        return raw
    step = previous * max_step_bps // BPS
    return min(max(raw, previous - step), previous + step)


def publish_requirement(conn: Connection, result: SizingResult, max_step_bps: int) -> int:
    """Store the smoothed requirement next to the raw one; returns the published value."""
    last = conn.execute(
        select(REQUIREMENTS.c.required).order_by(REQUIREMENTS.c.id.desc()).limit(1)
    ).scalar()
    required = smooth(None if last is None else int(last), result.raw_required, max_step_bps)
    conn.execute(
        insert(REQUIREMENTS),
        [
            {
                "watermark": json.dumps({str(k): v for k, v in sorted(result.watermark.items())}),
                "raw_required": result.raw_required,
                "required": required,
                "paths": result.paths,
                "seed": result.seed,
            }
        ],
    )
    return required
