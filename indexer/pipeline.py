"""One chain's indexer: backfill, then follow the head; reorgs handled, exactly once.

A :class:`ChainIndexer` moves its chain's cursor forward one *range* at a time:

1. fetch it, canonical and linked by hash to the previous range (:mod:`indexer.fetch`:
   a broken link means a reorg below us); several ranges are fetched concurrently,
   each cut by the adaptive range controller (:mod:`indexer.ranges`);
2. decode (:mod:`indexer.decode`) and derive state (:mod:`indexer.state`);
3. write raw events, facts, versions, the block ledger, the cursor and the chain's
   counters in **one transaction** (:mod:`indexer.store`).

The three stages overlap through bounded queues: fetching ranges *k+2..*, decoding and
deriving range *k+1* (CPU, in a worker thread), and committing range *k* (the
database). When the writer falls behind (a backfill), the ranges waiting for it are
written together in one transaction: fewer commits, each still all-or-nothing for data,
ledger and cursor. A failed stage stops the others between ranges, never inside a
transaction. The garbage collector's automatic passes are paused while a sync runs
(:mod:`indexer.gcpolicy`).

A sync that expects to write more than ``bulk_events`` events, and more than the store
holds, drops the indexes on random keys and builds them when it ends
(:class:`indexer.writer.BulkLoad`); its commits run in a child process
(:mod:`indexer.writerproc`) while this one fetches and decodes.

Reorgs, finality and pauses are in :mod:`indexer.reorg`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from chains.endpoints import RpcPolicy
from chains.exceptions import ChainError
from chains.spec import ChainSpec
from chains.types import ContractKind
from indexer import answers, gcpolicy
from indexer.exceptions import IndexerError, MalformedAnswerError, MalformedLogError
from indexer.fetch import ChainClient, FetchedRange, RangeFetcher
from indexer.metrics import IndexerMetrics
from indexer.ranges import RangeConfig, RangeController
from indexer.reorg import Paused, Reorged, ReorgHandling, Restarted
from indexer.state import ChainState, ContractInfo
from indexer.store import Store, reset_chain
from indexer.writer import BulkLoad, Prepared, decode_batch, prepare_range, write_ranges
from indexer.writerproc import WriterProcess

__all__ = ["BatchReport", "ChainClient", "ChainIndexer", "IndexerOptions", "decode_batch"]

log = logging.getLogger(__name__)

_CONTRACT_KINDS = {
    ContractKind.OPTIONS_MARKET: "options",
    ContractKind.LENDING_POOL: "lending",
    ContractKind.PERPS_MARKET: "perps",
    ContractKind.PRICE_FEED: "price_feed",
    ContractKind.VOL_ORACLE: "vol_oracle",
    ContractKind.INSURANCE_FUND: "insurance_fund",
}
_QUOTE_TOKEN_CALL = "0x217a4b70"  # quoteToken()
_GROUP_EVENTS = 50_000  # at most this many events in one grouped write transaction


@dataclass(frozen=True, slots=True)
class IndexerOptions:
    """Tuning knobs; the defaults suit anvil and most hosted RPC providers."""

    poll_interval_s: float | None = None  # default: a quarter of the chain's block time
    max_span: int | None = None  # cap on the eth_getLogs block range (None: controller's)
    target_logs: int = 10_000  # logs per eth_getLogs answer and per range decoded/written
    rpc: RpcPolicy | None = None  # timeouts, retries, rate limit of the chain's client
    queue_depth: int = 3  # ranges fetched ahead of the decoder
    fetch_concurrency: int = 2  # eth_getLogs calls in flight at once
    write_ahead: int = 8  # ranges decoded ahead of the writer (written together if waiting)
    bulk_events: int | None = 200_000  # a sync expecting more defers indexes (None: never)
    writer_process: bool = True  # such a sync commits from a child process
    pause_recheck_s: float = 5.0  # how often a paused chain looks again (syncing node)


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What one written range did: for progress bars, logs and metrics."""

    chain_id: int
    first: int
    last: int
    events: int
    head: int
    finalized: int
    fetch_s: float
    write_s: float


