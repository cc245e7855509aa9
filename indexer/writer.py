"""Ranges into rows, rows into the store: the pipeline's decode and write stages.

:func:`prepare_range` decodes a fetched range (:mod:`indexer.decode`), derives its state
changes (:mod:`indexer.state`) and builds its raw-event and ledger rows: CPU only, no
database. :func:`write_ranges` writes prepared ranges, consecutive and in order, with the
cursor and the chain's counters in **one transaction** (:class:`indexer.store.BulkWriter`).

:class:`BulkLoad` decides when a sync is large enough to write without the indexes on
random keys (expected events: events per block so far times the blocks left, above
``bulk_events`` and above the events the store already holds, since building an index
again reads the whole table) and builds them when the sync ends
(:meth:`indexer.store.Store.defer_indexes`), as bulk loaders do, unless other processes
write the store (:mod:`indexer.deferral`); an indexer that starts on a store where they
are missing (an interrupted backfill) builds them after its first sync. ``bulk_events=0``
defers on every sync (tests).
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from indexer import native
from indexer.abiwords import QUANTITIES, MalformedError
from indexer.copyrows import row_struct
from indexer.decode import decode_logs, default_decoder
from indexer.exceptions import DecodeError
from indexer.fetch import FetchedRange
from indexer.state import FACT_COLUMNS, VERSION_COLUMNS, ChainState, Changes
from indexer.store import BulkWriter, Store, move_cursor

__all__ = [
    "RAW_COLUMNS",
    "RAW_KINDS",
    "BulkLoad",
    "Prepared",
    "RangeRows",
    "decode_batch",
    "prepare_range",
    "write_ranges",
]

log = logging.getLogger("indexer.pipeline")

RAW_COLUMNS = (
    "chain_id",
    "block_number",
    "log_index",
    "tx_hash",
    "tx_index",
    "address",
    "topics",
    "data",
)
RAW_KINDS = "qqibibbb"  # their binary COPY kinds (indexer.copyrows)
_HASH_BYTES = 32
_ADDRESS_BYTES = 20
# A block or transaction hash as nodes write it (JSON-RPC's hash32): a block hash is kept as
# text and compared with headers' hashes, where upper case would be another hash.
_is_hash = re.compile(r"0x[0-9a-f]{64}").fullmatch
_UNSET: Any = object()  # no previous log
_LEDGER_COLUMNS = ("chain_id", "number", "hash", "parent_hash", "timestamp")

LedgerRow = tuple[int, int, str, str | None, int | None]


@dataclass(slots=True)
class RangeRows:
    """What one range's transaction writes: plain rows, picklable (a writer process may
    write them, :mod:`indexer.writerproc`)."""

    last: int
    block_hash: str  # of ``last``: the cursor's hash once written
    head: int
    finalized: int
    events: int
    raw: bytes  # the raw-event rows, RAW_COLUMNS packed as binary COPY tuples of RAW_KINDS
    changes: Changes
    ledger: list[LedgerRow]
    # The cursor this range starts from (block ``first - 1`` and its hash; None: nothing
    # before it): the write moves the cursor only from there. None: unchecked (tests).
    previous: tuple[int, str | None] | None = None


@dataclass(slots=True)
class Prepared:
    """A range decoded and derived, ready for its transaction."""

    batch: FetchedRange
    rows: RangeRows
    prepare_s: float

    @property
    def events(self) -> int:
        return self.rows.events


def prepare_range(chain_id: int, state: ChainState, batch: FetchedRange) -> Prepared:
    """Decode ``batch`` and derive its rows; advances ``state`` (so a failed write makes
    the indexer unusable: the runner starts a fresh one from the store)."""
    started = time.perf_counter()
    raw_logs = batch.logs
    raw, blocks = _raw_rows(chain_id, raw_logs)  # first: a log it cannot store stops all
    changes = state.apply(decode_batch(chain_id, raw_logs))
    end: list[LedgerRow] = []
    if (header := batch.header) is not None:  # the range's end block: parent hash and time
        blocks.pop(batch.last, None)
        timestamp = int(header["timestamp"], 16)
        end = [(chain_id, batch.last, header["hash"], header["parentHash"], timestamp)]
    ledger = [(chain_id, n, h, None, None) for n, h in sorted(blocks.items())] + end
    rows = RangeRows(
        batch.last,
        batch.last_hash,
        batch.head,
        batch.finalized,
        len(raw_logs),
        raw,
        changes,
        ledger,
        (batch.first - 1, batch.parent_hash),
    )
    return Prepared(batch, rows, time.perf_counter() - started)


def write_ranges(conn: Connection, chain_id: int, group: list[RangeRows]) -> None:
    """Move the cursor to the end of ``group`` (consecutive ranges, in order) — only from
    where the group starts, else :class:`WriterLostError` —, write its rows and the chain's
    counters; the caller holds the transaction (and rolls it back on an error).

    On PostgreSQL the commit does not wait for the WAL flush (``synchronous_commit`` off
    for this transaction only): a database crash may forget the last ranges written, but
    never part of one, and the cursor goes back with them, so they are indexed again.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
    # First: a writer that lost the chain fails here, before any row (on PostgreSQL the
    # cursor's row lock also makes a racing writer wait for this transaction, then fail).
    move_cursor(conn, chain_id, (group[-1].last, group[-1].block_hash), group[0].previous)
    writer = BulkWriter(conn)
    writer.insert_packed("raw_event", RAW_COLUMNS, RAW_KINDS, [item.raw for item in group])
    for item in group:
        changes = item.changes
        for table, rows in changes.facts.items():
            writer.insert(table, FACT_COLUMNS[table], rows)
        for table, closes in changes.closes.items():
            writer.close_versions(table, chain_id, closes)
        for table, inserts in changes.inserts.items():
            writer.insert(table, VERSION_COLUMNS[table], inserts)
        writer.insert("block", _LEDGER_COLUMNS, item.ledger)
    end = group[-1]
    events = sum(item.events for item in group)
    conn.execute(
        text(
            "UPDATE chain SET events = events + :e, head_block = :head, "
            "finalized_block = :fin, updated_at = :t WHERE chain_id = :c"
        ),
        {"c": chain_id, "e": events, "head": end.head, "fin": end.finalized, "t": time.time()},
    )


