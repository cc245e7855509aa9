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
2. **Bad debt per path**: the shock through :func:`aggregation.cascade.cascade`; the
   path's loss is its total bad debt in USD. A cascade costs ~0.1 s at 100k users, so
   with ``max_cascades`` the paths form strata:

   - **screened**: the ``max_cascades`` paths of largest two-sided *first-order bad
     debt* (:func:`first_order_bad_debt`). Each account (lending, or margin: one per
     user, protocol and chain) has a cushion ``W`` (lending: supplies / liquidation
     bonus - debt; margin: collateral + perp P&L + options at intrinsic value - the
     options penalty, what a liquidation realises) and a USD delta ``D_u`` per
     underlying (options by their Black-76 spot delta); its cushion is split over the
     underlyings in proportion to ``|D_u|`` and a move ``m_u`` costs
     ``max(0, -W_u - D_u m_u)``: longs lose in falls, shorts (short perps and calls,
     ETH or BTC borrowed against stablecoins) in rallies. The sum bounds the account's
     first-order loss from above (equal when all terms share a sign) and, per
     underlying, is piecewise linear: O((accounts + paths) log) by sorting break-evens.
   - **the rest**, sampled: ``sample`` paths (default ``max(MIN_SAMPLE,
     max_cascades // 4)``) from bands of the screen's ranking below the cut, sized
     1 : 2 : 4 : 8 : 16 from the cut down, the same number from each (near misses,
     where the larger losses are, most densely).

   The tail assumes unrun paths rank below the screened ones: exact when the screen
   holds the worst paths, a lower bound otherwise; :class:`ScreenCheck` says whether a
   sampled path beat the VaR (it should not). **Means over all paths**
   (``mean_bad_debt_usd``, ``loss_probability``) are stratified estimates (screened
   exactly, each band from its sample) with standard errors ``*_se`` (0: every path
   ran; inf with ``sample=0``: a lower bound, the rest counted as no loss; the
   probability's band variances at the Agresti-Coull share). Bad debt is skewed, so
   the SE of the mean can understate the error (95 % intervals covered ~90 % when
   resampling the benchmark's small book).
3. **Tail.** Empirical VaR/ES at ``confidence`` (``k = ceil(n (1 - q))`` worst paths), and
   a generalized-Pareto fit (``scipy.stats.genpareto``, location 0) to the ``N_u``
   exceedances over ``u``: ``VaR_q = u + beta/xi ((n/N_u (1-q))^-xi - 1)``,
   ``ES_q = (VaR_q + beta - xi u) / (1 - xi)``, used with at least ``MIN_EXCEEDANCES``
   exceedances and ``xi < 1`` (else the empirical ES). Every path run: ``u`` is the
   ``tail_quantile`` quantile. Screened: every exceedance must be known, so
   ``N_u = min(n (1 - tail_quantile), max_cascades // 2)`` (half the stratum: a margin
   for misranking near the cut), ``u`` the next loss; unrun paths never count as zeros.
   That threshold is higher, and with a heavy tail (``xi`` near 1) the GPD ES moves
   with it. ``max_cascades`` below ``k`` is refused.
4. **Smoothing** (:func:`smooth`): the published requirement moves at most
   ``max_step_bps`` per update towards the raw one (Nexus: 1 %).

Coverage ratio = pool / requirement, with the alert levels of ``[insurance.alerts]``.

Invariants (tested): deterministic for a seed; ES >= VaR; the requirement is
non-decreasing in the confidence level; a screened empirical VaR never exceeds the
exact one, and the screened ES matches it (1 %) on books with short positions. Units:
USD in the math (floats), the fund asset's smallest unit (an integer, rounded up) for
what is published.
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

from aggregation.accounts import account_state, margin_accounts
from aggregation.black76 import black76
from aggregation.cascade import cascade
from aggregation.exposure import CanonicalMap
from aggregation.lending import lending_accounts
from aggregation.snapshot import Snapshot
from aggregation.tailrisk import RISKMETRICS_LAMBDA, ewma_volatility
from insurance.config import SizingConfig
from insurance.exceptions import SizingError
from insurance.models import REQUIREMENTS
from insurance.waterfall import BPS

__all__ = [
    "DEFAULT_MAX_CASCADES",
    "FALLBACK_VOL_ANNUAL",
    "MIN_SAMPLE",
    "PathLosses",
    "ScreenCheck",
    "SizingResult",
    "TailFit",
    "correlated_shocks",
    "default_max_cascades",
    "exposure_usd",
    "first_order_bad_debt",
    "oracle_vols",
    "publish_requirement",
    "simulate_bad_debt",
    "size_capital",
    "smooth",
    "tail_count",
    "tail_fit",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
DAYS_PER_YEAR = 365.0
FALLBACK_VOL_ANNUAL = 0.8
VOL_FLOOR_ANNUAL = 0.2
VOL_CAP_ANNUAL = 3.0
FALLBACK_CORRELATION = 0.6
MIN_RETURNS = 10
MIN_EXCEEDANCES = 30
DEFAULT_MAX_CASCADES = 200
"""Screened paths by default (``rtrm insurance size``), or 4x the ES tail if larger."""
MIN_SAMPLE = 20
"""Random unscreened paths run at least, to estimate the means and check the screen."""
_SAMPLE_SHARE = 4  # sample = max_cascades // 4 by default
_SAMPLE_BANDS = 5  # strata below the screen's cut (sizes 1 : 2 : 4 : 8 : 16)
_TAIL_MARGIN = 4  # default_max_cascades: at least 4x the ES tail count
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
class ScreenCheck:
    """A screened run: how many paths each stratum ran, and what the random sample of the
    unscreened paths saw (module docstring, step 2). ``sampled_above_var > 0`` means the
    screen left tail paths out: raise ``max_cascades``."""

    max_cascades: int  # paths ranked highest by the screen, each through the cascade
    unscreened: int  # the other paths
    sampled: int  # of those, run through the cascade at random
    sampled_with_loss: int
    sampled_max_usd: float
    sampled_above_var: int
    score_cut_usd: float  # first-order bad debt of the last screened path


@dataclass(frozen=True, slots=True)
class SizingResult:
    """One sizing run; ``required`` is in the fund asset's smallest unit.

    ``mean_bad_debt_usd`` and ``loss_probability`` are over all paths (estimated when
    screened, with the standard errors ``*_se``; module docstring, step 2)."""

    paths: int
    seed: int
    confidence: float
    horizon_days: float
    assets: tuple[str, ...]
    vol_daily: tuple[float, ...]
    correlation: tuple[tuple[float, ...], ...]
    tail: TailFit
    mean_bad_debt_usd: float
    mean_bad_debt_se_usd: float
    loss_probability: float
    loss_probability_se: float
    cascades_run: int
    screen: ScreenCheck | None  # None: every path went through the cascade
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


def _sum(index: Index, weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


def _account_exposures(snapshot: Snapshot) -> tuple[Float, Float]:
    """Cushion ``W`` (accounts,) and USD delta ``D`` (accounts, underlyings) of every lending
    and margin account (module docstring, step 2); USD."""
    x = snapshot.inputs
    n_u, price, tied = x.n_underlyings, x.asset_price_usd, x.asset_underlying
    s, b, c, o, p = x.supplies, x.borrows, x.collateral, x.options, x.perps
    lend = lending_accounts(
        (s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain), x.n_protocols, x.n_chains
    )
    n_l = int(lend.user.shape[0])
    marg = margin_accounts(x)
    n = n_l + marg.n_accounts
    cushion, delta = np.zeros(n), np.zeros(n * n_u)

    def add(account: Index, underlying: Index, w: Float, d: Float) -> None:
        cushion[:] += _sum(account, w, n)
        risky = underlying >= 0
        delta[:] += _sum(account[risky] * n_u + underlying[risky], d[risky], n * n_u)

    supplied = s.amount * price[s.asset] / s.liquidation_bonus  # what repays debt, bonus paid
    add(lend.supply_account, tied[s.asset], supplied, supplied)
    owed = b.amount * price[b.asset]
    add(lend.borrow_account, tied[b.asset], -owed, -owed)
    at_par = x.rules.collateral_at_par[c.protocol]  # worth 1 USD a unit: no delta
    value = c.amount * np.where(at_par, 1.0, price[c.asset])
    add(n_l + marg.collateral_account, np.where(at_par, -1, tied[c.asset]), value, value)
    spot_p = x.spot_usd[p.underlying]
    pnl = p.size * spot_p - p.open_notional_usd + p.funding_usd
    add(n_l + marg.perp_account, p.underlying, pnl, p.size * spot_p)
    inst, k = x.instruments, x.option_instrument
    growth = np.exp(x.carry_annual[inst.underlying] * inst.expiry_years)
    spot_i = x.spot_usd[inst.underlying]
    greeks = black76(spot_i * growth, inst.strike_usd, inst.expiry_years, inst.vol_annual, 0.0,
                     inst.is_call)  # fmt: skip
    intrinsic = np.maximum(np.where(inst.is_call, spot_i - inst.strike_usd,
                                    inst.strike_usd - spot_i), 0.0)  # fmt: skip
    add(n_l + marg.option_account, o.underlying, o.size * intrinsic[k],
        o.size * (greeks.delta * growth * spot_i)[k])  # fmt: skip
    # a liquidation pays the options market's penalty first (x maintenance, here today's)
    penalty = x.rules.option_penalty_rate[marg.protocol] * account_state(x, marg).option_mm_usd
    cushion[n_l:] -= penalty
    return cushion, delta.reshape(n, n_u)


def first_order_bad_debt(snapshot: Snapshot, moves: Float) -> Float:
    """The screen's first-order bad debt of each path ``(paths,)``, USD: two-sided, per
    underlying, net of each account's cushion (module docstring, step 2). ``moves``:
    ``(paths, underlyings)`` simple returns, as :func:`correlated_shocks` returns."""
    cushion, delta = _account_exposures(snapshot)
    x = snapshot.inputs
    cmap = CanonicalMap.of(x, snapshot.asset_canonical)
    shocks = _shock_matrix(snapshot, moves)
    weight = np.abs(delta)
    total = weight.sum(axis=1, keepdims=True)
    share = np.divide(weight, total, out=np.zeros_like(weight), where=total > 0.0)
    split = cushion[:, None] * share  # W_u
    out = np.zeros(moves.shape[0])
    for u in range(x.n_underlyings):
        root = int(cmap.underlying_root[u])
        if root < 0:
            continue
        m = shocks[:, root]
        d, w = delta[:, u], split[:, u]
        with np.errstate(divide="ignore", invalid="ignore"):
            breakeven = -w / d  # the move where the account's u-part runs out of cushion
        # longs lose below their break-even (reachable only above -100 %) ...
        long = np.flatnonzero((d > 0.0) & (breakeven > -1.0))
        order = long[np.argsort(breakeven[long], kind="stable")]
        at = np.searchsorted(breakeven[order], m, side="right")  # order[at:] have b > m
        tail_w = np.append(np.cumsum(w[order][::-1])[::-1], 0.0)
        tail_d = np.append(np.cumsum(d[order][::-1])[::-1], 0.0)
        out += -tail_w[at] - tail_d[at] * m
        # ... shorts above theirs
        short = np.flatnonzero(d < 0.0)
        order = short[np.argsort(breakeven[short], kind="stable")]
        at = np.searchsorted(breakeven[order], m, side="left")  # order[:at] have b < m
        head_w = np.append(0.0, np.cumsum(w[order]))
        head_d = np.append(0.0, np.cumsum(d[order]))
        out += -head_w[at] - head_d[at] * m
    return np.maximum(out, 0.0)


@dataclass(frozen=True, slots=True, eq=False)
class PathLosses:
    """Bad debt of each path (USD), NaN where the path did not go through the cascade.

    ``screened``: the paths the screen ranked highest (every path when unscreened);
    ``sampled``: random other paths, run to estimate the rest, from the bands of the
    screen's ranking below its cut: ``sampled_band[i]`` is the band of ``sampled[i]``,
    ``band_paths[b]`` how many paths band ``b`` holds; ``score_usd``: the screen's
    first-order bad debt per path (None when unscreened)."""

    loss_usd: Float
    screened: Index
    sampled: Index
    sampled_band: Index
    band_paths: Index
    score_usd: Float | None

    @property
    def cascades_run(self) -> int:
        return int(self.screened.size + self.sampled.size)

    @property
    def exact(self) -> bool:
        return self.screened.size == self.loss_usd.size


def _bands(rest: Index, sample: int, rng: np.random.Generator) -> tuple[Index, Index, Index]:
    """A stratified sample of ``rest`` (paths in the screen's order, best first): bands of
    sizes in proportion 1 : 2 : 4 ... from the top (the screen's near misses, where the
    larger losses are, get sampled most densely), ``sample`` paths spread evenly over
    them, at least 2 a band. Returns (sampled paths, their bands, paths per band)."""
    bands = min(_SAMPLE_BANDS, max(1, sample // 2))
    weights = 2.0 ** np.arange(bands)
    edges = np.concatenate([[0.0], np.cumsum(weights) / weights.sum() * rest.size])
    edges = np.round(edges).astype(np.intp)
    picked, band_of, sizes = [], [], np.diff(edges).astype(np.intp)
    for b in range(bands):
        want = min(int(sizes[b]), sample // bands + (1 if b < sample % bands else 0))
        picked.append(rest[edges[b] + rng.choice(int(sizes[b]), want, replace=False)])
        band_of.append(np.full(want, b, np.intp))
    return np.concatenate(picked).astype(np.intp), np.concatenate(band_of), sizes


def simulate_bad_debt(
    snapshot: Snapshot,
    moves: Float,
    *,
    max_cascades: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> PathLosses:
    """Bad debt of the paths ``moves`` (module docstring, step 2): every path through the
    cascade, or the ``max_cascades`` screened ones plus ``sample`` others (default
    ``max(MIN_SAMPLE, max_cascades // 4)``, drawn with ``seed``; 0: none)."""
    n = moves.shape[0]
    shocks = _shock_matrix(snapshot, moves)
    score: Float | None = None
    screened, sampled = np.arange(n, dtype=np.intp), np.empty(0, np.intp)
    band_of, sizes = np.empty(0, np.intp), np.empty(0, np.intp)
    if max_cascades is not None and max_cascades < n:
        if max_cascades < 1:
            raise SizingError(f"max_cascades {max_cascades}: need at least 1 (e.g. 200)")
        score = first_order_bad_debt(snapshot, moves)
        order = np.argsort(-score, kind="stable").astype(np.intp)
        want = max(MIN_SAMPLE, max_cascades // _SAMPLE_SHARE) if sample is None else sample
        if want > 0:
            rng = np.random.default_rng([seed, 1])  # its own stream: the shocks use seed
            sampled, band_of, sizes = _bands(order[max_cascades:], want, rng)
        screened = np.sort(order[:max_cascades])
    losses = np.full(n, np.nan)
    for i in np.concatenate([screened, sampled]):
        result = cascade(snapshot.inputs, snapshot.asset_canonical, shocks[i])
        losses[i] = max(0.0, float(result.bad_debt_usd.sum()))
    return PathLosses(losses, screened, sampled, band_of, sizes, score)


def _stratified(paths: PathLosses, values: Float, *, binary: bool) -> tuple[float, float]:
    """Mean of ``values`` (one per path) over all paths, and its standard error: the
    screened stratum exactly, each band below the cut from its random sample. A share
    (``binary``) takes each band's variance at the Agresti-Coull ``(x + 1) / (s + 2)``,
    so a band whose sample is all one value does not claim an exact answer."""
    n = values.size
    total = float(values[paths.screened].sum())
    if paths.exact:
        return total / n, 0.0
    if paths.sampled.size == 0:
        return total / n, math.inf  # a lower bound: the rest counted as zero
    variance = 0.0
    for b, size in enumerate(paths.band_paths.tolist()):
        if size == 0:
            continue
        drawn = values[paths.sampled[paths.sampled_band == b]]
        total += size * float(drawn.mean())
        if drawn.size < size:
            if binary:
                share = (float(drawn.sum()) + 1.0) / (drawn.size + 2.0)
                spread = share * (1.0 - share)
            else:
                spread = float(drawn.var(ddof=1)) if drawn.size > 1 else math.inf
            variance += size * size * (1.0 - drawn.size / size) * spread / drawn.size
    return total / n, math.sqrt(variance) / n


def tail_count(paths: int, confidence: float) -> int:
    """How many worst paths the ES at ``confidence`` averages: ``ceil(n (1 - q))``."""
    return max(1, math.ceil(paths * (1.0 - confidence) - 1e-9))


def default_max_cascades(paths: int, confidence: float) -> int:
    """``DEFAULT_MAX_CASCADES``, or 4x the ES tail count when that is larger."""
    return max(DEFAULT_MAX_CASCADES, _TAIL_MARGIN * tail_count(paths, confidence))


def tail_fit(
    losses: Float, *, confidence: float, tail_quantile: float, screened: int | None = None
) -> TailFit:
    """Empirical and GPD tail measures at ``confidence`` (module docstring, step 3).

    ``losses``: one per path, NaN for a path that did not go through the cascade (it
    ranks below every known loss); ``screened``: how many paths the screen chose (below
    ``n``: the GPD exceedances are capped at half of it; default: the known losses).
    Exact losses with the ``screened`` of a screened run give the exact answer at that
    run's threshold."""
    n = losses.size
    if n == 0:
        raise SizingError("no simulated paths; run with --paths 100 or more")
    worst = np.sort(losses[~np.isnan(losses)])[::-1]
    chosen = worst.size if screened is None else min(screened, n)
    k = tail_count(n, confidence)
    if k > min(chosen, worst.size):
        raise SizingError(
            f"the ES at {confidence:.1%} averages the {k} worst of {n} paths but only "
            f"{chosen} were screened into the cascade; use --max-cascades "
            f"{_TAIL_MARGIN * k} or more"
        )
    var, es = float(worst[k - 1]), float(worst[:k].mean())
    if chosen == n:
        u = float(np.quantile(losses, tail_quantile))
        excess = losses[losses > u] - u
    else:  # only the top of the screened stratum is known to be the top of all paths
        n_u = min(math.ceil(n * (1.0 - tail_quantile) - 1e-9), chosen // 2, worst.size - 1)
        u = float(worst[n_u])
        excess = worst[:n_u] - u
        excess = excess[excess > 0.0]
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


def _screen_check(paths: PathLosses, var_usd: float) -> ScreenCheck | None:
    if paths.exact or paths.score_usd is None:
        return None
    drawn = paths.loss_usd[paths.sampled]
    return ScreenCheck(
        max_cascades=int(paths.screened.size),
        unscreened=int(paths.loss_usd.size - paths.screened.size),
        sampled=int(drawn.size),
        sampled_with_loss=int((drawn > 0.0).sum()),
        sampled_max_usd=float(drawn.max(initial=0.0)),
        sampled_above_var=int((drawn > var_usd).sum()),
        score_cut_usd=float(paths.score_usd[paths.screened].min()),
    )


def size_capital(
    snapshot: Snapshot,
    config: SizingConfig,
    *,
    decimals: int,
    paths: int | None = None,
    seed: int | None = None,
    max_cascades: int | None = None,
    sample: int | None = None,
) -> SizingResult:
    """Run the Monte Carlo and return the raw requirement (module docstring).

    ``max_cascades``: screen the paths (None: every path through the cascade, exact but
    ~0.1 s a path at 100k users); ``sample``: random unscreened paths also run."""
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
    simulated = simulate_bad_debt(snapshot, moves, max_cascades=max_cascades, sample=sample, seed=s)
    losses = simulated.loss_usd
    tail = tail_fit(
        losses,
        confidence=config.confidence,
        tail_quantile=config.tail_quantile,
        screened=int(simulated.screened.size),
    )
    mean, mean_se = _stratified(simulated, losses, binary=False)
    hit, hit_se = _stratified(simulated, (losses > 0.0).astype(np.float64), binary=True)
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
        mean_bad_debt_usd=mean,
        mean_bad_debt_se_usd=mean_se,
        loss_probability=hit,
        loss_probability_se=hit_se,
        cascades_run=simulated.cascades_run,
        screen=_screen_check(simulated, tail.var_usd),
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
