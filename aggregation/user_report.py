"""One address's unified risk report: what ``rtrm risk ADDRESS`` and the API answer.

Concept: :func:`user_risk_report` slices one user out of a :class:`~aggregation.snapshot.
Snapshot` (O(that user's positions)), runs :func:`~aggregation.risk.unified_risk` on the
slice with a scenario grid, and adds what a risk desk asks next: a delta hedge with its
Whalley-Wilmott no-trade band per underlying (:mod:`aggregation.hedging`) and one-day
VaR 99 % / ES 97.5 % by filtered historical simulation over the snapshot's oracle history
with EWMA (lambda 0.94) vols (:mod:`aggregation.tailrisk`). Pure: no I/O, no clock.

Stable keys (:class:`RiskReport` fields; nested values are frozen dataclasses too):
``address``, ``watermark`` ({chain id: block}), ``block_time_s``, ``grid``,
``has_positions``, ``equity_usd``, ``collateral_usd``, ``collateral_after_haircuts_usd``,
``debt_usd``, ``options_mtm_usd``, ``perp_pnl_usd``, ``margin_equity_usd``,
``initial_margin_usd``, ``maintenance_margin_usd``, ``margin_ratio`` (portfolio margin,
cross-margined: MM / margin equity, short of margin at >= 1; inf when equity <= 0),
``account_equity_usd``, ``account_initial_margin_usd``, ``account_maintenance_margin_usd``
(the protocol rule, summed over the user's margin accounts -- one per (protocol, chain),
as on chain), ``account_margin_ratio`` (the tightest margin account's MM / equity; the
contracts liquidate above 1), ``liquidatable_accounts`` (margin and lending accounts the
contracts would liquidate now), ``health_factor`` (lowest over lending
accounts; inf without debt), ``greeks``, ``distance_to_liquidation`` (first move of each
underlying that makes any account liquidatable, under the protocol rule), ``hedge`` (per
underlying), ``worst_scenario``, ``by_chain``, ``by_protocol``, ``tail``, ``warnings``,
``contagion``. See :mod:`aggregation.risk` for the definitions; infinities and NaN become
JSON null.

Contagion (:func:`aggregation.systemic.user_contagion`: the user's share of the losses in
named scenario cascades, and their collateral in systemically loaded assets) needs every
user's positions, so it is opt-in: ``ReportParams.contagion_scenarios`` names the scenarios
(e.g. :data:`aggregation.systemic.DEFAULT_SCENARIOS`) and the snapshot must be complete;
the cascades run once per snapshot (cached), then each report costs O(1) more. With no
scenarios (the default) ``contagion`` is None and the report stays O(that user).

An address without positions (or absent from a snapshot of listed users) gets an
all-zero report (``has_positions`` False, health factor inf, distances NaN), not an
error: "no risk" is an answer. A malformed or mis-checksummed address raises
:class:`~aggregation.snapshot.InvalidAddressError`.

Tail risk: returns are daily closes (the last round of each day, ending at the snapshot's
now) when the history spans at least ``min_returns + 1`` days; otherwise consecutive
oracle rounds on a common time grid, each return scaled to one day by sqrt(1 day / its
interval) (Brownian scaling -- a devnet's history spans minutes). Fewer than
``min_returns`` returns: VaR and ES are None with a note. Options are fully revalued
(Black-76, vol and time held), everything else is linear in each underlying's move.
Units: USD losses (positive = loss), moves and distances in percent (``*_pct``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, fields, replace
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from aggregation.black76 import black76
from aggregation.hedging import plan_delta_hedge
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
    UnifiedRisk,
    unified_risk,
)
from aggregation.scenarios import ScenarioGrid, derive_pmrm_grid
from aggregation.snapshot import Snapshot, checksummed
from aggregation.systemic import UserContagion, user_contagion
from aggregation.tailrisk import tail_risk

__all__ = [
    "BreakdownRow",
    "HedgeAdvice",
    "LiquidationDistance",
    "ReportParams",
    "RiskReport",
    "TailEstimate",
    "UnderlyingGreeks",
    "WorstScenario",
    "user_risk_report",
]

Float = NDArray[np.float64]
Book = TypeVar("Book", OptionPositions, PerpPositions, CollateralPositions, SupplyPositions,
               BorrowPositions)  # fmt: skip
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class ReportParams:
    """Hedging costs and tail-risk settings of a report."""

    hedge_cost_fraction: float = 5e-4  # proportional cost of trading the hedge (5 bp)
    risk_aversion_per_usd: float = 1e-4  # Whalley-Wilmott gamma
    tail_scenarios: int = 10_000
    tail_seed: int = 0
    min_returns: int = 20
    contagion_scenarios: tuple[str, ...] = ()  # named scenarios; () leaves contagion None


@dataclass(frozen=True, slots=True)
class UnderlyingGreeks:
    spot_usd: float
    delta_coin: float
    delta_usd: float
    gamma: float  # per coin^2
    vega_per_vol_point: float
    theta_per_day: float


@dataclass(frozen=True, slots=True)
class LiquidationDistance:
    """Smallest move of this underlying alone that liquidates something (NaN: none)."""

    down_pct: float  # <= 0
    up_pct: float  # >= 0


@dataclass(frozen=True, slots=True)
class WorstScenario:
    """The scenario that sets the margin requirement (``worst_loss_usd``: summed over
    underlyings, each at its own worst scenario, weights applied)."""

    underlying: str
    spot_move_pct: float
    vol_direction: int  # +1 up, 0, -1 down
    weight: float
    worst_loss_usd: float


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    collateral_usd: float
    debt_usd: float
    options_mtm_usd: float
    perp_pnl_usd: float
    notional_usd: float
    equity_usd: float
    account_equity_usd: float  # the protocol rule's, of the margin accounts there
    account_mm_usd: float


@dataclass(frozen=True, slots=True)
class HedgeAdvice:
    """Delta hedge in units of the underlying (a perp or forward); trade only outside
    the band, to its nearest edge."""

    net_delta_coin: float
    target_hedge_coin: float
    band_half_width_coin: float
    band_lower_coin: float
    band_upper_coin: float
    trade_coin: float
    trade_usd: float
    rebalance: bool


@dataclass(frozen=True, slots=True)
class TailEstimate:
    var_99_usd: float | None
    es_975_usd: float | None
    horizon_days: int
    model: str
    n_scenarios: int
    n_returns: int
    basis: str
    note: str | None


@dataclass(frozen=True, slots=True)
class RiskReport:
    """One address's unified risk at a watermark (see the module docstring for keys)."""

    address: str
    watermark: dict[int, int]
    block_time_s: dict[int, int]
    grid: str
    has_positions: bool
    equity_usd: float
    collateral_usd: float
    collateral_after_haircuts_usd: float
    debt_usd: float
    options_mtm_usd: float
    perp_pnl_usd: float
    margin_equity_usd: float
    initial_margin_usd: float
    maintenance_margin_usd: float
    margin_ratio: float
    account_equity_usd: float
    account_initial_margin_usd: float
    account_maintenance_margin_usd: float
    account_margin_ratio: float
    liquidatable_accounts: int
    health_factor: float
    greeks: dict[str, UnderlyingGreeks]
    distance_to_liquidation: dict[str, LiquidationDistance]
    hedge: dict[str, HedgeAdvice]
    worst_scenario: WorstScenario | None
    by_chain: dict[int, BreakdownRow]
    by_protocol: dict[str, BreakdownRow]
    tail: TailEstimate
    warnings: tuple[str, ...]
    contagion: UserContagion | None = None


