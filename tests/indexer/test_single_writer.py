"""One writer per chain, even when the writer's lock is lost behind its back.

The PostgreSQL advisory lock lives in one session; a killed session (``pg_terminate_backend``,
a database restart, an idle timeout) frees it while its indexer runs on. The indexer that
was standing by takes over; the one that lost it finds out at its next write (rolled back)
and stands by in turn. On both databases the cursor moves only from where its writer left
it, so a second writer can never commit over the first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import eth_price_round, index_once, seed_chain_row, store_fingerprint
from sqlalchemy import text

from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from indexer.exceptions import WriterLostError
from indexer.pipeline import BatchReport, IndexerOptions
from indexer.runner import run_indexers
from indexer.state import Changes
from indexer.status import watermark
from indexer.store import open_store
from indexer.writer import LedgerRow, RangeRows, write_ranges
from indexer.writerlock import namespace

CHAIN = 913377
HASH = "0x" + "ab" * 32


def _rows(last: int, block_hash: str, previous: tuple[int, str | None]) -> RangeRows:
    ledger: list[LedgerRow] = [(CHAIN, last, block_hash, None, None)]
    return RangeRows(last, block_hash, last, 0, 0, b"", Changes(), ledger, previous)


def test_the_cursor_moves_only_from_where_its_writer_left_it(store_url: str) -> None:
    seed_chain_row(store_url, CHAIN, HASH)
    store = open_store(store_url, migrate=False)
    try:
        first, second = "0x" + "01" * 32, "0x" + "02" * 32
        with store.transaction() as conn:
            write_ranges(conn, CHAIN, [_rows(5, first, (-1, None))])  # no cursor yet
        with store.transaction() as conn:
            write_ranges(conn, CHAIN, [_rows(9, second, (5, first))])
        # A second writer that still believes the cursor is at 5 commits nothing.
        with (
            pytest.raises(WriterLostError, match="cursor moved under this writer"),
            store.transaction() as conn,
        ):
            write_ranges(conn, CHAIN, [_rows(9, "0x" + "03" * 32, (5, first))])
        with store.engine.connect() as conn:
            cursor = conn.execute(text("SELECT block_number, block_hash FROM cursor")).one()
            ledger = conn.execute(text("SELECT number, hash FROM block ORDER BY number")).all()
        assert tuple(cursor) == (9, second)
        assert [tuple(r) for r in ledger] == [(5, first), (9, second)]
    finally:
        store.dispose()


def test_a_write_after_the_lock_session_died_is_rolled_back(postgres_url: str) -> None:
    seed_chain_row(postgres_url, CHAIN, HASH)
    store, admin = open_store(postgres_url, migrate=False), open_store(postgres_url, migrate=False)
    try:
        lock = store.acquire_writer(CHAIN)
        with store.transaction() as conn:
            write_ranges(conn, CHAIN, [_rows(5, HASH, (-1, None))])
        assert lock.held()
        with admin.engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": lock.pid})
        assert not lock.held()
        with (
            pytest.raises(WriterLostError, match="lost its writer lock"),
            store.transaction() as conn,
        ):
            write_ranges(conn, CHAIN, [_rows(6, "0x" + "06" * 32, (5, HASH))])
        lock.release()
        with admin.engine.connect() as conn:
            assert conn.execute(text("SELECT block_number FROM cursor")).scalar() == 5
        again = store.acquire_writer(CHAIN)  # free again, and checked again
        with store.transaction() as conn:
            write_ranges(conn, CHAIN, [_rows(6, "0x" + "06" * 32, (5, HASH))])
        again.release()
    finally:
        store.dispose()
        admin.dispose()


# ---------------------------------------------------------------- two real indexers


class _Indexer:
    """``rtrm index`` (following) on its own engine, event loop and thread."""

    def __init__(self, config_path: str, url: str) -> None:
        registry = load_registry(Path(config_path))
        self.store = open_store(url)
        self.reports: list[tuple[float, BatchReport]] = []
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        options = IndexerOptions(poll_interval_s=0.1)
        job = run_indexers(
            self.store,
            registry.chains,
            stop=self.stop,
            on_batch=lambda r: self.reports.append((time.monotonic(), r)),
            options=options,
        )
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(job,))
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)
        self.loop.close()
        self.store.dispose()


@contextmanager
def _indexer(config_path: str, url: str) -> Iterator[_Indexer]:
    indexer = _Indexer(config_path, url)
    try:
        yield indexer
    finally:
        indexer.close()


def _lock_holder(url: str, chain_id: int) -> int | None:
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                    "classid = CAST(:ns AS bigint) & 4294967295 AND objid = CAST(:c AS bigint) "
                    "& 4294967295 AND objsubid = 2"
                ),
                {"ns": namespace(conn), "c": chain_id},
            ).scalar()
    finally:
        store.dispose()
    return None if found is None else int(found)


def _wait(what: str, predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _indexed(url: str, chain_id: int) -> int:
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return watermark(conn).get(chain_id, -1)
    finally:
        store.dispose()


@pytest.mark.chain
def test_killing_the_writers_lock_session_hands_over_to_the_standby(
    small_devnet: Any, postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writes, B stands by; A's lock session is killed: B takes over, A stops writing and
    stands by, no write fails on a duplicate, and the store equals a fresh index."""
    caplog.set_level(logging.WARNING, logger="indexer")
    chain_id = small_devnet.nodes[0].chain_id
    config = small_devnet.config_path
    with RpcClient(small_devnet.nodes[0].rpc_url) as client:
        head = hex_to_int(client.call("eth_blockNumber"))
    with _indexer(config, postgres_url) as a:
        _wait("A never caught up", lambda: _indexed(postgres_url, chain_id) >= head)
        holder = _lock_holder(postgres_url, chain_id)
        assert holder is not None
        with _indexer(config, postgres_url) as b:
            _wait("B never stood by", lambda: "standing by" in caplog.text, 20)
            killed_at = time.monotonic()
            store = open_store(postgres_url, migrate=False)
            with store.engine.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": holder})
            store.dispose()
            last = 0
            for price in range(5):
                last = eth_price_round(small_devnet, 2_000_00000000 + price)
                time.sleep(0.4)
            _wait("the rounds were never indexed", lambda: _indexed(postgres_url, chain_id) >= last)
            new_holder = _lock_holder(postgres_url, chain_id)
            assert new_holder not in (None, holder)
            _wait("A never noticed", lambda: "lost its writer lock" in caplog.text, 20)
            time.sleep(1.0)
            written_by_a = [r for t, r in a.reports if t > killed_at]
            written_by_b = [r for t, r in b.reports if t > killed_at]
    assert written_by_b, "the standby never wrote"
    assert written_by_a == []  # its lock's session was gone: nothing it wrote committed
    assert "duplicate key" not in caplog.text
    assert "UniqueViolation" not in caplog.text
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    index_once(config, fresh)
    assert store_fingerprint(postgres_url, chain_id) == store_fingerprint(fresh, chain_id)
