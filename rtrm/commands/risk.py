"""``rtrm risk ADDRESS [--json] [--grid derive|deribit|span]``: one address's unified risk.

Reads the store (never writes it) at its published watermark vector, only the rows of
``ADDRESS``, and prints its risk across every chain and protocol: a summary (equity,
collateral, debt, margin, health factor, worst scenario, VaR/ES), per underlying Greeks,
distance to liquidation and delta hedge, and per chain / protocol breakdowns. ``--grid``
picks the portfolio-margin scenario grid (Derive PMRM by default, Deribit PM, CME SPAN).

``--json`` prints :class:`aggregation.user_report.RiskReport` with stable keys (see that
module): full floats, never rounded; null for infinities and NaN (health factor without
debt, no liquidation within reach). An address without positions gets an all-zero report
(exit 0); a malformed or mis-checksummed address exits 2 with what to fix.

``--contagion`` adds the ``contagion`` field (null without it): the address's share of the
liquidated collateral and bad debt in the cascades of three historical scenarios
(:data:`aggregation.systemic.DEFAULT_SCENARIOS`) and its collateral in systemically loaded
assets. Those cascades need every user's positions, so ``--contagion`` reads the whole
store instead of this address's rows: off by default to keep ``rtrm risk`` O(one user).
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from rtrm.commands import load_config
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    from rich.console import RenderableType

    from aggregation.scenarios import ScenarioGrid
    from aggregation.systemic import UserContagion
    from aggregation.user_report import BreakdownRow, RiskReport
    from rtrm.commands import Subparsers

__all__ = ["GRIDS", "register"]

GRIDS = ("derive", "deribit", "span")


def register(subparsers: Subparsers) -> None:
    risk = subparsers.add_parser("risk", help="one address's unified risk across chains")
    risk.add_argument("address", metavar="ADDRESS", help="the user's address (EIP-55 or lowercase)")
    risk.add_argument("--json", action="store_true", help="machine-readable output")
    risk.add_argument(
        "--grid",
        choices=GRIDS,
        default="derive",
        help="portfolio-margin scenarios: Derive PMRM (default), Deribit PM or CME SPAN",
    )
    risk.add_argument(
        "--contagion",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add the share of systemic losses in historical scenarios (reads the whole store)",
    )
    risk.set_defaults(func=run_risk)


def _grid(name: str) -> ScenarioGrid:
    from aggregation.scenarios import deribit_pm_grid, derive_pmrm_grid, span16_grid

    if name == "deribit":
        return deribit_pm_grid()
    return span16_grid() if name == "span" else derive_pmrm_grid()


def run_risk(args: argparse.Namespace) -> int:
    from aggregation.loader import load_snapshot
    from aggregation.snapshot import checksummed
    from aggregation.systemic import DEFAULT_SCENARIOS
    from aggregation.user_report import ReportParams, user_risk_report
    from indexer.store import open_store

    address = checksummed(args.address)  # a typo fails before the store is opened
    registry = load_config(args)
    store = open_store(registry.database_url)
    try:
        with store.engine.connect() as conn:
            if store.dialect == "postgresql":  # one consistent read for every query
                conn.execution_options(isolation_level="REPEATABLE READ")
            snapshot = load_snapshot(conn, registry, users=None if args.contagion else [address])
    finally:
        store.dispose()
    params = ReportParams(contagion_scenarios=DEFAULT_SCENARIOS) if args.contagion else None
    report = user_risk_report(snapshot, address, _grid(args.grid), params)
    emit(report, as_json=args.json, table=lambda: _tables(report))
    return 0


def _usd(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.2f}"


def _num(value: float, digits: int = 4) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:,.{digits}f}"


def _tables(report: RiskReport) -> RenderableType:
    from rich.console import Group

    cut = ", ".join(f"{chain}@{block}" for chain, block in sorted(report.watermark.items()))
    summary = make_table("measure", "value", title=f"Risk of {report.address}", numeric=["value"])
    worst = report.worst_scenario
    tail = report.tail
    rows = [
        ("equity (USD)", _usd(report.equity_usd)),
        ("collateral (USD)", _usd(report.collateral_usd)),
        ("collateral after haircuts (USD)", _usd(report.collateral_after_haircuts_usd)),
        ("debt (USD)", _usd(report.debt_usd)),
        ("options mark-to-market (USD)", _usd(report.options_mtm_usd)),
        ("perp P&L (USD)", _usd(report.perp_pnl_usd)),
        ("initial margin (USD)", _usd(report.initial_margin_usd)),
        ("maintenance margin (USD)", _usd(report.maintenance_margin_usd)),
        ("margin ratio (liquidation at 1)", _num(report.margin_ratio)),
        ("health factor (liquidation below 1)", _num(report.health_factor)),
        (
            f"worst scenario ({report.grid})",
            "-" if worst is None else f"{worst.underlying} {worst.spot_move_pct:+.1f}%, vol "
            f"{'up' if worst.vol_direction > 0 else 'down' if worst.vol_direction else 'flat'}: "
            f"loss {_usd(worst.worst_loss_usd)}",
        ),
        ("1-day VaR 99% / ES 97.5% (USD)",
         "-" if tail.var_99_usd is None or tail.es_975_usd is None
         else f"{_usd(tail.var_99_usd)} / {_usd(tail.es_975_usd)}"),
    ]  # fmt: skip
    for name, value in rows:
        summary.add_row(name, value)
    summary.caption = f"watermark {cut}" + ("" if report.has_positions else "; no positions")
    greeks = make_table(
        "asset", "spot", "delta", "delta USD", "gamma", "vega/pt", "theta/day",
        title="Greeks per underlying (spot)",
        numeric=("spot", "delta", "delta USD", "gamma", "vega/pt", "theta/day"),
    )  # fmt: skip
    reach = make_table(
        "asset", "liq. down %", "liq. up %", "hedge trade", "trade USD", "band ±",
        title="Distance to liquidation and delta hedge",
        numeric=("liq. down %", "liq. up %", "hedge trade", "trade USD", "band ±"),
    )  # fmt: skip
    for name, g in report.greeks.items():
        d, h = report.distance_to_liquidation[name], report.hedge[name]
        greeks.add_row(
            name, _usd(g.spot_usd), _num(g.delta_coin), _num(g.delta_usd, 0), f"{g.gamma:.3g}",
            _usd(g.vega_per_vol_point), _usd(g.theta_per_day),
        )  # fmt: skip
        reach.add_row(
            name, _num(d.down_pct, 1), _num(d.up_pct, 1), _num(h.trade_coin),
            _usd(h.trade_usd), _num(h.band_half_width_coin),
        )  # fmt: skip
    reach.caption = "-: no liquidation within the search (-99% .. +500%)"
    where = make_table(
        "chain / protocol", "collateral", "debt", "options MTM", "perp P&L", "equity",
        title="Where (USD)", numeric=("collateral", "debt", "options MTM", "perp P&L", "equity"),
    )  # fmt: skip
    breakdown: list[tuple[str, BreakdownRow]] = [
        (f"chain {c}", r) for c, r in report.by_chain.items()
    ]
    breakdown += list(report.by_protocol.items())
    for name, r in breakdown:
        values = (r.collateral_usd, r.debt_usd, r.options_mtm_usd, r.perp_pnl_usd, r.equity_usd)
        if any(values[:4]):
            where.add_row(name, *map(_usd, values))
    notes = [f"tail risk: {tail.note or tail.basis}", *(f"warning: {w}" for w in report.warnings)]
    where.caption = "\n".join(notes)
    if report.contagion is None:
        return Group(summary, greeks, reach, where)
    return Group(summary, greeks, reach, where, _contagion(report.contagion))


def _contagion(c: UserContagion) -> RenderableType:
    from aggregation.systemic import LOADED_SHARE

    numbers = ("liquidated (USD)", "of all", "bad debt (USD)", "of all bad debt")
    table = make_table("scenario", *numbers, title="Share of systemic losses", numeric=numbers)
    for s in c.scenarios:
        table.add_row(
            s.scenario, _usd(s.liquidated_collateral_usd), f"{s.liquidated_collateral_share:.2%}",
            _usd(s.bad_debt_usd), f"{s.bad_debt_share:.2%}",
        )  # fmt: skip
    loaded = ", ".join(c.loaded_assets) or "none"
    table.caption = (
        f"collateral in loaded assets ({loaded}): {_usd(c.collateral_in_loaded_usd)} of "
        f"{_usd(c.collateral_usd)} ({c.collateral_in_loaded_fraction:.1%}); loaded: >= "
        f"{LOADED_SHARE:.0%} of the collateral forced to sell at a {c.load_move:.0%} fall of "
        "its asset"
    )
    return table