def user_risk_report(
    snapshot: Snapshot,
    address: str,
    grid: ScenarioGrid | None = None,
    params: ReportParams | None = None,
) -> RiskReport:
    """The risk report of ``address`` in ``snapshot`` on ``grid`` (default Derive PMRM)."""
    address = checksummed(address)
    grid = grid or derive_pmrm_grid()
    params = params or ReportParams()
    inputs = snapshot.inputs
    at = bisect_left(inputs.users, address)
    known = at < inputs.n_users and inputs.users[at] == address
    one = inputs.user_slice(at) if known else _nobody(inputs, address)
    risk = unified_risk(one, grid)
    und = snapshot.underlyings
    spot = inputs.spot_usd
    plan = plan_delta_hedge(
        net_delta=risk.delta_coin[0], net_gamma=risk.gamma[0], current_hedge=np.zeros(len(und)),
        spot_usd=spot, cost_fraction=params.hedge_cost_fraction,
        risk_aversion_per_usd=params.risk_aversion_per_usd,
    )  # fmt: skip
    return RiskReport(
        address=address,
        watermark=dict(snapshot.watermark),
        block_time_s=dict(snapshot.block_time_s),
        grid=grid.name,
        has_positions=any(int(offsets[-1]) for offsets in one.offsets),
        equity_usd=float(risk.equity_usd[0]),
        collateral_usd=float(risk.collateral_usd[0]),
        collateral_after_haircuts_usd=float(risk.collateral_haircut_usd[0]),
        debt_usd=float(risk.debt_usd[0]),
        options_mtm_usd=float(risk.options_mtm_usd[0]),
        perp_pnl_usd=float(risk.perp_pnl_usd[0]),
        margin_equity_usd=float(risk.margin_equity_usd[0]),
        initial_margin_usd=float(risk.im_usd[0]),
        maintenance_margin_usd=float(risk.mm_usd[0]),
        margin_ratio=float(risk.margin_ratio[0]),
        account_equity_usd=float(risk.account_equity_usd[0]),
        account_initial_margin_usd=float(risk.account_im_usd[0]),
        account_maintenance_margin_usd=float(risk.account_mm_usd[0]),
        account_margin_ratio=float(risk.account_margin_ratio[0]),
        liquidatable_accounts=int(risk.liquidatable_accounts[0]),
        health_factor=float(risk.health_factor[0]),
        greeks={
            u: UnderlyingGreeks(
                float(spot[k]),
                float(risk.delta_coin[0, k]),
                float(risk.delta_usd[0, k]),
                float(risk.gamma[0, k]),
                float(risk.vega_per_vol_point[0, k]),
                float(risk.theta_per_day[0, k]),
            )
            for k, u in enumerate(und)
        },
        distance_to_liquidation={
            u: LiquidationDistance(
                100.0 * float(risk.liq_move_down[0, k]), 100.0 * float(risk.liq_move_up[0, k])
            )
            for k, u in enumerate(und)
        },
        hedge={
            u: HedgeAdvice(
                float(risk.delta_coin[0, k]),
                float(plan.target_hedge[k]),
                float(plan.band_half_width[k]),
                float(plan.lower[k]),
                float(plan.upper[k]),
                float(plan.trade[k]),
                float(plan.trade[k] * spot[k]),
                bool(plan.rebalance[k]),
            )
            for k, u in enumerate(und)
        },
        worst_scenario=_worst(snapshot, risk, grid),
        by_chain={c: _row(risk, "by_chain", j) for j, c in enumerate(snapshot.chain_ids)},
        by_protocol={p: _row(risk, "by_protocol", j) for j, p in enumerate(snapshot.protocols)},
        tail=_tail(snapshot, one, risk, params),
        warnings=snapshot.warnings,
        contagion=user_contagion(snapshot, address, params.contagion_scenarios)
        if params.contagion_scenarios
        else None,
    )


