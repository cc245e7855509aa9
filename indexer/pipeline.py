"""One chain's indexer: backfill, then follow the head; reorgs handled, exactly once.

A :class:`ChainIndexer` moves its chain's cursor forward one *range* at a time:

1. fetch the canonical header of the range end ``to`` and of the previous range end
   (the cursor): if the cursor's hash is no longer canonical, a reorg happened below us;
2. ``eth_getLogs`` over the configured contracts for ``[from, to]``, the span chosen by
   the adaptive range controller (:mod:`indexer.ranges`);
3. fetch ``to``'s header again: if it changed, the chain reorganised while we read and
   the range is fetched again; logs must be canonical (``removed`` false, block hashes
   consistent with the header);
4. decode (:mod:`indexer.decode`), derive state (:mod:`indexer.state`) and write raw
   events, facts, versions, the block ledger, the cursor and the chain's counters in
   **one transaction** (:mod:`indexer.store`).

Three stages overlap through bounded queues: fetching range *k+2*, decoding and deriving
range *k+1* (CPU, in a worker thread), and committing range *k* (the database). A failed
stage stops the others between ranges, never inside a transaction.

Reorgs, finality and pauses are in :mod:`indexer.reorg`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from chains.artifacts import event_table
from chains.endpoints import RpcPolicy
from chains.exceptions import ChainError, RPCError
from chains.spec import ChainSpec
from chains.types import ContractKind
from indexer.decode import decode_logs
from indexer.exceptions import (
    DecodeError,
    IndexerError,
    RangeNotSplittableError,
)
from indexer.metrics import IndexerMetrics
from indexer.ranges import RangeConfig, RangeController
from indexer.reorg import Paused, Reorged, ReorgHandling, Restarted
from indexer.state import FACT_COLUMNS, VERSION_COLUMNS, ChainState, Changes, ContractInfo
from indexer.store import BulkWriter, Store, reset_chain

__all__ = ["BatchReport", "ChainClient", "ChainIndexer", "IndexerOptions", "decode_batch"]

log = logging.getLogger(__name__)

_RAW_COLUMNS = (
    "chain_id",
    "block_number",
    "block_hash",
    "tx_hash",
    "tx_index",
    "log_index",
    "address",
    "contract",
    "event",
    "topics",
    "data",
)
_LEDGER_COLUMNS = ("chain_id", "number", "hash", "parent_hash", "timestamp")
_CONTRACT_KINDS = {
    ContractKind.OPTIONS_MARKET: "options",
    ContractKind.LENDING_POOL: "lending",
    ContractKind.PERPS_MARKET: "perps",
    ContractKind.PRICE_FEED: "price_feed",
    ContractKind.VOL_ORACLE: "vol_oracle",
    ContractKind.INSURANCE_FUND: "insurance_fund",
}
_QUOTE_TOKEN_CALL = "0x217a4b70"  # quoteToken()
_MAX_FETCH_FAILURES = 8  # in a row on one range before the runner restarts the chain


def _backoff_s(failures: int) -> float:
    """Exponential back-off with full jitter, capped at 5 s."""
    return random.uniform(0, min(5.0, 0.1 * 2**failures))


class ChainClient(Protocol):
    """The JSON-RPC calls an indexer makes (``chains.aiorpc.AsyncRpcClient``)."""

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any: ...

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class IndexerOptions:
    """Tuning knobs; the defaults suit anvil and most hosted RPC providers."""

    poll_interval_s: float | None = None  # default: a quarter of the chain's block time
    max_span: int | None = None  # cap on the eth_getLogs block range (None: controller's)
    rpc: RpcPolicy | None = None  # timeouts, retries, rate limit of the chain's client
    queue_depth: int = 3  # ranges fetched ahead of the writer
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


@dataclass(slots=True)
class _Range:
    first: int
    last: int
    header: Mapping[str, Any]
    logs: list[dict[str, Any]]
    head: int
    finalized: int
    fetch_s: float
    raw: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(slots=True)
class _Prepared:
    """A range decoded and derived, ready for its transaction."""

    batch: _Range
    raw_rows: list[tuple[Any, ...]]
    changes: Changes
    ledger: list[tuple[int, int, str, str | None, int | None]]
    prepare_s: float


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
        self._topics = event_table()

    # ------------------------------------------------------------ set-up

    async def prepare(self) -> None:
        """Check the node is the chain we indexed before, load cursor and state."""
        genesis = await self.client.call("eth_getBlockByNumber", ["0x0", False])
        genesis_hash = str(genesis["hash"])
        self.genesis_hash = genesis_hash
        contracts = await self._contract_infos()
        await asyncio.to_thread(self._prepare_store, genesis_hash, contracts)

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
        stop = stop or asyncio.Event()
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
                if once:
                    raise
                await _sleep(stop, self.options.pause_recheck_s)
                continue
            if caught_up and self.paused:
                await asyncio.to_thread(self._store_pause, None)
            if once and caught_up:
                return
            await _sleep(stop, poll)

    async def _guarded(self, step: Any) -> None:
        """Run a recovery step; a transient pause inside it is retried by the loop."""
        with contextlib.suppress(Paused, Restarted):  # the next sync handles them
            await step

    async def sync(self, stop: asyncio.Event) -> bool:
        """Index from the cursor to the current head; True once caught up."""
        known_final = self.finalized
        head, finalized = await self._head()
        if head < self.cursor[0]:
            await self._head_went_back(head, known_final)
            raise Reorged
        if self.tip_replaced:
            raise Reorged
        fetched: asyncio.Queue[_Range | None] = asyncio.Queue(self.options.queue_depth)
        prepared: asyncio.Queue[_Prepared | None] = asyncio.Queue(2)
        self._abort = False
        stages = (
            asyncio.create_task(self._prepare_all(fetched, prepared)),
            asyncio.create_task(self._commit_all(prepared)),
        )
        try:
            tip = self.cursor
            while tip[0] < head and not stop.is_set() and not self._abort:
                batch = await self._fetch(tip, head, finalized)
                if not await self._offer(fetched, batch, stages):
                    break
                tip = (batch.last, str(batch.header["hash"]))
        finally:
            # Everything fetched is written before we return or raise, unless a stage failed:
            # then the stages stop between ranges (never in the middle of a transaction).
            await self._offer(fetched, None, stages)
            results = await asyncio.gather(*stages, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
        return self.cursor[0] >= head

    async def _head(self) -> tuple[int, int]:
        number, tip_hash = self.cursor
        latest, finalized, syncing, genesis, tip = await self.client.batch(
            [
                ("eth_getBlockByNumber", ["latest", False]),
                ("eth_getBlockByNumber", ["finalized", False]),
                ("eth_syncing", []),
                ("eth_getBlockByNumber", ["0x0", False]),
                ("eth_getBlockByNumber", [hex(max(number, 0)), False]),
            ]
        )
        if genesis is None or genesis["hash"] != self.genesis_hash:
            raise Restarted
        self.tip_replaced = bool(tip_hash) and (tip is None or tip["hash"] != tip_hash)
        if syncing:
            await self._pause(
                "the node is syncing (eth_syncing is not false); indexing resumes when it "
                "has caught up, or point rpc_urls at a synced node",
                permanent=False,
            )
        head = int(latest["number"], 16)
        if finalized:  # the node knows: trust its tag
            final = min(int(finalized["number"], 16), head)
        else:
            final = max(0, head - self.spec.finality_depth)
        self.head, self.finalized = head, final
        return head, final

    async def _fetch(self, tip: tuple[int, str], head: int, finalized: int) -> _Range:
        """Fetch the next range after ``tip``, verified canonical (see module doc)."""
        failures = 0
        while True:
            first, last = self.ranges.next_range(tip[0] + 1, head)
            started = time.perf_counter()
            calls: list[tuple[str, Sequence[Any]]] = [("eth_getBlockByNumber", [hex(last), False])]
            if tip[1]:
                calls.append(("eth_getBlockByNumber", [hex(tip[0]), False]))
            headers = await self.client.batch(calls)
            if tip[1] and (headers[1] is None or headers[1]["hash"] != tip[1]):
                raise Reorged
            try:
                logs = await self.client.call(
                    "eth_getLogs",
                    [{"fromBlock": hex(first), "toBlock": hex(last), "address": self.addresses}],
                )
            except RPCError as exc:
                if self.metrics is not None:
                    self.metrics.rpc_errors.labels(self.chain_id, type(exc).__name__).inc()
                log.info("chain %s: getLogs %s..%s failed (%s)", self.chain_id, first, last, exc)
                failures += 1
                try:
                    decision = self.ranges.on_error(exc, first, last)
                except RangeNotSplittableError:
                    if failures > _MAX_FETCH_FAILURES:
                        raise
                    await asyncio.sleep(_backoff_s(failures))
                    continue
                if decision.reason == "unrelated":  # not about the range: wait, same span
                    await asyncio.sleep(_backoff_s(failures))
                continue
            again = await self.client.call("eth_getBlockByNumber", [hex(last), False])
            header = headers[0]
            if header is None or again is None or again["hash"] != header["hash"]:
                log.info("chain %s: block %s changed while fetching; again", self.chain_id, last)
                continue
            if not _consistent(logs, first, last, header):
                log.info(
                    "chain %s: inconsistent logs for %s..%s; again", self.chain_id, first, last
                )
                continue
            elapsed = time.perf_counter() - started
            self.ranges.on_success(last - first + 1, len(logs), elapsed)
            return _Range(first, last, header, logs, head, finalized, elapsed)

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
        self, fetched: asyncio.Queue[_Range | None], prepared: asyncio.Queue[_Prepared | None]
    ) -> None:
        """Stage 1: decode and derive (CPU) while stage 2 writes the previous range."""
        try:
            while (batch := await fetched.get()) is not None:
                if not self._abort:
                    await prepared.put(await asyncio.to_thread(self._prepare, batch))
        except BaseException:
            self._abort = True
            raise
        finally:
            await prepared.put(None)

    async def _commit_all(self, prepared: asyncio.Queue[_Prepared | None]) -> None:
        """Stage 2: one transaction per range, in order; after a failure, drain and stop."""
        failure: BaseException | None = None
        while (item := await prepared.get()) is not None:
            if failure is not None:
                continue
            try:
                started = time.perf_counter()
                await asyncio.to_thread(self._commit, item)
            except BaseException as exc:
                failure, self._abort = exc, True
                continue
            self._report(item.batch, item.prepare_s + time.perf_counter() - started)
        if failure is not None:
            raise failure

    def _report(self, batch: _Range, write_s: float) -> None:
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
        m.paused.labels(chain).set(0)
        stats = getattr(self.client, "stats", None)  # AsyncRpcClient: errors by kind
        for endpoint in stats().endpoints if stats is not None else ():
            for kind, count in endpoint.errors.items():
                seen = self._errors_seen.get((endpoint.url, kind), 0)
                if count > seen:
                    m.rpc_errors.labels(chain, kind).inc(count - seen)
                    self._errors_seen[(endpoint.url, kind)] = count

    # ------------------------------------------------------------ writing

    def _prepare(self, batch: _Range) -> _Prepared:
        """Decode ``batch`` and derive its rows; advances the in-memory state (so a failed
        commit makes this indexer unusable: the runner starts a fresh one from the store)."""
        assert self.state is not None
        started = time.perf_counter()
        raw_logs = batch.logs
        changes = self.state.apply(decode_batch(self.chain_id, raw_logs))
        raw_rows = [self._raw_row(entry) for entry in raw_logs]
        blocks = {int(e["blockNumber"], 16): e["blockHash"] for e in raw_logs}
        blocks.pop(batch.last, None)
        header = batch.header
        ledger: list[tuple[int, int, str, str | None, int | None]] = [
            (self.chain_id, n, h, None, None) for n, h in sorted(blocks.items())
        ]
        ledger.append(
            (
                self.chain_id,
                batch.last,
                header["hash"],
                header["parentHash"],
                int(header["timestamp"], 16),
            )
        )
        return _Prepared(batch, raw_rows, changes, ledger, time.perf_counter() - started)

    def _commit(self, item: _Prepared) -> None:
        """Write one prepared range: data, ledger, cursor and counters in one transaction."""
        batch, changes = item.batch, item.changes
        with self.store.transaction() as conn:
            writer = BulkWriter(conn)
            writer.insert("raw_event", _RAW_COLUMNS, item.raw_rows)
            for table, rows in changes.facts.items():
                writer.insert(table, FACT_COLUMNS[table], rows)
            for table, closes in changes.closes.items():
                writer.close_versions(table, self.chain_id, closes)
            for table, inserts in changes.inserts.items():
                writer.insert(table, VERSION_COLUMNS[table], inserts)
            writer.insert("block", _LEDGER_COLUMNS, item.ledger)
            block_hash = str(batch.header["hash"])
            self._advance(conn, batch.last, block_hash, len(item.raw_rows), batch)
        self.cursor = (batch.last, block_hash)

    def _raw_row(self, entry: Mapping[str, Any]) -> tuple[Any, ...]:
        topics = entry["topics"]
        event = self._topics.get(topics[0]) if topics else None
        return (
            self.chain_id,
            int(entry["blockNumber"], 16),
            entry["blockHash"],
            entry["transactionHash"],
            int(entry["transactionIndex"], 16),
            int(entry["logIndex"], 16),
            entry["address"],
            event.contract if event else "",
            event.name if event else "",
            ",".join(topics),
            entry["data"],
        )

    def _advance(
        self, conn: Connection, block: int, block_hash: str, events: int, batch: _Range
    ) -> None:
        params = {"c": self.chain_id, "b": block, "h": block_hash}
        updated = conn.execute(
            text("UPDATE cursor SET block_number = :b, block_hash = :h WHERE chain_id = :c"),
            params,
        )
        if not updated.rowcount:
            conn.execute(
                text("INSERT INTO cursor (chain_id, block_number, block_hash) VALUES (:c, :b, :h)"),
                params,
            )
        conn.execute(
            text(
                "UPDATE chain SET events = events + :e, head_block = :head, "
                "finalized_block = :fin, updated_at = :t WHERE chain_id = :c"
            ),
            {
                "c": self.chain_id,
                "e": events,
                "head": batch.head,
                "fin": batch.finalized,
                "t": time.time(),
            },
        )


def decode_batch(chain_id: int, raw_logs: list[dict[str, Any]]) -> list[Any]:
    """Decode ``raw_logs``; a malformed log (data that does not fit its event's ABI) is
    logged and left out of the derived state — it is still stored raw — instead of
    stopping the chain on every retry."""
    try:
        return decode_logs(chain_id, raw_logs)
    except DecodeError:
        decoded: list[Any] = []
        for entry in raw_logs:
            try:
                decoded += decode_logs(chain_id, [entry])
            except DecodeError as exc:
                log.warning(
                    "chain %s: %s; stored raw, left out of the derived state", chain_id, exc
                )
        return decoded


def _consistent(
    logs: list[dict[str, Any]], first: int, last: int, header: Mapping[str, Any]
) -> bool:
    last_hash = header["hash"]
    for entry in logs:
        if entry.get("removed"):
            return False
        number = int(entry["blockNumber"], 16)
        if not first <= number <= last:
            return False
        if number == last and entry["blockHash"] != last_hash:
            return False
    return True


def _word_address(result: Any) -> str | None:
    from chains.spec import checksum_address  # noqa: PLC0415

    if not isinstance(result, str) or len(result) < 66:  # noqa: PLR2004
        return None
    return checksum_address("0x" + result[26:66], key="quoteToken()")


def _range_config(options: IndexerOptions) -> RangeConfig:
    """Start small (a dense chain may hold thousands of logs per block) and let the
    controller grow the span while answers stay under its log target."""
    if options.max_span is None:
        return RangeConfig(initial_span=16)
    return RangeConfig(initial_span=min(16, options.max_span), max_span=options.max_span)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


# Errors that stop one chain but never the process (the runner decides what to do).
CHAIN_ERRORS: tuple[type[BaseException], ...] = (ChainError, IndexerError, SQLAlchemyError, OSError)
