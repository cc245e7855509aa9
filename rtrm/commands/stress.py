"""``rtrm stress --shock ETH=-0.30[,stETH=-0.08] | --scenario NAME|DATE | --list [--json]``.

Runs one liquidation cascade on the whole store (read at its published watermark vector):
the shock moves prices (a move on a variant such as stETH moves its peg, on top of its
root's move), every position is re-evaluated, liquidations sell collateral, and the loop
repeats to a fixed point. Prints the rounds (prices, liquidated collateral, bad debt), the
totals, liquidations and bad debt per protocol and chain, the deficits per asset, and the
contagion through the protocol network (DebtRank, Eisenberg-Noe clearing).

``--shock`` may repeat (``--shock ETH=-0.3 --shock stETH=-0.08``); moves are fractions or
percents (``-30%``). ``--scenario`` takes a historical scenario's name or a date it covers
(``2020-03-12``, ``2022-05``); ``--list`` prints them. ``--depth ETH=50e6`` gives an asset a
linear market of that depth (USD that would take its price to zero): liquidation sales then
move prices and shared collateral links the protocols; without it, depth is infinite (as
on the devnet, whose oracles ignore liquidation sales). A malformed shock, an unknown asset
or scenario exits 2 with what to fix. ``--json`` prints
:class:`aggregation.systemic.StressReport` (stable keys, full floats).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtrm.commands import load_config
from rtrm.commands.exposure import bar, coin, load_whole_snapshot, usd, venue, watermark_text
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from rich.console import RenderableType

    from aggregation.stress import Shock
    from aggregation.systemic import StressReport
    from rtrm.commands import Subparsers

__all__ = ["parse_depth", "register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("stress", help="cascade simulation of a price shock")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--shock",
        action="append",
        metavar="ASSET=MOVE[,...]",
        help="moves as fractions or percents, e.g. ETH=-0.30,stETH=-0.08 (may repeat)",
    )
    what.add_argument(
        "--scenario", metavar="NAME|DATE", help="a historical scenario, e.g. 2020-03-12"
    )
    what.add_argument("--list", action="store_true", help="list the historical scenarios")
    parser.add_argument(
        "--depth",
        action="append",
        metavar="ASSET=USD[,...]",
        help="linear market depth per asset (default: infinite, no price impact)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_stress)


def parse_depth(texts: Sequence[str], asset_ids: Sequence[str]) -> dict[str, float]:
    """``["ETH=50e6,WSTETH=5e6"]`` -> ``{"ETH": 5e7, "WSTETH": 5e6}`` (USD, > 0)."""
    import math

    from aggregation.exceptions import InvalidParamsError
    from aggregation.stress import resolve_asset

    depth: dict[str, float] = {}
    for token in (t.strip() for text in texts for t in text.split(",")):
        if not token:
            continue
        asset, _, value = token.partition("=")
        try:
            usd_depth = float(value.strip().replace("_", ""))
        except ValueError:
            usd_depth = math.nan
        if not (math.isfinite(usd_depth) and usd_depth > 0.0):
            raise InvalidParamsError(
                f"--depth {token!r}: expected ASSET=USD with a USD amount > 0, e.g. ETH=50e6"
            )
        depth[asset_ids[resolve_asset(asset, asset_ids)]] = usd_depth
    return depth


def run_stress(args: argparse.Namespace) -> int:
    from aggregation.exceptions import InvalidShockError
    from aggregation.snapshot import CASH_ASSET
    from aggregation.stress import HISTORICAL, parse_shock
    from aggregation.systemic import StressParams, scenario, stress_report

    if args.list:
        emit(HISTORICAL, as_json=args.json, table=lambda: _library(HISTORICAL))
        return 0
    if not args.shock and not args.scenario:
        raise InvalidShockError(
            "give a shock: --shock ETH=-0.30[,stETH=-0.08] or --scenario NAME|DATE "
            "(`rtrm stress --list` shows the scenarios)"
        )
    registry = load_config(args)
    text = ",".join(args.shock or [])
    known = [*(a.asset_id for a in registry.assets), CASH_ASSET]
    # check the shock before the store is read (the snapshot may hold fewer assets)
    shock = scenario(args.scenario) if args.scenario else parse_shock(text, known)
    parse_depth(args.depth or [], known)
    snapshot = load_whole_snapshot(args, registry)
    if not args.scenario:
        shock = parse_shock(text, snapshot.assets)
    depth = parse_depth(args.depth or [], snapshot.assets)
    report = stress_report(snapshot, shock, StressParams(depth_usd=depth))
    emit(report, as_json=args.json, table=lambda: _tables(report))
    return 0


def _moves(moves: dict[str, float] | tuple[tuple[str, float], ...]) -> str:
    pairs = moves.items() if isinstance(moves, dict) else moves
    return ", ".join(f"{asset} {move:+.0%}" for asset, move in pairs) or "none"


def _library(shocks: Sequence[Shock]) -> RenderableType:
    table = make_table("scenario", "dates", "moves", "basis", title="Historical scenarios")
    for s in shocks:
        dates = s.start if s.start == s.end else f"{s.start} .. {s.end}"
        table.add_row(s.name, dates, _moves(s.moves), s.note)
    table.caption = "moves on a variant (stETH) are depegs on top of its root's move"
    return table


def _tables(r: StressReport) -> RenderableType:
    from rich.console import Group

    summary = make_table("measure", "value", title=f"Stress: {r.scenario}", numeric=["value"])
    depth = ", ".join(f"{a} {usd(d)}" for a, d in r.depth_usd.items()) or "infinite"
    rows = [
        ("shock", _moves(r.moves)),
        ("dates", f"{r.start} .. {r.end}" if r.start else "-"),
        ("market depth (USD)", depth),
        ("rounds", f"{r.n_rounds}" + ("" if r.converged else " (not settled)")),
        ("liquidated collateral (USD)", usd(r.liquidated_collateral_usd)),
        ("debt repaid (USD)", usd(r.repaid_debt_usd)),
        ("notional closed (USD)", usd(r.closed_notional_usd)),
        ("bad debt (USD)", usd(r.bad_debt_usd)),
        ("users affected", str(r.users_affected)),
    ]
    for name, value in rows:
        summary.add_row(name, value)
    summary.caption = watermark_text(r.watermark)
    shown = [a for a in r.final_prices_usd if a in r.moves or _moved(r, a)]
    rounds = make_table(
        "round", *shown, "liquidated USD", "repaid USD", "bad debt USD", "users",
        title="Rounds (prices USD at which each round liquidated)",
        numeric=("round", *shown, "liquidated USD", "repaid USD", "bad debt USD", "users"),
    )  # fmt: skip
    for x in r.rounds:
        rounds.add_row(
            str(x.round), *(usd(x.prices_usd[a]) for a in shown),
            usd(x.liquidated_collateral_usd), usd(x.repaid_debt_usd), usd(x.bad_debt_usd),
            str(x.users_liquidated),
        )  # fmt: skip
    rounds.add_row("final", *(usd(r.final_prices_usd[a]) for a in shown), "", "", "", "")
    return Group(summary, rounds, *_venue_tables(r), _contagion_table(r))


def _moved(r: StressReport, asset: str) -> bool:
    first = r.rounds[0].prices_usd[asset] if r.rounds else r.final_prices_usd[asset]
    return abs(r.final_prices_usd[asset] - first) > 1e-12 * max(1.0, abs(first))


def _venue_tables(r: StressReport) -> list[RenderableType]:
    numbers = ("liquidated USD", "repaid USD", "closed notional USD", "bad debt USD", "")
    venues = make_table("protocol", *numbers, title="Per protocol and chain", numeric=numbers[:-1])
    largest = max((v.bad_debt_usd for v in r.by_venue), default=0.0)
    for v in r.by_venue:
        venues.add_row(
            venue(v.protocol, v.chain_id), usd(v.liquidated_collateral_usd), usd(v.repaid_debt_usd),
            usd(v.closed_notional_usd), usd(v.bad_debt_usd), bar(v.bad_debt_usd, largest, 16),
        )  # fmt: skip
    venues.add_row("all", usd(r.liquidated_collateral_usd), usd(r.repaid_debt_usd),
                   usd(r.closed_notional_usd), usd(r.bad_debt_usd), "")  # fmt: skip
    venues.caption = "\n".join(f"warning: {w}" for w in r.warnings) or None
    deficits = make_table(
        "protocol", "asset", "amount", "USD", "users",
        title="Bad debt (deficits) per protocol, chain and asset",
        numeric=("amount", "USD", "users"),
    )  # fmt: skip
    for d in r.deficits:
        deficits.add_row(venue(d.protocol, d.chain_id), d.asset, coin(d.amount_coin),
                         usd(d.amount_usd), str(d.users))  # fmt: skip
    return [venues, deficits] if r.deficits else [venues]


def _contagion_table(r: StressReport) -> RenderableType:
    c = r.contagion
    numbers = ("reserves", "bad debt", "h0", "DebtRank", "diff.", "owed", "shortfall")
    table = make_table(
        "node", *numbers, "default", title="Contagion through the protocol network (USD)",
        numeric=numbers,
    )  # fmt: skip
    for n in c.nodes:
        table.add_row(
            venue(n.protocol, n.chain_id), usd(n.reserves_usd), usd(n.bad_debt_usd),
            f"{n.initial_distress:.3f}", f"{n.distress_original:.3f}",
            f"{n.distress_differential:.3f}", usd(n.owed_usd), usd(n.shortfall_usd),
            "yes" if n.defaulted else "",
        )  # fmt: skip
    no_depth = "" if r.depth_usd else "; no --depth, so no fire-sale edges"
    table.caption = (
        "h: share of reserves lost; default: bad debt >= reserves, or liabilities unpaid. "
        f"DebtRank R: original {c.debtrank_original:.4f}, "
        f"differential {c.debtrank_differential:.4f}; edges: {c.direct_edges} direct, "
        f"{c.fire_sale_edges} fire-sale{no_depth}; clearing shortfall "
        f"{usd(c.clearing_shortfall_usd)}"
    )
    return table