def _nobody(inputs: RiskInputs, address: str) -> RiskInputs:
    """A one-user snapshot of ``address`` with no positions, on ``inputs``' markets."""
    return RiskInputs.build(
        (address,), spot_usd=inputs.spot_usd, carry_annual=inputs.carry_annual,
        asset_price_usd=inputs.asset_price_usd, asset_underlying=inputs.asset_underlying,
        options=_empty(inputs.options), perps=_empty(inputs.perps),
        collateral=_empty(inputs.collateral), supplies=_empty(inputs.supplies),
        borrows=_empty(inputs.borrows), n_chains=inputs.n_chains,
        n_protocols=inputs.n_protocols,
    )  # fmt: skip


def _empty(book: Book) -> Book:
    """``book`` with no rows (same columns and dtypes)."""
    return replace(book, **{f.name: getattr(book, f.name)[:0] for f in fields(book)})


def _row(risk: UnifiedRisk, which: str, j: int) -> BreakdownRow:
    b = getattr(risk, which)
    return BreakdownRow(*(float(getattr(b, f.name)[0, j]) for f in fields(BreakdownRow)))


def _worst(snapshot: Snapshot, risk: UnifiedRisk, grid: ScenarioGrid) -> WorstScenario | None:
    s, u = int(risk.worst_scenario[0]), int(risk.worst_underlying[0])
    if s < 0 or u < 0:
        return None
    move = grid.spot_multipliers(len(snapshot.underlyings))[u, s] - 1.0
    return WorstScenario(
        snapshot.underlyings[u], 100.0 * float(move), int(grid.vol_direction[s]),
        float(grid.weights[s]), float(risk.worst_loss_usd[0]),
    )  # fmt: skip


