"""All configured chains indexed concurrently in one process, each on its own.

:func:`run_indexers` starts one :class:`~indexer.pipeline.ChainIndexer` per chain on one
event loop. A chain's failure never stalls the others: a transient error (RPC down, a
database hiccup, a malformed answer) restarts that chain's indexer after a back-off, and so
does any other exception (logged with its traceback: a bug, or something from outside that
nothing checked); the back-off grows with failures in a row and starts over once the chain
made progress (its cursor moved on, events or not) or ran for a while without failing. A
pause that needs an operator (reorg below finality) stops only that chain and is reported.

On PostgreSQL each chain first takes its single-writer advisory lock; a second indexer for
the same chain waits as a hot standby (or, with ``once``, reports the chain as locked). A
writer whose lock's session ended (killed, a database restart or failover, an idle
timeout) learns it at its next write, which rolls back (:func:`indexer.store.check_writer`,
and the cursor's compare-and-set), or when it fails: it stops, releases, and stands by for
the lock like the second indexer.

Which genesis the chain's endpoints must serve (:class:`_Genesis`): ``genesis_hash`` from
``rtrm.toml`` if set, else the one the store recorded for the chain, else the one all of
its answering endpoints agree on. An endpoint serving another is benched by the client
(:mod:`chains.aiorpc`) and the others go on. When none serves it: a configured genesis
pauses the chain (never a reason to drop data: the URL may be mistyped), naming both
hashes, until an endpoint serves it again; without one, a new genesis that every endpoint
agrees on is a restarted node, whose chain the pipeline re-indexes from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import text

from chains.aiorpc import AsyncRpcClient
from chains.endpoints import RpcPolicy
from chains.exceptions import ChainError, GenesisMismatchError
from chains.spec import ChainSpec, Registry
from chains.urls import hide_credentials
from indexer import native
from indexer.exceptions import ChainPausedError, WriterLockedError
from indexer.metrics import IndexerMetrics
from indexer.pipeline import CHAIN_ERRORS, BatchReport, ChainIndexer, IndexerOptions
from indexer.store import Store, WriterLock, describe

__all__ = ["ChainOutcome", "run_indexers", "select_chains"]

log = logging.getLogger(__name__)

_RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_HEALTHY_S = 60.0  # an indexer that ran this long before failing starts the back-off over
_LOCK_POLL_S = 2.0  # a standby tries the writer lock this often
_AFTER_LOSS_S = 5.0  # a writer that lost the lock lets the standbys (polling) take it first
_SURVEY_POLICY = RpcPolicy(request_timeout_s=5.0, call_timeout_s=5.0, max_attempts=2)


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
        _ChainRun(store, spec, once=once, stop=stop, metrics=metrics, options=options).run(
            _Tally(on_batch)
        )
        for spec in chains
    ]
    return list(await asyncio.gather(*tasks))


class _ChainRun:
    """One chain's indexers, one after the other: lock, genesis, restarts and back-off."""

    def __init__(
        self,
        store: Store,
        spec: ChainSpec,
        *,
        once: bool,
        stop: asyncio.Event,
        metrics: IndexerMetrics | None,
        options: IndexerOptions | None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.chain_id = int(spec.chain_id)
        self.once = once
        self.stop = stop
        self.metrics = metrics
        self.options = options
        self.genesis = _Genesis(store, spec)
        self.failures = 0
        self.progress = -1  # the highest cursor an indexer of this run left at a failure
        self.pause_reason: str | None = None  # of a genesis pause, recorded in the store

    async def run(self, tally: _Tally) -> ChainOutcome:
        """Take the chain's writer lock and index; stand by again if the lock is lost."""
        while True:
            lock = await _acquire(self.store, self.chain_id, once=self.once, stop=self.stop)
            if lock is None:
                return ChainOutcome(
                    self.chain_id, "locked", -1, "another indexer writes this chain"
                )
            try:
                outcome = await self._locked(lock, tally)
            finally:
                await asyncio.to_thread(lock.release)
            if outcome is not None:
                return outcome
            log.warning(
                "chain %s: this indexer lost its writer lock (its database session ended); "
                "it stopped writing and stands by for the lock",
                self.chain_id,
            )
            await _sleep(self.stop, _AFTER_LOSS_S)

    async def _locked(self, lock: WriterLock, tally: _Tally) -> ChainOutcome | None:
        """Index while holding ``lock``; None once the lock is found lost."""
        indexer: ChainIndexer | None = None
        while not self.stop.is_set():
            failure: Exception | None = None
            try:
                expected = await self.genesis.expected()
            except CHAIN_ERRORS as exc:  # the store (or every endpoint) is down
                log.error("chain %s: cannot tell its genesis: %s", self.chain_id, describe(exc))
                await _sleep(self.stop, _RESTART_BACKOFF_S[-2])
                continue
            policy = _policy(self.spec, self.options)
            async with AsyncRpcClient(
                self.spec.rpc_urls,
                chain_id=self.chain_id,
                expected_genesis_hash=expected,
                policy=policy,
            ) as client:
                indexer = ChainIndexer(
                    self.spec,
                    self.store,
                    client,
                    options=self.options,
                    on_batch=tally,
                    metrics=self.metrics,
                )
                started = time.monotonic()
                try:
                    await indexer.run(once=self.once, stop=self.stop)
                    return tally.outcome(self.chain_id, "ok", indexer, client)
                except ChainPausedError as exc:
                    self._set_paused(paused=True)
                    return tally.outcome(self.chain_id, "paused", indexer, client, exc.reason)
                except Exception as exc:
                    tally.absorb(indexer, client)
                    failure = exc
            if not await asyncio.to_thread(lock.held):
                return None
            delay = self._backoff(indexer, time.monotonic() - started)
            if isinstance(failure, GenesisMismatchError):
                reason = await self.genesis.mismatch(failure)
                if reason is not None:
                    await self._pause_for_genesis(reason, delay)
                    if self.once:
                        return tally.outcome(self.chain_id, "paused", indexer, None, reason)
                    await _sleep(self.stop, delay)
                    continue
                delay = 0.0  # a restarted node: re-index now
            else:
                self.pause_reason = None  # it got past the genesis: a new pause is news
                self._log_failure(failure, delay)
                if self.once and self.failures > len(_RESTART_BACKOFF_S):
                    return tally.outcome(self.chain_id, "failed", indexer, None, describe(failure))
            await _sleep(self.stop, delay)
        return tally.outcome(self.chain_id, "ok", indexer, None)

    def _backoff(self, indexer: ChainIndexer, ran_s: float) -> float:
        """The delay before the next indexer: it grows with failures in a row, and starts
        over when this one moved the cursor on (a new fault, not the same one again) or ran
        ``_HEALTHY_S`` first (a quiet chain's cursor moves little, events or not)."""
        if indexer.cursor[0] > self.progress or ran_s >= _HEALTHY_S:
            self.failures = 0
        self.progress = max(self.progress, indexer.cursor[0])
        delay = _RESTART_BACKOFF_S[min(self.failures, len(_RESTART_BACKOFF_S) - 1)]
        self.failures += 1
        return delay

    def _log_failure(self, failure: Exception | None, delay: float) -> None:
        expected = isinstance(failure, CHAIN_ERRORS)
        log.error(
            "chain %s: indexer stopped: %s; restarting in %.1f s",
            self.chain_id,
            describe(failure) if failure is not None and expected else f"unexpected {failure!r}",
            delay,
            exc_info=failure if not expected else None,  # a bug, or an answer nothing checked
        )

    async def _pause_for_genesis(self, reason: str, delay: float) -> None:
        if reason != self.pause_reason:
            log.error("chain %s paused: %s; looking again in %.1f s", self.chain_id, reason, delay)
            self.pause_reason = reason
            await asyncio.to_thread(self._store_pause, reason)
        self._set_paused(paused=True)

    def _store_pause(self, reason: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                text("UPDATE chain SET paused_reason = :r WHERE chain_id = :c"),
                {"c": self.chain_id, "r": reason[:1000]},
            )

    def _set_paused(self, *, paused: bool) -> None:
        if self.metrics is not None:
            self.metrics.set_paused(self.chain_id, paused=paused)


class _Genesis:
    """The genesis hash a chain's endpoints must serve (module docstring)."""

    def __init__(self, store: Store, spec: ChainSpec) -> None:
        self.store = store
        self.spec = spec
        self.chain_id = int(spec.chain_id)
        self.configured = spec.genesis_hash.lower() if spec.genesis_hash else None
        self.adopted: str | None = None  # a restarted node's, every endpoint agreeing

    async def expected(self) -> str | None:
        """The configured genesis, else the adopted or stored one, else the one every
        answering endpoint agrees on (None: none answers; the client's first check sets
        it). Endpoints that disagree with no reference to judge them are left to the
        client: the first checked sets it, the others are benched."""
        if self.configured is not None:
            return self.configured
        if self.adopted is not None:
            return self.adopted
        stored = await asyncio.to_thread(self._stored)
        if stored is not None:
            return stored
        served = {h for h in (await _survey(self.spec)).values() if h is not None}
        if len(served) > 1:
            log.warning(
                "chain %s: its endpoints serve different genesis hashes (%s) and none is "
                "configured or stored: set genesis_hash in rtrm.toml to say which is the chain",
                self.chain_id,
                ", ".join(sorted(served)),
            )
        return served.pop() if len(served) == 1 else None

    async def mismatch(self, error: GenesisMismatchError) -> str | None:
        """No endpoint serves the expected genesis: the reason to pause, or None when every
        endpoint agrees on a new one and none is configured (a restarted node: adopted,
        the pipeline drops the old chain's data and re-indexes)."""
        served = await _survey(self.spec)
        listed = ", ".join(
            f"{hide_credentials(url)} serves {h or 'no answer'}" for url, h in served.items()
        )
        if self.configured is not None:
            return (
                f"no RPC endpoint serves the configured genesis_hash {self.configured} "
                f"({listed}); nothing indexed is dropped: fix rpc_urls (or genesis_hash) of "
                f"chain {self.chain_id} in rtrm.toml"
            )
        hashes = set(served.values())
        if len(hashes) == 1 and None not in hashes and error.expected not in hashes:
            self.adopted = hashes.pop()
            log.warning(
                "chain %s: every endpoint (%s) now serves genesis %s instead of %s: the node "
                "was restarted or replaced",
                self.chain_id,
                ", ".join(map(hide_credentials, served)),
                self.adopted,
                error.expected,
            )
            return None
        return (
            f"no RPC endpoint serves the chain's genesis {error.expected} and they do not all "
            f"agree on another ({listed}); nothing is dropped until every endpoint answers "
            f"with the same new genesis, or set genesis_hash of chain {self.chain_id} in "
            "rtrm.toml"
        )

    def _stored(self) -> str | None:
        with self.store.engine.connect() as conn:
            found = conn.execute(
                text("SELECT genesis_hash FROM chain WHERE chain_id = :c"), {"c": self.chain_id}
            ).scalar()
        return str(found).lower() if found else None


async def _survey(spec: ChainSpec) -> dict[str, str | None]:
    """Each endpoint's genesis hash (None: no answer, or another chain id)."""

    async def genesis_of(url: str) -> str | None:
        try:
            async with AsyncRpcClient(
                [url], chain_id=int(spec.chain_id), policy=_SURVEY_POLICY
            ) as client:
                return await client.genesis_hash()
        except (ChainError, OSError):
            return None

    hashes = await asyncio.gather(*(genesis_of(url) for url in spec.rpc_urls))
    return dict(zip(spec.rpc_urls, hashes, strict=True))


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


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
        await _sleep(stop, _LOCK_POLL_S)
        if stop.is_set():
            return None
