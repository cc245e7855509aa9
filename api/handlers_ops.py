"""Operating the service: indexing status, health, metrics and the API's own description.

- ``GET /v1/status``: per chain (``rtrm status --json`` keys) head, indexed block, lag,
  finalized block, events, reorgs, pause reason; heads are the live indexers' when they
  run in this process, else the last recorded; plus the cached snapshot's watermark,
  size and age;
- ``GET /healthz``: 200 ``{"status": "ok"}`` once a snapshot is loaded (``degraded`` when
  the last refresh failed and an older snapshot is served); 503 before anything can be
  loaded (an empty store). Never rate-limited;
- ``GET /metrics``: Prometheus text: the indexers' ``rtrm_indexer_*`` and the API's
  ``rtrm_api_*``. Never rate-limited;
- ``GET /openapi.json``: the OpenAPI 3.1 description (:mod:`api.openapi`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.context import ApiContext
from api.errors import HttpError
from api.http import context, json_response
from api.openapi import openapi_spec
from indexer.status import chain_status, watermark

__all__ = ["routes"]


def _live_heads(ctx: ApiContext) -> dict[int, int]:
    """Heads the in-process indexers last saw (from their metrics), if they run here."""
    heads: dict[int, int] = {}
    if not ctx.live:
        return heads
    for chain_id in ctx.registry.chain_ids:
        value = ctx.indexer_metrics.registry.get_sample_value(
            "rtrm_indexer_head_block", {"chain_id": str(chain_id)}
        )
        if value is not None and value > 0:
            heads[int(chain_id)] = int(value)
    return heads


def _snapshot_info(ctx: ApiContext) -> dict[str, Any]:
    base = ctx.snapshots.base
    return {
        "watermark": ctx.snapshots.watermark,
        "base_watermark": None if base is None else dict(base.snapshot.watermark),
        "users": None if base is None else base.snapshot.inputs.n_users,
        "overlay_users": len(ctx.snapshots.overlay),
        "age_s": None if base is None else round(time.monotonic() - base.loaded_s, 3),
        "block_time_s": None if base is None else dict(base.snapshot.block_time_s),
        "last_error": ctx.snapshots.last_error,
    }


async def status(request: web.Request) -> web.Response:
    ctx = context(request)
    heads = _live_heads(ctx)

    def read() -> dict[str, Any]:
        with ctx.store.engine.connect() as conn:
            return {"watermark": watermark(conn), "chains": chain_status(conn, heads)}

    answer = await asyncio.get_running_loop().run_in_executor(None, read)
    answer["snapshot"] = _snapshot_info(ctx)
    answer["live_indexers"] = ctx.live
    return json_response(answer)


async def healthz(request: web.Request) -> web.Response:
    ctx = context(request)
    try:
        await ctx.snapshots.entry()
    except HttpError:
        raise
    except Exception as exc:  # an empty or unreachable store: not ready, said plainly
        raise HttpError(
            503, "not_ready", f"no snapshot can be loaded yet: {exc}", headers={"Retry-After": "1"}
        ) from None
    info = _snapshot_info(ctx)
    state = "ok" if info["last_error"] is None else "degraded"
    return json_response({"status": state, **info})


async def metrics(request: web.Request) -> web.Response:
    registry = context(request).indexer_metrics.registry
    body = generate_latest(registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_spec())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/status", status),
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/openapi.json", openapi),
    ]
