"""Systemic views: exposure per asset, the contagion network, and stress runs.

- ``GET /v1/assets/exposure[?top=N]``: :class:`aggregation.systemic.ExposureReport` for
  every root asset with a position (``rtrm exposure --json``), liquidation ladders included;
- ``GET /v1/assets/{asset}/exposure[?top=N]``: the same for one asset (a variant such as
  ``wstETH`` answers for its root); an unknown asset is a 404 ``unknown_asset`` with a
  did-you-mean;
- ``GET /v1/systemic/contagion[?scenario=NAME][&depth=ETH=5e7,...]``: for each scenario
  (default: :data:`aggregation.systemic.DEFAULT_SCENARIOS`; repeat the parameter for
  several), the cascade's totals and the protocol network's DebtRank and Eisenberg-Noe
  clearing; plus the network itself (nodes with collateral and debt, edges with direct
  and fire-sale exposure) for drawing. ``depth`` gives assets a linear market of that
  depth (USD), which creates fire-sale edges; without it the network has none;
- ``POST /v1/stress`` with ``{"shock": "ETH=-0.30,stETH=-8%"}`` (or ``{"shock": {"ETH":
  -0.3}}``) or ``{"scenario": "2020-03-12"}``, and optionally ``"depth": {"ETH": 5e7}``:
  :class:`aggregation.systemic.StressReport` (``rtrm stress --json``). A malformed shock
  or an unknown asset or scenario is a 422 ``bad_shock`` naming the bad part.

Everything runs on the cached full snapshot in a worker thread and is memoised on it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from aiohttp import web

from aggregation.contagion import protocol_network
from aggregation.exceptions import UnknownAssetError
from aggregation.exposure import CanonicalMap
from aggregation.snapshot import Snapshot
from aggregation.stress import Shock, parse_shock, resolve_asset
from aggregation.systemic import (
    DEFAULT_SCENARIOS,
    StressParams,
    exposure_report,
    root_asset,
    scenario,
    stress_report,
)
from api.encoding import dumps
from api.errors import HttpError
from api.http import context, finite_number, int_param, json_body, json_body_response

__all__ = ["routes"]

_ASSET_NAME = re.compile(r"[A-Za-z0-9._-]{1,32}")
_MAX_SCENARIOS = 8
_BODY_KEYS = {"shock", "scenario", "depth"}


async def exposure(request: web.Request) -> web.Response:
    top = int_param(request, "top", default=10, low=1, high=100)
    entry = await context(request).snapshots.entry()
    snapshot, top_n = entry.snapshot, top or 10
    body = await entry.computed(
        ("exposure", None, top_n), lambda: dumps(exposure_report(snapshot, None, top_n=top_n))
    )
    return json_body_response(body)


async def asset_exposure(request: web.Request) -> web.Response:
    top = int_param(request, "top", default=10, low=1, high=100)
    entry = await context(request).snapshots.entry()
    name = request.match_info["asset"]
    if not _ASSET_NAME.fullmatch(name):
        raise HttpError(
            404, "unknown_asset", f"unknown asset {name[:40]!r}; asset ids look like ETH, WSTETH"
        )
    root = root_asset(entry.snapshot, name)  # UnknownAssetError -> 404 with a did-you-mean
    snapshot, top_n = entry.snapshot, top or 10
    body = await entry.computed(
        ("exposure", root, top_n), lambda: dumps(exposure_report(snapshot, root, top_n=top_n))
    )
    return json_body_response(body)


def _depth(snapshot: Snapshot, given: Mapping[str, Any]) -> dict[str, float]:
    """``{"ETH": 5e7}`` checked against the snapshot: asset ids -> USD depth (> 0)."""
    depth: dict[str, float] = {}
    for name, value in given.items():
        if not _ASSET_NAME.fullmatch(name):
            raise HttpError(422, "bad_parameter", f"depth: {name[:40]!r} is not an asset id")
        usd = finite_number(value, f"depth of {name}")
        if usd <= 0.0:
            raise HttpError(422, "bad_parameter", f"depth of {name} must be > 0 USD, got {usd}")
        depth[snapshot.assets[resolve_asset(name, snapshot.assets)]] = usd
    return depth


def _depth_text(text: str) -> dict[str, Any]:
    """``"ETH=5e7,BTC=1e8"`` -> ``{"ETH": 5e7, "BTC": 1e8}`` (numbers checked by _depth)."""
    out: dict[str, Any] = {}
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        name, sep, value = token.partition("=")
        try:
            number: Any = float(value.strip().replace("_", "")) if sep else None
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            raise HttpError(
                400,
                "bad_parameter",
                f"depth={token[:40]!r}: expected ASSET=USD[,ASSET=USD], e.g. ETH=5e7",
            )
        out[name.strip()] = number
    return out


def _network(snapshot: Snapshot, depth: Mapping[str, float]) -> dict[str, Any]:
    """The protocol network's nodes and non-zero edges, for drawing (USD)."""
    x = snapshot.inputs
    cmap = CanonicalMap.of(x, snapshot.asset_canonical)
    per_asset = np.zeros(len(snapshot.assets))
    for name, usd in depth.items():
        per_asset[snapshot.assets.index(name)] = usd
    roots_depth = per_asset[cmap.roots]
    net = protocol_network(
        x,
        cmap,
        np.full(len(snapshot.assets), -1, np.intp),
        depth_usd=roots_depth if roots_depth.any() else None,
    )
    n_c = x.n_chains

    def label(k: int) -> str:
        return snapshot.protocols[k // n_c]

    live = np.flatnonzero((net.collateral_usd > 0.0) | (net.debt_usd > 0.0))
    nodes = [
        {
            "id": label(int(k)),
            "chain_id": snapshot.chain_ids[int(k) % n_c],
            "collateral_usd": float(net.collateral_usd[k]),
            "debt_usd": float(net.debt_usd[k]),
            "equity_usd": float(net.equity_usd[k]),
        }
        for k in live
    ]
    edges = [
        {
            "source": label(int(j)),
            "target": label(int(i)),
            "direct_usd": float(net.direct_exposure_usd[i, j]),
            "fire_sale_usd": float(net.fire_sale_exposure_usd[i, j]),
        }
        for i, j in zip(*np.nonzero(net.exposure_usd > 0.0), strict=True)
    ]
    return {"nodes": nodes, "edges": edges}


def _contagion(snapshot: Snapshot, shocks: tuple[Shock, ...], depth: dict[str, float]) -> bytes:
    params = StressParams(depth_usd=depth)
    runs = []
    for shock in shocks:
        r = stress_report(snapshot, shock, params)
        runs.append(
            {
                "scenario": r.scenario,
                "start": r.start,
                "end": r.end,
                "moves": r.moves,
                "liquidated_collateral_usd": r.liquidated_collateral_usd,
                "bad_debt_usd": r.bad_debt_usd,
                "users_affected": r.users_affected,
                "contagion": r.contagion,
                "warnings": r.warnings,
            }
        )
    return dumps(
        {
            "watermark": dict(snapshot.watermark),
            "depth_usd": depth,
            "scenarios": runs,
            "network": _network(snapshot, depth),
        }
    )


async def contagion(request: web.Request) -> web.Response:
    names = request.query.getall("scenario", []) or list(DEFAULT_SCENARIOS)
    if len(names) > _MAX_SCENARIOS:
        raise HttpError(400, "bad_parameter", f"at most {_MAX_SCENARIOS} scenarios per request")
    shocks = tuple(scenario(name[:64]) for name in names)  # unknown -> 422 with a did-you-mean
    entry = await context(request).snapshots.entry()
    try:
        depth = _depth(entry.snapshot, _depth_text(request.query.get("depth", "")))
    except UnknownAssetError as exc:
        raise HttpError(422, "bad_parameter", f"depth: {exc}") from None
    key = ("contagion", tuple(s.name for s in shocks), tuple(sorted(depth.items())))
    body = await entry.computed(key, lambda: _contagion(entry.snapshot, shocks, depth))
    return json_body_response(body)


def _shock(snapshot: Snapshot, body: Mapping[str, Any]) -> Shock:
    given, named = body.get("shock"), body.get("scenario")
    if (given is None) == (named is None):
        raise HttpError(
            422,
            "bad_shock",
            'give exactly one of "shock" (e.g. "ETH=-0.30,stETH=-8%" or {"ETH": -0.3}) '
            'and "scenario" (a historical scenario name or date, e.g. "2020-03-12")',
        )
    if named is not None:
        if not isinstance(named, str) or not named.strip():
            raise HttpError(422, "bad_shock", "scenario must be a name or date string")
        return scenario(named[:64])
    if isinstance(given, str):
        return parse_shock(given[:2000], snapshot.assets)
    if isinstance(given, dict) and given:
        parts = []
        for name, move in given.items():
            if not _ASSET_NAME.fullmatch(name):
                raise HttpError(422, "bad_shock", f"shock: {name[:40]!r} is not an asset id")
            parts.append(f"{name}={finite_number(move, f'the move of {name}')!r}")
        return parse_shock(",".join(parts), snapshot.assets)
    raise HttpError(
        422, "bad_shock", 'shock must be a string like "ETH=-0.30" or an object like {"ETH": -0.3}'
    )


async def stress(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = sorted(set(body) - _BODY_KEYS)
    if unknown:
        raise HttpError(
            422,
            "bad_parameter",
            f"unknown field(s) {', '.join(map(repr, unknown))[:200]}; "
            f"expected {', '.join(sorted(_BODY_KEYS))}",
        )
    entry = await context(request).snapshots.entry()
    snapshot = entry.snapshot
    raw_depth = body.get("depth", {})
    if isinstance(raw_depth, str):
        raw_depth = _depth_text(raw_depth)
    if not isinstance(raw_depth, dict):
        raise HttpError(422, "bad_parameter", 'depth must be an object like {"ETH": 5e7}')
    try:
        shock = _shock(snapshot, body)
        depth = _depth(snapshot, raw_depth)
    except UnknownAssetError as exc:  # in a body, an unknown asset is bad input, not a path
        raise HttpError(422, "bad_shock", str(exc)) from None
    key = ("stress", shock.name, shock.moves, shock.start, tuple(sorted(depth.items())))
    report = await entry.computed(
        key, lambda: dumps(stress_report(snapshot, shock, StressParams(depth_usd=depth)))
    )
    return json_body_response(report)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/assets/exposure", exposure),
        web.get("/v1/assets/{asset}/exposure", asset_exposure),
        web.get("/v1/systemic/contagion", contagion),
        web.post("/v1/stress", stress),
    ]
