"""All configured chains indexed concurrently in one process, each on its own.

:func:`run_indexers` starts one :class:`~indexer.pipeline.ChainIndexer` per chain on one
event loop. A chain's failure never stalls the others: a transient error (RPC down, a
database hiccup, a malformed answer) restarts that chain's indexer after a back-off, and so
does any other exception (logged with its traceback: a bug, or something from outside that
nothing checked); the back-off grows with failures in a row and starts over once the chain
has written again. A pause that needs an operator (reorg below finality) stops only that
chain and is reported. On PostgreSQL each
chain first takes its single-writer advisory lock; a second indexer for the same chain
waits as a hot standby (or, with ``once``, reports the chain as locked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from chains.aiorpc import AsyncRpcClient
from chains.endpoints import RpcPolicy
from chains.spec import ChainSpec, Registry
from indexer import native
from indexer.exceptions import ChainPausedError, WriterLockedError
from indexer.metrics import IndexerMetrics
from indexer.pipeline import CHAIN_ERRORS, BatchReport, ChainIndexer, IndexerOptions
from indexer.store import Store, WriterLock, describe

__all__ = ["ChainOutcome", "run_indexers", "select_chains"]

log = logging.getLogger(__name__)

_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class ChainOutcome:
    """How one chain's indexer ended — ``ok`` (caught up / stopped), ``paused``,
    ``locked`` or ``failed`` — with what this run did: events written (net of rollbacks
    it caused, counted as written), JSON-RPC calls made, reorgs handled."""

    chain_id: int
    status: str
    indexed_block: int
    detail: str = ""
    events: int = 0
    rpc_calls: int = 0
    reorgs: int = 0


def select_chains(registry: Registry, chain_ids: Sequence[int]) -> list[ChainSpec]:
    """The configured chains to index: all, or those named (unknown ids raise)."""
    if not chain_ids:
        return list(registry.chains)
    return [registry.chain(chain_id) for chain_id in dict.fromkeys(chain_ids)]


async def run_indexers(
    store: Store,
    chains: Sequence[ChainSpec],
    *,
    once: bool = False,
    stop: asyncio.Event | None = None,
    metrics: IndexerMetrics | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    options: IndexerOptions | None = None,
) -> list[ChainOutcome]:
    """Index ``chains`` into ``store``; with ``once`` return when every chain caught up."""
    stop = stop or asyncio.Event()
    log.info("indexing %d chain(s); decode loops in %s", len(chains), native.implementation())
    tasks = [
        _run_chain(
            store, spec, once=once, stop=stop, metrics=metrics, on_batch=on_batch, options=options
        )
        for spec in chains
    ]
    return list(await asyncio.gather(*tasks))


async def _run_chain(
    store: Store,
    spec: ChainSpec,
    *,
    once: bool,
    stop: asyncio.Event,
    metrics: IndexerMetrics | None,
    on_batch: Callable[[BatchReport], None] | None,
    options: IndexerOptions | None,
) -> ChainOutcome:
    chain_id = int(spec.chain_id)
    lock = await _acquire(store, chain_id, once=once, stop=stop)
    if lock is None:
        return ChainOutcome(chain_id, "locked", -1, "another indexer writes this chain")
    tally = _Tally(on_batch)
    failures, delay = 0, 0.0
    indexer: ChainIndexer | None = None
    try:
        while not stop.is_set():
            events_before = tally.events
            policy = _policy(spec, options)
            async with AsyncRpcClient(spec.rpc_urls, chain_id=chain_id, policy=policy) as client:
                indexer = ChainIndexer(
                    spec, store, client, options=options, on_batch=tally, metrics=metrics
                )
                try:
                    await indexer.run(once=once, stop=stop)
                    return tally.outcome(chain_id, "ok", indexer, client)
                except ChainPausedError as exc:
                    if metrics is not None:
                        metrics.paused.labels(chain_id).set(1)
                    return tally.outcome(chain_id, "paused", indexer, client, exc.reason)
                except Exception as exc:
                    tally.absorb(indexer, client)
                    if tally.events > events_before:  # it got somewhere: a new fault
                        failures = 0
                    delay = _RESTART_BACKOFF_S[min(failures, len(_RESTART_BACKOFF_S) - 1)]
                    failures += 1
                    expected = isinstance(exc, CHAIN_ERRORS)
                    log.error(
                        "chain %s: indexer stopped: %s; restarting in %.1f s",
                        chain_id,
                        describe(exc) if expected else f"unexpected {exc!r}",
                        delay,
                        exc_info=not expected,  # a bug, or an answer nothing checked
                    )
                    if once and failures > len(_RESTART_BACKOFF_S):
                        return tally.outcome(chain_id, "failed", indexer, None, describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        return tally.outcome(chain_id, "ok", indexer, None)
    finally:
        await asyncio.to_thread(lock.release)


def _policy(spec: ChainSpec, options: IndexerOptions | None) -> RpcPolicy:
    """The RPC policy for ``spec``: the options' (or the default), with the chain's rate
    limit from ``rtrm.toml`` when it sets one."""
    policy = (options.rpc if options is not None else None) or RpcPolicy()
    if spec.rpc_rate_limit_per_s:
        policy = replace(policy, rate_limit_per_s=spec.rpc_rate_limit_per_s)
    return policy


class _Tally:
    """Counts what one chain's successive indexers did, across restarts."""

    def __init__(self, on_batch: Callable[[BatchReport], None] | None) -> None:
        self.on_batch = on_batch
        self.events = self.calls = self.reorgs = 0

    def __call__(self, report: BatchReport) -> None:
        self.events += report.events
        if self.on_batch is not None:
            self.on_batch(report)

    def absorb(self, indexer: ChainIndexer, client: AsyncRpcClient | None) -> None:
        """Fold in the counters of an indexer (and its client) that is finished."""
        self.reorgs += indexer.reorgs_here
        if client is not None:
            self.calls += sum(e.calls for e in client.stats().endpoints)

    def outcome(
        self,
        chain_id: int,
        status: str,
        indexer: ChainIndexer | None,
        client: AsyncRpcClient | None,
        detail: str = "",
    ) -> ChainOutcome:
        if indexer is not None and client is not None:
            self.absorb(indexer, client)
        block = indexer.cursor[0] if indexer is not None else -1
        return ChainOutcome(chain_id, status, block, detail, self.events, self.calls, self.reorgs)


async def _acquire(
    store: Store, chain_id: int, *, once: bool, stop: asyncio.Event
) -> WriterLock | None:
    """The chain's writer lock; None if another process holds it (after waiting, unless
    ``once``)."""
    announced = False
    while True:
        try:
            return await asyncio.to_thread(store.acquire_writer, chain_id)
        except WriterLockedError as exc:
            if once:
                log.error("%s", exc)
                return None
            if not announced:
                log.warning("chain %s: standing by: %s", chain_id, exc)
                announced = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2.0)
        if stop.is_set():
            return None