def _raw_rows(chain_id: int, logs: list[dict[str, Any]]) -> tuple[bytes, dict[int, str]]:
    """The raw-event rows of ``logs`` (in block order), packed as binary COPY tuples of
    RAW_KINDS (:mod:`indexer.copyrows`), and the hash of each block they are in; one
    pass, each block number and transaction hash converted once.

    A log whose envelope is not what JSON-RPC promises (a quantity, hash or data that is
    not 0x-hex of the right length, a block or transaction hash that is not in lower case,
    a number too large for its column) raises :class:`MalformedLogError` saying which field,
    before anything is derived: the pipeline reads the range again. Every log's block hash
    is checked, not only each block's first: the ledger keeps the first, and the last log's
    becomes the cursor's hash when a range ends on it (``FetchedRange.last_hash``).

    The C twin (:mod:`indexer.native`) does the batch when every log is well formed; it
    answers ``None`` otherwise, and this loop does it, error included.
    """
    if native.raw_rows is not None and type(logs) is list:
        done = native.raw_rows(chain_id, logs)
        if done is not None:
            return done
    packed: list[bytes] = []
    blocks: dict[int, str] = {}
    append, fromhex = packed.append, bytes.fromhex
    last_block: Any = _UNSET
    last_hash: Any = _UNSET
    last_tx: Any = _UNSET
    number, tx_hash = 0, b""
    entry: dict[str, Any] = {}
    try:
        for entry in logs:
            block_hex, block_hash = entry["blockNumber"], entry["blockHash"]
            if block_hash != last_hash:
                if not _is_hash(block_hash):  # a TypeError if not a str
                    raise MalformedError("blockHash")
                last_hash = block_hash
            if block_hex != last_block:
                number, last_block = QUANTITIES[block_hex], block_hex
                blocks[number] = block_hash
            if entry["transactionHash"] != last_tx:
                last_tx = entry["transactionHash"]
                if not _is_hash(last_tx):
                    raise MalformedError("transactionHash")
                tx_hash = fromhex(last_tx[2:])
            topics = entry["topics"]
            topic_bytes = fromhex("".join([t[2:] for t in topics]))
            address, data = fromhex(entry["address"][2:]), fromhex(entry["data"][2:])
            # fromhex skips white space, and a missing 0x loses two digits: the sizes tell
            if (
                len(tx_hash) != _HASH_BYTES
                or len(address) != _ADDRESS_BYTES
                or len(topic_bytes) != _HASH_BYTES * len(topics)
                or len(data) * 2 + 2 != len(entry["data"])
            ):
                raise ValueError("not 0x-hex of the expected size")
            log_index = QUANTITIES[entry["logIndex"]]
            tx_index = QUANTITIES[entry["transactionIndex"]]
            sizes = (_HASH_BYTES, _ADDRESS_BYTES, len(topic_bytes), len(data))
            append(  # the row (RAW_COLUMNS): each value after its length
                row_struct(RAW_KINDS, sizes).pack(
                    *(len(RAW_KINDS), 8, chain_id, 8, number, 4, log_index, 32, tx_hash),
                    *(4, tx_index, 20, address, len(topic_bytes), topic_bytes, len(data), data),
                )
            )
    except (KeyError, TypeError, ValueError, MalformedError, struct.error) as exc:
        raise default_decoder().diagnose(chain_id, entry, exc, envelope=True) from None
    return b"".join(packed), blocks


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


