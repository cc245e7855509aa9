"""``/v1/users/{address}/…``: one address's unified risk and its positions.

- ``GET /v1/users/{address}/risk[?grid=derive|deribit|span][&contagion=true]``: the
  :class:`aggregation.user_report.RiskReport` of ``rtrm risk --json``, from the cached
  snapshot (the overlay's when the address changed since the last full load), memoised
  per snapshot. ``contagion=true`` adds the address's share of systemic losses in the
  default historical scenarios (computed once per full snapshot, then O(1) per user).
- ``GET /v1/users/{address}/positions``: the address's rows in the store at the
  snapshot's watermark, exact: balances (collateral, debt, perps margin) in the token's
  smallest unit with its symbol and decimals, option positions with their series (WAD
  sizes and strikes), perp positions (WAD).

A malformed or mis-checksummed address is a 400 ``bad_address``; an address without
positions gets an all-zero report and empty lists (no risk is an answer).

Cold reports (the first of a user in a snapshot) are assembled from a
:class:`~aggregation.report_basis.ReportBasis` of the whole book, prepared once per
snapshot and grid in a worker thread (:meth:`Entry.prepared`: first the tail-risk draws,
shared by the grids, then the grid's ``unified_risk`` of every user): a report then costs
the user's row, its hedge and its tail P&L. ``rtrm risk`` assembles the same report with
the same code from the basis of the user's slice, and ``unified_risk`` gives a user the
same bits in any batch, so the bytes agree by construction. Until the basis is ready, for
users absent from the snapshot, and on overlays of touched users (replaced every block),
reports come from ``user_risk_report`` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import Connection, text

from aggregation.report_basis import ReportBasis, TailBasis
from aggregation.scenarios import ScenarioGrid, deribit_pm_grid, derive_pmrm_grid, span16_grid
from aggregation.snapshot import protocol_labels
from aggregation.systemic import DEFAULT_SCENARIOS
from aggregation.user_report import ReportParams, RiskReport, report_from_basis, user_risk_report
from api.encoding import dumps
from api.http import (
    address_param,
    bool_param,
    choice_param,
    context,
    json_body_response,
    json_response,
)
from api.snapshots import Entry
from chains.spec import Registry

__all__ = ["GRIDS", "encode_report", "routes", "scenario_grid"]

GRIDS = ("derive", "deribit", "span")
_GRID_MAKERS: dict[str, Callable[[], ScenarioGrid]] = {
    "derive": derive_pmrm_grid,
    "deribit": deribit_pm_grid,
    "span": span16_grid,
}
_GRID_CACHE: dict[str, ScenarioGrid] = {}
_PLAIN = ReportParams()
_CONTAGION = replace(_PLAIN, contagion_scenarios=DEFAULT_SCENARIOS)

# A basis costs a pass over the book and the tail draws (seconds at 100k users) and saves
# ~2 ms a report: overlays of touched users (replaced every block, each user asked a few
# times) and tiny books take the library's path.
_BASIS_MIN_USERS = 32
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
_FIELDS: dict[type, tuple[str, ...]] = {}

_AS_OF = (
    "chain_id = :c AND account = :a AND valid_from <= :b AND (valid_to IS NULL OR valid_to > :b)"
)
_BALANCES = (
    "SELECT protocol, protocol_kind, kind, asset, amount FROM account_balance WHERE "
    + _AS_OF
    + " ORDER BY protocol, kind, asset"
)
_OPTIONS = (
    "SELECT p.protocol, p.series_id, p.size_wad, s.underlying, s.expiry, s.strike_wad, s.is_call "
    "FROM option_position p JOIN option_series s ON s.chain_id = p.chain_id "
    "AND s.protocol = p.protocol AND s.series_id = p.series_id AND s.block_number <= :b "
    "WHERE p.chain_id = :c AND p.account = :a AND p.valid_from <= :b "
    "AND (p.valid_to IS NULL OR p.valid_to > :b) ORDER BY p.protocol, s.expiry, p.series_id"
)
_PERPS = (
    "SELECT protocol, market, size_wad, open_notional_wad, entry_funding_index_wad "
    "FROM perp_position WHERE " + _AS_OF + " ORDER BY protocol, market"
)


def scenario_grid(name: str) -> ScenarioGrid:
    """The grid called ``name`` (one of :data:`GRIDS`), built once."""
    grid = _GRID_CACHE.get(name)
    if grid is None:
        grid = _GRID_CACHE[name] = _GRID_MAKERS[name]()
    return grid


async def user_risk(request: web.Request) -> web.Response:
    address = address_param(request)
    grid = choice_param(request, "grid", GRIDS, "derive")
    contagion = bool_param(request, "contagion")
    cache = context(request).snapshots
    entry = await (cache.entry() if contagion else cache.entry_for(address))
    params = _CONTAGION if contagion else _PLAIN

    def report() -> bytes:
        basis = _basis(entry, grid)
        fast = report_from_basis(basis, address, params.contagion_scenarios) if basis else None
        if fast is not None:
            return encode_report(fast)
        return dumps(user_risk_report(entry.snapshot, address, scenario_grid(grid), params))

    return json_body_response(entry.remembered(("risk", address, grid, contagion), report))


def _basis(entry: Entry, grid: str) -> ReportBasis | None:
    """The whole book's report basis on ``grid`` once it is ready (loop thread only): the
    tail draws first (shared by the grids), then the grid's ``unified_risk``."""
    snapshot = entry.snapshot
    if not snapshot.complete or snapshot.inputs.n_users < _BASIS_MIN_USERS:
        return None
    tail = entry.prepared("report-tail", lambda: TailBasis.prepare(snapshot, _PLAIN))
    if tail is None:
        return None
    return entry.prepared(
        ("report-basis", grid), lambda: ReportBasis.prepare(tail, scenario_grid(grid))
    )


