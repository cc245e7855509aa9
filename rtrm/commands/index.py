"""``rtrm index [--once] [--chain ID ...]``: fill the store from the configured chains.

``index`` migrates the store, then indexes every configured chain (or those named)
concurrently: a rich progress bar per chain while it backfills (blocks, events/s, ETA),
one INFO log line per written range, Prometheus metrics on ``--metrics-port``. Without
``--once`` it keeps following the heads until Ctrl-C / SIGTERM, finishing the range in
flight first. ``status`` prints what the store knows per chain, with live heads when the
nodes answer.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

from rtrm.commands import load_config
from rtrm.output import console, emit, make_table

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from rich.console import RenderableType

    from indexer.metrics import IndexerMetrics
    from indexer.pipeline import BatchReport
    from indexer.runner import ChainOutcome
    from rtrm.commands import Subparsers

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    index = subparsers.add_parser(
        "index", help="index the configured chains into the store (backfill, then follow)"
    )
    index.add_argument(
        "--once", action="store_true", help="stop when every chain has reached its head"
    )
    index.add_argument(
        "--chain",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="index only this chain id (repeatable; default: every configured chain)",
    )
    index.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT",
    )
    index.add_argument(
        "--reset-chain",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="forget everything indexed for this chain first (after a reorg below finality)",
    )
    index.add_argument(
        "--max-span",
        type=int,
        default=None,
        metavar="BLOCKS",
        help="never ask eth_getLogs for more blocks than this (a provider's hard limit)",
    )
    index.add_argument(
        "--bulk-events",
        type=int,
        default=200_000,
        metavar="N",
        help="a backfill expecting more events than this (and than the store holds) drops "
        "the indexes on random keys and builds them at its end (default 200000; 0: every "
        "backfill; -1: never)",
    )
    index.add_argument("--no-progress", action="store_true", help="log lines only, no bars")
    index.add_argument(
        "--json", action="store_true", help="print the per-chain summary as JSON when done"
    )
    index.set_defaults(func=run_index)


def run_index(args: argparse.Namespace) -> int:
    from chains.exceptions import ConfigError
    from indexer.metrics import IndexerMetrics
    from indexer.pipeline import IndexerOptions
    from indexer.runner import select_chains
    from indexer.store import open_store, reset_chain

    registry = load_config(args)
    chains = select_chains(registry, args.chain)
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:  # noqa: PLR2004
        raise ConfigError(f"--metrics-port must be 1-65535, got {args.metrics_port}")
    if args.max_span is not None and args.max_span < 1:
        raise ConfigError(f"--max-span must be at least 1 block, got {args.max_span}")
    if args.bulk_events < -1:
        raise ConfigError(f"--bulk-events must be -1 (never) or more, got {args.bulk_events}")
    bulk = None if args.bulk_events == -1 else args.bulk_events
    options = IndexerOptions(max_span=args.max_span, bulk_events=bulk)
    for chain_id in args.reset_chain:
        registry.chain(chain_id)  # unknown ids fail with a suggestion, before anything runs
    metrics = IndexerMetrics()
    # Bound before the store is touched: a port in use must not fail after --reset-chain
    # has already deleted a chain's data.
    server = _serve_metrics(args.metrics_port, metrics) if args.metrics_port else None
    store = None
    try:
        store = open_store(registry.database_url)
        for chain_id in args.reset_chain:
            with store.transaction() as conn:
                reset_chain(conn, chain_id)
        progress = _Progress(enabled=not args.no_progress and console().is_terminal)
        with progress:
            outcomes = asyncio.run(
                _index(
                    store,
                    chains,
                    once=args.once,
                    metrics=metrics,
                    on_batch=progress.update,
                    options=options,
                ),
            )
    finally:
        if store is not None:
            store.dispose()
        if server is not None:
            server.shutdown()
            server.server_close()
    emit(outcomes, as_json=args.json, table=lambda: _summary(outcomes))
    return 0 if all(o.status == "ok" for o in outcomes) else 1


def _serve_metrics(port: int, metrics: IndexerMetrics) -> WSGIServer:
    """Prometheus metrics on ``127.0.0.1:port``, served by a daemon thread."""
    import errno

    from prometheus_client import start_http_server

    from chains.exceptions import ConfigError

    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = f"--metrics-port: port {port} is in use; pick another with --metrics-port"
        else:
            reason = exc.strerror or exc
            message = (
                f"--metrics-port: cannot serve metrics on 127.0.0.1:{port} ({reason}); pick "
                "another port (above 1023 unless running as root)"
            )
        raise ConfigError(message) from None
    return server


def _summary(outcomes: list[ChainOutcome]) -> RenderableType:
    table = make_table(
        "chain",
        "state",
        "indexed",
        "events",
        "rpc calls",
        "reorgs",
        "detail",
        title="Indexed",
        numeric=("chain", "indexed", "events", "rpc calls", "reorgs"),
    )
    for o in outcomes:
        table.add_row(
            str(o.chain_id),
            o.status,
            f"{o.indexed_block:,}",
            f"{o.events:,}",
            f"{o.rpc_calls:,}",
            str(o.reorgs),
            o.detail,
        )
    return table


async def _index(store: Any, chains: Any, **kwargs: Any) -> Any:
    from indexer.runner import run_indexers

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run_indexers(store, chains, stop=stop, **kwargs)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


class _Progress:
    """One rich progress bar per chain: blocks done of the head, events/s, ETA."""

    def __init__(self, *, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
        )

        self.enabled = enabled
        self.progress = Progress(
            TextColumn("chain {task.fields[chain]:>6}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks  {task.fields[events]:>10,} events  {task.fields[rate]:>8,.0f}/s"),
            TimeRemainingColumn(),
            console=console(),
            disable=not enabled,
        )
        self.tasks: dict[int, TaskID] = {}
        self.started: dict[int, tuple[float, int]] = {}
        self.events: dict[int, int] = {}

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def update(self, report: BatchReport) -> None:
        chain = report.chain_id
        now = time.perf_counter()
        if chain not in self.tasks:
            self.started[chain] = (now, report.first)
            self.events[chain] = 0
            self.tasks[chain] = self.progress.add_task(
                "", total=report.head - report.first + 1, chain=chain, events=0, rate=0.0
            )
        self.events[chain] += report.events
        since, first = self.started[chain]
        rate = self.events[chain] / max(now - since, 1e-9)
        self.progress.update(
            self.tasks[chain],
            total=max(1, report.head - first + 1),
            completed=report.last - first + 1,
            events=self.events[chain],
            rate=rate,
        )
