"""One address's unified risk report: what ``rtrm risk ADDRESS`` and the API answer.

Concept: a report is assembled for one user from a :class:`~aggregation.report_basis.
ReportBasis` -- the user's row of :func:`~aggregation.risk.unified_risk` on a scenario
grid and the snapshot's tail-risk draws -- plus what a risk desk asks next: a delta hedge
with its Whalley-Wilmott no-trade band per underlying (:mod:`aggregation.hedging`) and
one-day VaR 99 % / ES 97.5 % by filtered historical simulation over the snapshot's oracle
history with EWMA (lambda 0.94) vols (see :mod:`aggregation.report_basis`).
:func:`user_risk_report` builds the basis of one user's slice (O(that user's positions));
the API builds one basis per snapshot and grid for the whole book and calls
:func:`report_from_basis`, the same assembly: the bytes agree by construction. Pure: no
I/O, no clock.

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

Units: USD losses (positive = loss), moves and distances in percent (``*_pct``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, fields, replace
from typing import TypeVar

from aggregation.report_basis import ReportBasis, ReportParams, TailBasis, TailResult
from aggregation.risk import (
    BorrowPositions,
    Breakdown,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
from aggregation.scenarios import ScenarioGrid, derive_pmrm_grid
from aggregation.snapshot import Snapshot, checksummed
from aggregation.systemic import UserContagion, user_contagion

__all__ = [
    "BreakdownRow",
    "HedgeAdvice",
    "LiquidationDistance",
    "ReportParams",
    "RiskReport",
    "TailEstimate",
    "UnderlyingGreeks",
    "WorstScenario",
    "report_from_basis",
    "user_risk_report",
]

Book = TypeVar("Book", OptionPositions, PerpPositions, CollateralPositions, SupplyPositions,
               BorrowPositions)  # fmt: skip


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
    """The risk report of ``address`` in ``snapshot`` on ``grid`` (default Derive PMRM),
    from the basis of that user's slice alone: O(its positions)."""
    address = checksummed(address)
    params = params or ReportParams()
    inputs = snapshot.inputs
    at = bisect_left(inputs.users, address)
    known = at < inputs.n_users and inputs.users[at] == address
    one = inputs.user_slice(at) if known else _nobody(inputs, address)
    tail = TailBasis.prepare(snapshot, params, one)
    report = report_from_basis(
        ReportBasis.prepare(tail, grid or derive_pmrm_grid()), address, params.contagion_scenarios
    )
    assert report is not None  # the basis covers this address, and only it
    return report


def report_from_basis(
    basis: ReportBasis, address: str, contagion: tuple[str, ...] = ()
) -> RiskReport | None:
    """The report of a checksummed ``address`` from ``basis`` (None when the basis does not
    cover it), with its share of the ``contagion`` scenarios' losses when any are named."""
    i = basis.user_index(address)
    if i is None:
        return None
    snapshot, r, h = basis.snapshot, basis.risk, basis.hedge
    und, spot = snapshot.underlyings, basis.inputs.spot_usd.tolist()
    delta_coin, delta_usd, gamma = (x[i].tolist() for x in (r.delta_coin, r.delta_usd, r.gamma))
    vega, theta = r.vega_per_vol_point[i].tolist(), r.theta_per_day[i].tolist()
    down, up = r.liq_move_down[i].tolist(), r.liq_move_up[i].tolist()
    target, half, trade = (x[i].tolist() for x in (h.target_hedge, h.band_half_width, h.trade))
    lower = (h.target_hedge[i] - h.band_half_width[i]).tolist()  # HedgePlan.lower, one row
    upper = (h.target_hedge[i] + h.band_half_width[i]).tolist()
    trade_usd, rebalance = (h.trade[i] * basis.inputs.spot_usd).tolist(), h.rebalance[i].tolist()
    return RiskReport(
        address=address,
        watermark=dict(snapshot.watermark),
        block_time_s=dict(snapshot.block_time_s),
        grid=basis.grid.name,
        has_positions=basis.has_positions(i),
        equity_usd=float(r.equity_usd[i]),
        collateral_usd=float(r.collateral_usd[i]),
        collateral_after_haircuts_usd=float(r.collateral_haircut_usd[i]),
        debt_usd=float(r.debt_usd[i]),
        options_mtm_usd=float(r.options_mtm_usd[i]),
        perp_pnl_usd=float(r.perp_pnl_usd[i]),
        margin_equity_usd=float(r.margin_equity_usd[i]),
        initial_margin_usd=float(r.im_usd[i]),
        maintenance_margin_usd=float(r.mm_usd[i]),
        margin_ratio=float(r.margin_ratio[i]),
        account_equity_usd=float(r.account_equity_usd[i]),
        account_initial_margin_usd=float(r.account_im_usd[i]),
        account_maintenance_margin_usd=float(r.account_mm_usd[i]),
        account_margin_ratio=float(r.account_margin_ratio[i]),
        liquidatable_accounts=int(r.liquidatable_accounts[i]),
        health_factor=float(r.health_factor[i]),
        greeks={
            u: UnderlyingGreeks(spot[k], delta_coin[k], delta_usd[k], gamma[k], vega[k], theta[k])
            for k, u in enumerate(und)
        },
        distance_to_liquidation={
            u: LiquidationDistance(100.0 * down[k], 100.0 * up[k]) for k, u in enumerate(und)
        },
        hedge={
            u: HedgeAdvice(
                delta_coin[k],
                target[k],
                half[k],
                lower[k],
                upper[k],
                trade[k],
                trade_usd[k],
                rebalance[k],
            )
            for k, u in enumerate(und)
        },
        worst_scenario=_worst(basis, i),
        by_chain={c: _row(r.by_chain, i, j) for j, c in enumerate(snapshot.chain_ids)},
        by_protocol={p: _row(r.by_protocol, i, j) for j, p in enumerate(snapshot.protocols)},
        tail=_tail_estimate(basis, basis.tail.estimate(i, r.delta_usd[i])),
        warnings=snapshot.warnings,
        contagion=user_contagion(snapshot, address, contagion) if contagion else None,
    )


def _tail_estimate(basis: ReportBasis, tail: TailResult) -> TailEstimate:
    t = basis.tail
    return TailEstimate(
        tail.var_99_usd, tail.es_975_usd, 1, "ewma", t.params.tail_scenarios, t.n_returns,
        t.source, tail.note,
    )  # fmt: skip


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


def _row(breakdown: Breakdown, i: int, j: int) -> BreakdownRow:
    return BreakdownRow(*(getattr(breakdown, name)[i, j].item() for name in _BREAKDOWN_FIELDS))


def _worst(basis: ReportBasis, i: int) -> WorstScenario | None:
    r, grid = basis.risk, basis.grid
    s, u = int(r.worst_scenario[i]), int(r.worst_underlying[i])
    if s < 0 or u < 0:
        return None
    return WorstScenario(
        basis.snapshot.underlyings[u], float(basis.move_pct[u, s]), int(grid.vol_direction[s]),
        float(grid.weights[s]), float(r.worst_loss_usd[i]),
    )  # fmt: skip


def report_fields() -> tuple[str, ...]:
    """The top-level keys of a report, in order (the stable JSON interface)."""
    return tuple(f.name for f in fields(RiskReport))


_BREAKDOWN_FIELDS = tuple(f.name for f in fields(BreakdownRow))