def _returns(snapshot: Snapshot, min_returns: int) -> tuple[Float | None, str]:
    """Aligned one-day-equivalent log returns ``(n, U)`` and how they were made."""
    history = snapshot.history
    if not history or any(h.price_usd.shape[0] < 2 for h in history):  # noqa: PLR2004
        return None, "no oracle history for some underlying"
    start = max(int(h.updated_at_s[0]) for h in history)
    now = max(snapshot.now_s, *(int(h.updated_at_s[-1]) for h in history))
    days = (now - start) // DAY_S
    daily = days >= min_returns + 1
    if daily:
        grid = now - DAY_S * np.arange(days, -1, -1, dtype=np.int64)
        basis = f"{days} daily closes"
    else:
        times = np.unique(np.concatenate([h.updated_at_s for h in history]))
        grid = times[times >= start]
        basis = f"{grid.size - 1} oracle-round returns scaled to 1 day by sqrt(1 day / interval)"
    prices = np.stack(
        [h.price_usd[np.searchsorted(h.updated_at_s, grid, side="right") - 1] for h in history],
        axis=1,
    )
    returns: Float = np.diff(np.log(prices), axis=0)
    if not daily and returns.shape[0]:
        returns *= np.sqrt(DAY_S / np.diff(grid).astype(np.float64))[:, None]
    if returns.shape[0] < min_returns:
        return None, f"history too short: {returns.shape[0]} returns, {min_returns} needed"
    chains = sorted({h.chain_id for h in history})
    return returns, f"{basis}; oracle history of chain(s) {', '.join(map(str, chains))}"


def _tail(snapshot: Snapshot, one: RiskInputs, risk: UnifiedRisk, p: ReportParams) -> TailEstimate:
    returns, basis = _returns(snapshot, p.min_returns)
    if returns is None:
        return TailEstimate(None, None, 1, "ewma", p.tail_scenarios, 0, "", basis)
    moving = (returns != 0.0).any(axis=0)  # a constant price has no vol (and shocks of 0)
    if not moving.any():
        return TailEstimate(0.0, 0.0, 1, "ewma", p.tail_scenarios, returns.shape[0], basis, None)
    n_u = len(snapshot.underlyings)
    inst, k, o = one.instruments, one.option_instrument, one.options
    growth = np.exp(one.carry_annual[inst.underlying] * inst.expiry_years)
    forward = one.spot_usd[inst.underlying] * growth
    g = black76(forward, inst.strike_usd, inst.expiry_years, inst.vol_annual, 0.0, inst.is_call)
    held = np.bincount(k, o.size, minlength=inst.strike_usd.shape[0])  # units per contract
    option_delta_usd = np.bincount(
        inst.underlying, held * g.delta * growth * one.spot_usd[inst.underlying], minlength=n_u
    )
    linear = risk.delta_usd[0] - option_delta_usd

    def revalue(shocks: Float) -> Float:
        full = np.zeros((shocks.shape[0], n_u))
        full[:, moving] = shocks
        shocked = forward[None, :] * (1.0 + full[:, inst.underlying])
        price = black76(
            shocked, inst.strike_usd, inst.expiry_years, inst.vol_annual, 0.0, inst.is_call
        ).price
        out: Float = ((price - g.price) @ held)[:, None]
        return out

    result = tail_risk(
        returns[:, moving], delta_usd=linear[None, moving],
        revalue=revalue if held.size else None, model="ewma", n_scenarios=p.tail_scenarios,
        horizon_days=1, seed=p.tail_seed,
    )  # fmt: skip
    var, es = float(result.var_99[0]), float(result.es_975[0])
    finite = math.isfinite(var) and math.isfinite(es)
    return TailEstimate(
        var if finite else None, es if finite else None, 1, "ewma", p.tail_scenarios,
        int(returns.shape[0]), basis, None if finite else "non-finite result",
    )  # fmt: skip


def report_fields() -> tuple[str, ...]:
    """The top-level keys of a report, in order (the stable JSON interface)."""
    return tuple(f.name for f in fields(RiskReport))