def encode_report(report: RiskReport) -> bytes:
    """``api.encoding.dumps(report)``, ~5x faster: orjson walks the dataclasses itself
    (fields as key-sorted objects, NaN and infinities as null, chain ids as strings)."""
    try:
        return orjson.dumps(report, default=_as_object, option=_ORJSON)
    except TypeError:  # an integer beyond 64 bits
        return dumps(report)


def _as_object(value: object) -> dict[str, Any]:
    names = _FIELDS.get(type(value))
    if names is None:
        if not dataclasses.is_dataclass(value):
            raise TypeError(f"{type(value).__name__} is not JSON")
        names = _FIELDS[type(value)] = tuple(f.name for f in fields(value))
    return {name: getattr(value, name) for name in names}


async def user_positions(request: web.Request) -> web.Response:
    address = address_param(request)
    ctx = context(request)
    entry = await ctx.snapshots.entry_for(address)
    cut = dict(entry.snapshot.watermark)

    def read() -> dict[str, Any]:
        with ctx.store.engine.connect() as conn:
            return _positions(conn, ctx.registry, address, cut)

    positions = await entry.computed(("positions", address), read)
    return json_response(positions)


def _positions(
    conn: Connection, registry: Registry, address: str, cut: Mapping[int, int]
) -> dict[str, Any]:
    """Every row of ``address`` as of ``cut`` (module docstring), grouped by chain."""
    chains = [c for c in registry.chains if c.chain_id in cut]
    labels = protocol_labels(chains)
    out = []
    for chain in chains:
        values = {"c": chain.chain_id, "a": address, "b": cut[chain.chain_id]}
        tokens = {t.address.lower(): t for t in chain.tokens}
        balances = []
        for protocol, protocol_kind, kind, asset, amount in conn.execute(text(_BALANCES), values):
            token = tokens.get(str(asset).lower())
            balances.append(
                {
                    "protocol": labels.get((chain.chain_id, protocol), protocol),
                    "protocol_address": protocol,
                    "protocol_kind": protocol_kind,
                    "kind": kind,
                    "token": asset,
                    "symbol": None if token is None else token.symbol,
                    "asset": None if token is None else token.asset_id,
                    "decimals": None if token is None else token.decimals,
                    "amount": int(amount),
                }
            )
        options = [
            {
                "protocol": labels.get((chain.chain_id, protocol), protocol),
                "series_id": int(series),
                "underlying": underlying,
                "expiry": int(expiry),
                "strike_wad": int(strike),
                "is_call": bool(is_call),
                "size_wad": int(size),
            }
            for protocol, series, size, underlying, expiry, strike, is_call in conn.execute(
                text(_OPTIONS), values
            )
        ]
        perps = [
            {
                "protocol": labels.get((chain.chain_id, protocol), protocol),
                "market": market,
                "size_wad": int(size),
                "open_notional_wad": int(notional),
                "entry_funding_index_wad": int(funding),
            }
            for protocol, market, size, notional, funding in conn.execute(text(_PERPS), values)
        ]
        if balances or options or perps:
            out.append(
                {
                    "chain_id": chain.chain_id,
                    "block": cut[chain.chain_id],
                    "balances": balances,
                    "options": options,
                    "perps": perps,
                }
            )
    return {"address": address, "watermark": dict(cut), "chains": out}


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/users/{address}/risk", user_risk),
        web.get("/v1/users/{address}/positions", user_positions),
    ]