class ChainIndexer(ReorgHandling):
    """Indexes one chain into ``store`` through ``client``."""

    def __init__(
        self,
        spec: ChainSpec,
        store: Store,
        client: ChainClient,
        *,
        options: IndexerOptions | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        metrics: IndexerMetrics | None = None,
    ) -> None:
        self.spec = spec
        self.metrics = metrics
        self.chain_id = int(spec.chain_id)
        self.store = store
        self.client = client
        self.options = options or IndexerOptions()
        self.on_batch = on_batch
        self.ranges = RangeController(self.chain_id, _range_config(self.options))
        self.addresses = [c.address for c in spec.contracts]
        self.start_block = min((c.deployed_block for c in spec.contracts), default=0)
        self.state: ChainState | None = None
        self.cursor = (self.start_block - 1, "")
        self.head = 0
        self.finalized = 0
        self.reorgs = 0
        self.reorgs_here = 0  # handled by this indexer object (self.reorgs: lifetime)
        self.paused: str | None = None
        self.genesis_hash = ""
        self.tip_replaced = False  # the last _head() found the cursor's block replaced
        self._errors_seen: dict[tuple[str, str], int] = {}  # client error counts exported
        self._abort = False  # a pipeline stage failed: the others stop between ranges
        self.bulk = BulkLoad(self.chain_id, store, self.options.bulk_events)
        self._writer: WriterProcess | None = None  # commits of a bulk backfill
        self.fetcher = RangeFetcher(
            self.chain_id,
            client,
            self.addresses,
            self.ranges,
            concurrency=self.options.fetch_concurrency,
            metrics=metrics,
        )

    # ------------------------------------------------------------ set-up

    async def prepare(self) -> None:
        """Check the node is the chain we indexed before, load cursor and state."""
        genesis_hash = await answers.reread(self._genesis_hash)
        self.genesis_hash = genesis_hash
        contracts = await self._contract_infos()
        await asyncio.to_thread(self._prepare_store, genesis_hash, contracts)
        await self.bulk.check_store()

    async def _genesis_hash(self) -> str:
        genesis = await self.client.call("eth_getBlockByNumber", ["0x0", False])
        genesis = answers.header(genesis, chain_id=self.chain_id, block=0)
        if genesis is None:
            raise MalformedAnswerError(
                f"chain {self.chain_id}: the node has no genesis block (eth_getBlockByNumber(0) "
                "answered null); check the chain's rpc_urls"
            )
        return str(genesis["hash"])

    async def _contract_infos(self) -> dict[str, ContractInfo]:
        infos: dict[str, ContractInfo] = {}
        markets = [
            c
            for c in self.spec.contracts
            if c.kind in (ContractKind.OPTIONS_MARKET, ContractKind.PERPS_MARKET)
        ]
        quotes = await self.client.batch(
            [
                ("eth_call", [{"to": c.address, "data": _QUOTE_TOKEN_CALL}, "latest"])
                for c in markets
            ]
        )
        quote_of = {c.address: _word_address(q) for c, q in zip(markets, quotes, strict=True)}
        for contract in self.spec.contracts:
            kind = _CONTRACT_KINDS.get(contract.kind, contract.kind.value)
            infos[contract.address] = ContractInfo(kind, quote_of.get(contract.address))
        return infos

    def _prepare_store(self, genesis_hash: str, contracts: Mapping[str, ContractInfo]) -> None:
        with self.store.transaction() as conn:
            row = conn.execute(
                text("SELECT genesis_hash FROM chain WHERE chain_id = :c"), {"c": self.chain_id}
            ).first()
            if row is not None and row[0] != genesis_hash:
                log.warning(
                    "chain %s: the node's genesis is %s, the store's %s: the node was "
                    "restarted or replaced; dropping the old chain's data and re-indexing",
                    self.chain_id,
                    genesis_hash,
                    row[0],
                )
                reset_chain(conn, self.chain_id)
                row = None
            if row is None:
                conn.execute(
                    text(
                        "INSERT INTO chain (chain_id, name, genesis_hash, finality_depth, "
                        "events, reorgs, head_block, finalized_block, updated_at) "
                        "VALUES (:c, :n, :g, :d, 0, 0, 0, 0, :t)"
                    ),
                    {
                        "c": self.chain_id,
                        "n": self.spec.name,
                        "g": genesis_hash,
                        "d": self.spec.finality_depth,
                        "t": time.time(),
                    },
                )
            else:
                conn.execute(
                    text("UPDATE chain SET paused_reason = NULL WHERE chain_id = :c"),
                    {"c": self.chain_id},
                )
            cursor = conn.execute(
                text("SELECT block_number, block_hash FROM cursor WHERE chain_id = :c"),
                {"c": self.chain_id},
            ).first()
            self.cursor = (int(cursor[0]), str(cursor[1])) if cursor else (self.start_block - 1, "")
            reorgs, finalized = conn.execute(
                text("SELECT reorgs, finalized_block FROM chain WHERE chain_id = :c"),
                {"c": self.chain_id},
            ).one()
            self.reorgs, self.finalized = int(reorgs), int(finalized)
            self.state = ChainState(self.chain_id, contracts)
            self.state.load(conn)

    # ------------------------------------------------------------ running

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> None:
        """Backfill to the head, then follow it (return after the backfill if ``once``)."""
        try:
            await self._run(once=once, stop=stop or asyncio.Event())
        finally:  # the errors that stopped it reach Prometheus before the runner restarts it
            self._export_rpc_errors()

    async def _run(self, *, once: bool, stop: asyncio.Event) -> None:
        await self.prepare()
        poll = self.options.poll_interval_s or max(0.05, self.spec.block_time_s / 4)
        while not stop.is_set():
            try:
                caught_up = await self.sync(stop)
            except Restarted:
                caught_up = False
                await self.prepare()  # drops the old chain's data, then re-indexes
            except Reorged:
                caught_up = False
                await self._guarded(self._reorg())
            except Paused:
                if self.metrics is not None:
                    self.metrics.set_paused(self.chain_id, paused=True)
                if once:
                    raise
                await _sleep(stop, self.options.pause_recheck_s)
                continue
            if caught_up and self.paused:
                await asyncio.to_thread(self._store_pause, None)
                if self.metrics is not None:
                    self.metrics.set_paused(self.chain_id, paused=False)
            if once and caught_up:
                return
            await _sleep(stop, poll)

    async def _head(self) -> tuple[int, int]:
        """Every head poll (following, or looking for a reorg's ancestor) updates the head,
        indexed and lag metrics, and exports the RPC errors seen so far, answered or not."""
        if self.metrics is None:
            return await super()._head()
        self.metrics.polling(self.chain_id)
        try:
            head, finalized = await super()._head()
        finally:
            self._export_rpc_errors()
        self.metrics.observe_head(self.chain_id, head, self.cursor[0])
        return head, finalized

    async def _guarded(self, step: Any) -> None:
        """Run a recovery step; a transient pause inside it is retried by the loop."""
        with contextlib.suppress(Paused, Restarted):  # the next sync handles them
            await step

    async def sync(self, stop: asyncio.Event) -> bool:
        """Index from the cursor to the current head. True when there was nothing to do:
        the cursor was at the head and its block still canonical, or the node is merely
        behind the cursor and the blocks it has match the ledger (``run(once=True)`` ends
        only then, so ranges that a reorg replaced while they were written are re-indexed
        before it returns)."""
        known_final = self.finalized
        head, finalized = await self._head()
        if head < self.cursor[0] or self.tip_missing:
            await self._head_went_back(head, known_final)
            if await self._behind(head):  # what the node has matches: wait for the rest
                return True
            raise Reorged
        if self.tip_replaced:
            raise Reorged
        if self.cursor[0] >= head:
            return True
        with gcpolicy.paused():
            await self._sync_to(head, finalized, stop)
        return False

    async def _sync_to(self, head: int, finalized: int, stop: asyncio.Event) -> None:
        fetched: asyncio.Queue[FetchedRange | None] = asyncio.Queue(self.options.queue_depth)
        prepared: asyncio.Queue[Prepared | None] = asyncio.Queue(self.options.write_ahead)
        self._abort = False
        self.bulk.start_sync()
        stages = (
            asyncio.create_task(self._prepare_all(fetched, prepared)),
            asyncio.create_task(self._commit_all(prepared)),
        )
        ranges = self.fetcher.stream(self.cursor, head, finalized, stop)
        try:
            async for batch in ranges:
                if self._abort:
                    break
                if not await self._offer(fetched, batch, stages):
                    break
        finally:
            await ranges.aclose()
            # Everything fetched is written before we return or raise, unless a stage failed:
            # then the stages stop between ranges (never in the middle of a transaction).
            await self._offer(fetched, None, stages)
            results = await asyncio.gather(*stages, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if self._writer is not None:
                writer, self._writer = self._writer, None
                await asyncio.to_thread(writer.close)
            await self.bulk.end_sync(failed=bool(failures))
            if failures:
                raise failures[0]

    async def _offer(
        self, queue: asyncio.Queue[Any], item: Any, stages: tuple[asyncio.Task[None], ...]
    ) -> bool:
        """Put ``item`` on ``queue`` unless a stage ends first; False if one did."""
        put = asyncio.ensure_future(queue.put(item))
        await asyncio.wait({put, *stages}, return_when=asyncio.FIRST_COMPLETED)
        if put.done():
            return True
        put.cancel()
        return False

    async def _prepare_all(
        self,
        fetched: asyncio.Queue[FetchedRange | None],
        prepared: asyncio.Queue[Prepared | None],
    ) -> None:
        """Stage 1: decode and derive (CPU) while stage 2 writes the previous range."""
        try:
            while (batch := await fetched.get()) is not None:
                if not self._abort:
                    await prepared.put(await self._prepared(batch))
        except BaseException:
            self._abort = True
            raise
        finally:
            await prepared.put(None)

    async def _commit_all(self, prepared: asyncio.Queue[Prepared | None]) -> None:
        """Stage 2: one transaction per range, or per group of the ranges that waited for
        the writer; in order; after a failure, drain and stop.

        With a writer process, the next group is handed over before the answer for the
        previous one is read: the child finds it waiting when it commits, instead of
        idling while this process collects and pickles it. A group is done (cursor,
        counters, reports) only once its answer says committed; after a failed group the
        child commits nothing more (:mod:`indexer.writerproc`)."""
        failure: BaseException | None = None
        done = False
        in_flight: tuple[list[Prepared], float] | None = None  # sent, not yet answered
        while not done:
            item = await prepared.get()
            if item is None:
                break
            group, events = [item], item.events
            while events < _GROUP_EVENTS and not prepared.empty():
                waiting = prepared.get_nowait()
                if waiting is None:
                    done = True
                    break
                group.append(waiting)
                events += waiting.events
            if failure is not None:
                continue
            try:
                started = time.perf_counter()
                await self.bulk.before_write(group)
                if self._wants_writer_process():
                    held = self.store.writers.held(self.chain_id)
                    self._writer = WriterProcess(self.store.database_url, self.chain_id, held)
                    log.info(
                        "chain %s: commits run in writer process %s until the backfill ends",
                        self.chain_id,
                        self._writer.pid,
                    )
                if self._writer is None:
                    await asyncio.to_thread(self._commit, group)
                    self._written(group, started)
                    continue
                await asyncio.to_thread(self._writer.send, [i.rows for i in group])
                if in_flight is not None:
                    await self._answered(*in_flight)
                in_flight = (group, started)
            except BaseException as exc:
                failure, self._abort = exc, True
        try:
            if in_flight is not None and failure is None:
                await self._answered(*in_flight)
        except BaseException as exc:
            failure, self._abort = exc, True
        if failure is not None:
            raise failure

    async def _answered(self, group: list[Prepared], started: float) -> None:
        """Wait for the writer process's answer for ``group`` (sent before any later one)."""
        assert self._writer is not None
        await asyncio.to_thread(self._writer.wait)
        self._written(group, started)

    def _written(self, group: list[Prepared], started: float) -> None:
        """``group`` is committed: move the cursor, count it, report each range."""
        batch = group[-1].batch
        self.cursor = (batch.last, batch.last_hash)
        self.bulk.written(group)
        write_s = (time.perf_counter() - started) / len(group)
        for written in group:
            self._report(written.batch, written.prepare_s + write_s)

    def _report(self, batch: FetchedRange, write_s: float) -> None:
        report = BatchReport(
            self.chain_id,
            batch.first,
            batch.last,
            len(batch.logs),
            batch.head,
            batch.finalized,
            batch.fetch_s,
            write_s,
        )
        log.info(
            "chain %s: blocks %s..%s, %s events (head %s)",
            self.chain_id,
            batch.first,
            batch.last,
            len(batch.logs),
            batch.head,
        )
        if self.metrics is not None:
            self._observe(report)
        if self.on_batch is not None:
            self.on_batch(report)

    def _observe(self, report: BatchReport) -> None:
        assert self.metrics is not None
        m, chain = self.metrics, self.chain_id
        m.events.labels(chain).inc(report.events)
        m.blocks.labels(chain).inc(report.last - report.first + 1)
        m.head.labels(chain).set(report.head)
        m.indexed.labels(chain).set(report.last)
        m.lag.labels(chain).set(max(0, report.head - report.last))
        m.range_span.labels(chain).set(self.ranges.span)
        m.batch_seconds.labels(chain).observe(report.write_s)
        m.set_paused(chain, paused=False)
        self._export_rpc_errors()

    def _export_rpc_errors(self) -> None:
        """Add the client's errors by kind since the last export to Prometheus."""
        stats = getattr(self.client, "stats", None)  # AsyncRpcClient: errors by kind
        if self.metrics is None or stats is None:
            return
        for endpoint in stats().endpoints:
            for kind, count in endpoint.errors.items():
                seen = self._errors_seen.get((endpoint.url, kind), 0)
                if count > seen:
                    self.metrics.rpc_errors.labels(self.chain_id, kind).inc(count - seen)
                    self._errors_seen[(endpoint.url, kind)] = count

    # ------------------------------------------------------------ writing

    async def _prepared(self, batch: FetchedRange) -> Prepared:
        """``batch`` decoded and derived. A log with a broken envelope (a missing field, a
        non-hex hash) is a broken answer, found before anything is derived: the range is
        read again, and must link as before (else the chain moved: :class:`Reorged`)."""
        for attempt in range(1, answers.READ_ATTEMPTS + 1):
            try:
                return await asyncio.to_thread(self._prepare, batch)
            except MalformedLogError as exc:
                if attempt == answers.READ_ATTEMPTS:
                    raise
                log.warning("%s; reading blocks %s..%s again", exc, batch.first, batch.last)
                await asyncio.sleep(answers.backoff_s(attempt))
            again = await self.fetcher.fetch(batch.first, batch.last, batch.head, batch.finalized)
            if (again.parent_hash, again.last_hash) != (batch.parent_hash, batch.last_hash):
                raise Reorged
            batch = again
        raise AssertionError("unreachable")  # pragma: no cover

    def _prepare(self, batch: FetchedRange) -> Prepared:
        assert self.state is not None
        return prepare_range(self.chain_id, self.state, batch)

    def _wants_writer_process(self) -> bool:
        """A bulk backfill commits from a child process (SQLite's work runs in the
        committing process; on PostgreSQL the driver's COPY encoding moves off this one)."""
        return self.bulk.active and self.options.writer_process and self._writer is None

    def _commit(self, group: list[Prepared]) -> None:
        """Write prepared ranges and move the stored cursor, in one transaction."""
        with self.store.transaction() as conn:
            write_ranges(conn, self.chain_id, [item.rows for item in group])


def _word_address(result: Any) -> str | None:
    from chains.spec import checksum_address  # noqa: PLC0415

    if not isinstance(result, str) or len(result) < 66:  # noqa: PLR2004
        return None
    return checksum_address("0x" + result[26:66], key="quoteToken()")


def _range_config(options: IndexerOptions) -> RangeConfig:
    """Start small (a dense chain may hold thousands of logs per block) and let the
    controller grow the span while answers stay under its log target."""
    if options.max_span is None:
        return RangeConfig(initial_span=16, target_logs=options.target_logs)
    return RangeConfig(
        initial_span=min(16, options.max_span),
        max_span=options.max_span,
        target_logs=options.target_logs,
    )


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


# Errors that stop one chain but never the process (the runner decides what to do).
CHAIN_ERRORS: tuple[type[BaseException], ...] = (ChainError, IndexerError, SQLAlchemyError, OSError)
