"""``rtrm serve [--port 8080]``: live indexers, risk refresh, insurance jobs and the API.

Starts the HTTP API and dashboard on ``127.0.0.1:PORT`` (loopback only), the live indexers
for every configured chain (or those named with ``--chain``) on the same event loop, and
the scheduled jobs (full recompute, capital sizing, the insurance trigger when an
operator is configured, stale-data checks); see :mod:`rtrm.service`. Prints the URLs once
it listens, then one log line per indexed range. SIGTERM or Ctrl-C stops it gracefully:
the ranges in flight are finished and the requests in flight answered. ``--no-index``
serves the API only, over a store that other processes index (``rtrm index``).

The bearer token of mutating endpoints comes from ``RTRM_API_TOKEN`` (or ``api.toml``
beside ``rtrm.toml``), never from the command line, where other users could read it.
Exit code 1 if a chain's indexer ended paused or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Any

from rtrm.commands import load_config

if TYPE_CHECKING:
    from rtrm.commands import Subparsers
    from rtrm.service import Service

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="live indexers + risk refresh + insurance jobs + HTTP API and dashboard"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port on 127.0.0.1 (default 8080; 0: any free)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        choices=("127.0.0.1", "::1", "localhost"),
        help="loopback address to listen on",
    )
    parser.add_argument(
        "--chain",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="index only this chain id (repeatable; default: every configured chain)",
    )
    parser.add_argument(
        "--no-index", action="store_true", help="serve the API only; another process indexes"
    )
    parser.add_argument(
        "--full-recompute",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="reload the whole snapshot this often (default 30)",
    )
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from api.context import load_api_settings
    from chains.exceptions import ConfigError
    from indexer.runner import select_chains
    from indexer.store import open_store
    from insurance.config import load_insurance_config
    from rtrm.service import Service, ServiceOptions

    registry = load_config(args)
    chains = tuple(select_chains(registry, args.chain))
    if args.port is not None and not 0 <= args.port < 65536:  # noqa: PLR2004
        raise ConfigError(f"--port must be 0-65535, got {args.port}")
    if not args.full_recompute > 0:
        raise ConfigError(f"--full-recompute must be > 0 seconds, got {args.full_recompute}")
    settings = load_api_settings(registry.source, host=args.host, port=args.port)
    insurance = load_insurance_config(registry.source)
    options = ServiceOptions(
        index=not args.no_index, chains=chains, full_recompute_s=args.full_recompute
    )
    store = open_store(registry.database_url)
    try:
        service = Service(store, registry, settings=settings, insurance=insurance, options=options)
        outcomes = asyncio.run(_serve(service))
    finally:
        store.dispose()
    return 0 if all(o.status == "ok" for o in outcomes) else 1


def _ready(service: Service) -> None:
    url = service.url
    lines = [
        f"RTRM serving on {url}",
        f"  dashboard  {url}/",
        f"  API        {url}/v1/status  (described at {url}/openapi.json)",
        f"  metrics    {url}/metrics",
        "Ctrl-C stops it (ranges in flight are finished first).",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


async def _serve(service: Service) -> Any:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await service.run(stop, ready=_ready)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
