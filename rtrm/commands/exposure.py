"""``rtrm exposure [--asset ETH] [--top N] [--json]``: systemic exposure per canonical asset.

Reads the whole store (never writes it) at its published watermark vector and prints, per
root asset (wrapped, bridged and liquid-staked variants rolled up: wstETH and rvETH count
as ETH), the collateral, debt and option/perp deltas per protocol and chain, how
concentrated the collateral holders are (HHI, effective number of holders, top holders),
and the liquidation ladder: how much collateral becomes liquidatable if the asset moved
to each price level, as a text bar chart. ``--asset`` shows one asset (a variant shows its
root); an unknown name exits 2 with a did-you-mean.

``--json`` prints :class:`aggregation.systemic.ExposureReport` (stable keys; every ladder
level from -90 % to +200 % in 5 % steps; full floats; null for NaN and infinities).
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from rtrm.commands import load_config
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.console import RenderableType

    from aggregation.snapshot import Snapshot
    from aggregation.systemic import AssetExposureReport, ExposureReport
    from chains.spec import Registry
    from rtrm.commands import Subparsers

__all__ = ["bar", "coin", "load_whole_snapshot", "register", "usd", "venue", "watermark_text"]

BAR_WIDTH = 24
LADDER_SHOWN_PCT = (-90, 100)  # table rows: every 10 % move within this range


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "exposure", help="systemic exposure per asset: who holds what, and the liquidation ladder"
    )
    parser.add_argument(
        "--asset", metavar="ASSET", help="one asset, e.g. ETH (a variant shows its root asset)"
    )
    parser.add_argument(
        "--top", type=_positive, default=10, metavar="N", help="top holders to list (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_exposure)


def _positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def load_whole_snapshot(args: argparse.Namespace, registry: Registry | None = None) -> Snapshot:
    """Every account's positions at the store's published watermark (one consistent read)."""
    from aggregation.loader import load_snapshot
    from indexer.store import open_store

    registry = registry or load_config(args)
    store = open_store(registry.database_url)
    try:
        with store.engine.connect() as conn:
            if store.dialect == "postgresql":  # one consistent read for every query
                conn.execution_options(isolation_level="REPEATABLE READ")
            return load_snapshot(conn, registry)
    finally:
        store.dispose()


def run_exposure(args: argparse.Namespace) -> int:
    from aggregation.systemic import exposure_report

    report = exposure_report(load_whole_snapshot(args), args.asset, top_n=args.top)
    emit(report, as_json=args.json, table=lambda: _tables(report))
    return 0


def usd(value: float) -> str:
    """Two decimals; millions and more as ``12.35M``, ``4.92B`` (tables only: JSON is exact)."""
    return _short(value) or f"{value:,.2f}"


def coin(value: float) -> str:
    return _short(value) or f"{value:,.4f}"


def _short(value: float) -> str:
    if math.isnan(value):
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:,.2f}{suffix}"
    return ""


def watermark_text(watermark: Mapping[int, int]) -> str:
    return "watermark " + ", ".join(
        f"{chain}@{block}" for chain, block in sorted(watermark.items())
    )


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """``value`` as a bar of up to ``width`` blocks (a thin mark when small but not zero)."""
    if largest <= 0.0 or value <= 0.0:
        return ""
    return "█" * round(width * value / largest) or "▏"


def venue(protocol: str, chain_id: int) -> str:
    """``lending@1`` as it is; a label without its chain gets it appended."""
    return (
        protocol
        if not chain_id or protocol.endswith(f"@{chain_id}")
        else f"{protocol} ({chain_id})"
    )


def _shown(pct: int, low: int, high: int) -> bool:
    return low <= pct <= high and pct % 10 == 0


def _tables(report: ExposureReport) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    cut = watermark_text(report.watermark)
    if not report.assets:
        return Text(f"no positions in the store ({cut})")
    parts: list[RenderableType] = [Text(f"Systemic exposure at {cut}")]
    for asset in report.assets:
        parts += _asset_tables(asset)
    parts += [Text(f"warning: {w}") for w in report.warnings]
    return Group(*parts)


def _asset_tables(a: AssetExposureReport) -> list[RenderableType]:
    numbers = ("collateral", "collateral USD", "debt", "debt USD", "options Δ", "perps Δ")
    venues = make_table(
        "protocol", *numbers,
        title=f"{a.asset} exposure at {usd(a.price_usd)} USD ({', '.join(a.variants)}; coins "
        f"of {a.asset})",
        numeric=numbers,
    )  # fmt: skip
    for v in (*a.by_venue, a.total):
        venues.add_row(
            venue(v.protocol, v.chain_id), coin(v.collateral_coin),
            usd(v.collateral_usd), coin(v.debt_coin), usd(v.debt_usd),
            coin(v.options_delta_coin), coin(v.perps_delta_coin),
        )  # fmt: skip
    venues.caption = (
        f"net delta {coin(a.net_delta_coin)} {a.asset}; HHI {a.hhi:.4f} "
        f"({a.effective_holders:,.1f} effective of {a.n_holders} holders)"
    )
    holders = make_table(
        "#", "address", "collateral USD", "share",
        title=f"Top {a.asset} holders (collateral)", numeric=("#", "collateral USD", "share"),
    )  # fmt: skip
    for rank, h in enumerate(a.top_holders, start=1):
        holders.add_row(str(rank), h.address, usd(h.collateral_usd), f"{h.share:.2%}")
    low, high = LADDER_SHOWN_PCT
    levels = [lv for lv in a.ladder if _shown(round(lv.move * 100), low, high)]
    largest = max((lv.collateral_usd for lv in levels), default=0.0)
    ladder = make_table(
        "move", "price", "liquidatable USD", "debt USD", "accounts", "",
        title=f"{a.asset} liquidation ladder", numeric=("move", "price", "liquidatable USD",
                                                        "debt USD", "accounts"),
    )  # fmt: skip
    for lv in levels:
        ladder.add_row(
            f"{lv.move:+.0%}" if lv.move else "0%", usd(lv.price_usd), usd(lv.collateral_usd),
            usd(lv.debt_usd), str(lv.accounts), bar(lv.collateral_usd, largest),
        )  # fmt: skip
    ladder.caption = (
        f"collateral of the accounts liquidatable if {a.asset} moved to that price "
        "(its variants at their pegs, other assets fixed)"
    )
    return [venues, holders, ladder]
