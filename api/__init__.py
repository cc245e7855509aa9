"""The HTTP API and dashboard: stateless readers of the store and the risk results.

aiohttp handlers answer "what is this address's total risk, everywhere?", systemic
exposure, stress and insurance questions, described by an OpenAPI spec, plus a static
dashboard page. Every answer states the watermark vector {chain_id: block} it was
computed at. Servers hold no state of their own, so they scale horizontally.

Modules: :mod:`app` (application, middlewares, loopback listener), :mod:`context`
(what handlers share, settings), :mod:`snapshots` (the snapshot cache, reloaded when the
watermark moves, incrementally for touched users), ``handlers_*`` (one per concern),
:mod:`errors` (the JSON error shape and status mapping), :mod:`ratelimit`,
:mod:`metrics`, :mod:`openapi` and :mod:`openapi_schemas` (the description served at
``/openapi.json``), :mod:`encoding` (JSON rules of ``rtrm --json``), ``static/`` (the
dashboard page).

May import ``insurance``, ``aggregation``, ``indexer`` and ``chains``. Public names are
imported lazily (PEP 562), so importing ``api.exceptions`` (as every ``rtrm`` command
does) loads neither aiohttp handlers nor numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.app import create_app, start_site
    from api.context import ApiContext, ApiSettings, load_api_settings
    from api.openapi import openapi_spec
    from api.snapshots import SnapshotCache

_EXPORTS: dict[str, str] = {
    "ApiContext": "api.context",
    "ApiSettings": "api.context",
    "SnapshotCache": "api.snapshots",
    "create_app": "api.app",
    "load_api_settings": "api.context",
    "openapi_spec": "api.openapi",
    "start_site": "api.app",
}

__all__ = [
    "ApiContext",
    "ApiSettings",
    "SnapshotCache",
    "create_app",
    "load_api_settings",
    "openapi_spec",
    "start_site",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