class BulkLoad:
    """Whether the current sync runs without the deferrable indexes (module docstring)."""

    def __init__(self, chain_id: int, store: Store, limit: int | None) -> None:
        self.chain_id = chain_id
        self.store = store
        self.limit = limit
        self.active = False  # this sync runs without the deferrable indexes
        self.declined = False  # this sync keeps them (other processes write the store)
        self.missing = False  # found missing at start: build them after the next sync
        self.stored = 0  # events in the store at start (every chain's: the indexes are shared)
        self._written = (0, 0)  # events and blocks written by the current sync

    async def check_store(self) -> None:
        """At start: are indexes missing (an interrupted backfill)?"""
        self.missing = bool(await asyncio.to_thread(self.store.missing_indexes))
        self.stored = await asyncio.to_thread(self.store.stored_events)

    def start_sync(self) -> None:
        self._written = (0, 0)
        self.declined = False

    def written(self, group: list[Prepared]) -> None:
        self._written = self._with(group)

    def _with(self, group: list[Prepared]) -> tuple[int, int]:
        """Events and blocks written by this sync once ``group`` is."""
        events, blocks = self._written
        for item in group:
            events += item.events
            blocks += item.batch.last - item.batch.first + 1
        return events, blocks

    async def before_write(self, group: list[Prepared]) -> None:
        """Defer the indexes if this sync looks large."""
        if self.active or self.declined or self.limit is None:
            return
        events, blocks = self._with(group)
        # Blocks to go at the sync's density so far, or at this group's if higher: a sync
        # that starts over empty blocks (before a contract's busy years) is not small.
        done_events, done_blocks = self._written
        group_density = (events - done_events) / max(1, blocks - done_blocks)
        per_block = max(events / max(1, blocks), group_density)
        last = group[-1].batch
        expected = events + per_block * max(0, last.head - last.last)
        if expected <= self.limit or (self.limit and expected <= self.stored):
            return  # small, or a catch-up on a large store: rebuilding would cost more
        started = time.perf_counter()
        refused = await asyncio.to_thread(self.store.defer_indexes)
        if refused is not None:
            self.declined = True
            log.info(
                "chain %s: about %s events to write; indexes kept: %s",
                self.chain_id,
                f"{expected:,.0f}",
                refused,
            )
            return
        self.active = True
        log.info(
            "chain %s: about %s events to write: indexes on random keys deferred to the "
            "end of the backfill (%.1f s)",
            self.chain_id,
            f"{expected:,.0f}",
            time.perf_counter() - started,
        )

    async def end_sync(self, *, failed: bool) -> None:
        """Build the deferred (or found missing) indexes once the sync is over; after a
        failure, a failure to build is logged (the next sync builds them)."""
        if not (self.active or self.missing):
            return
        started = time.perf_counter()
        try:
            if self.active:
                built = await asyncio.to_thread(self.store.end_deferral)
            else:
                built = await asyncio.to_thread(self.store.build_indexes)
        except Exception:
            if not failed:
                raise
            log.exception("chain %s: building the deferred indexes failed", self.chain_id)
            return
        finally:
            self.active = False
        self.missing = False
        if built:
            seconds = time.perf_counter() - started
            log.info("chain %s: built %s in %.1f s", self.chain_id, ", ".join(built), seconds)
