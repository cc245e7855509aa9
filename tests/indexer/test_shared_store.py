"""Several indexer processes on one PostgreSQL store stay out of each other's way.

One ``rtrm index --chain`` process per chain may write one store. A backfill drops the
shared indexes only when no other process writes the store; a build while others write
runs concurrently, so their inserts never wait for it; one process builds at a time; an
index an interrupted concurrent build left invalid is built again. Writer locks belong to
a store (its schema), not to the whole database.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from indexer.exceptions import StoreError
from indexer.fetch import FetchedRange
from indexer.models import DEFERRABLE_INDEXES
from indexer.schema import schema_differences
from indexer.state import Changes
from indexer.store import Store, open_store
from indexer.writer import BulkLoad, Prepared, RangeRows
from indexer.writerlock import namespace

ALL = sorted(DEFERRABLE_INDEXES)


@contextmanager
def _stores(url: str) -> Iterator[tuple[Store, Store]]:
    """Two processes' stores on one database (each its own engine and sessions)."""
    first, second = open_store(url), open_store(url, migrate=False)
    try:
        yield first, second
    finally:
        first.dispose()
        second.dispose()


def _raw_events(store: Store, count: int, *, chain_id: int = 1, first: int = 0) -> None:
    """``count`` raw events of ``chain_id``, one per block from ``first``, made in SQL."""
    with store.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO raw_event (chain_id, block_number, log_index, tx_hash, tx_index, "
                "address, topics, data) SELECT :chain, n, 0, sha256(int8send(n)), 0, "
                "'\\x00'::bytea, '\\x00'::bytea, '\\x00'::bytea "
                "FROM generate_series(CAST(:first AS bigint), :last) AS n"
            ),
            {"chain": chain_id, "first": first, "last": first + count - 1},
        )


def test_writer_locks_belong_to_a_store_not_the_database(
    postgres_url: str, other_postgres_url: str
) -> None:
    one, other = open_store(postgres_url), open_store(other_postgres_url)
    try:
        with one.engine.connect() as a, other.engine.connect() as b:
            assert namespace(a) != namespace(b)
        locks = [one.acquire_writer(42161), other.acquire_writer(42161)]  # both free
        for lock in locks:
            assert lock.held()
            lock.release()
    finally:
        one.dispose()
        other.dispose()


def test_a_backfill_keeps_the_indexes_while_another_process_writes(postgres_url: str) -> None:
    with _stores(postgres_url) as (ours, theirs):
        mine = ours.acquire_writer(1)
        other = theirs.acquire_writer(10)
        refused = ours.defer_indexes()
        assert refused is not None
        assert "1 other indexer process(es)" in refused
        assert ours.missing_indexes() == []
        assert ours.end_deferral() == []  # nothing was deferred, nothing to build

        other.release()  # alone now: the backfill may drop them
        assert ours.defer_indexes() is None
        assert sorted(ours.missing_indexes()) == ALL
        other = theirs.acquire_writer(10)  # another process starts mid-backfill
        assert theirs.defer_indexes() is not None  # ours writes: it keeps what is there
        assert sorted(theirs.build_indexes()) == ALL  # finds them missing: builds them
        assert ours.end_deferral() == []  # the other process built them
        other.release()
        assert schema_differences(ours) == []
        mine.release()


def test_the_backfill_logs_why_it_keeps_the_indexes(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with _stores(postgres_url) as (ours, theirs):
        other = theirs.acquire_writer(10)
        bulk = BulkLoad(1, ours, 0)  # defer on every sync
        batch = FetchedRange(1, 5, None, None, [], 1_000, 0, 0.0)
        group = [Prepared(batch, RangeRows(5, "0x", 1_000, 0, 10_000, b"", Changes(), []), 0.0)]
        bulk.start_sync()
        with caplog.at_level("INFO"):
            asyncio.run(bulk.before_write(group))
            asyncio.run(bulk.before_write(group))  # decided once per sync
        assert not bulk.active
        assert bulk.declined
        kept = [r.getMessage() for r in caplog.records if "indexes kept" in r.getMessage()]
        assert kept == [
            (
                "chain 1: about 2,000,000 events to write; indexes kept: 1 other indexer "
                "process(es) write this store, and dropping the shared indexes would stall them"
            )
        ]
        asyncio.run(bulk.end_sync(failed=False))
        assert ours.missing_indexes() == []
        other.release()


def test_a_build_while_others_write_lets_their_inserts_go_on(postgres_url: str) -> None:
    with _stores(postgres_url) as (ours, theirs):
        assert ours.defer_indexes() is None  # alone: dropped
        _raw_events(ours, 600_000)
        other = theirs.acquire_writer(10)  # another process starts writing meanwhile
        built: list[str] = []
        builder = threading.Thread(target=lambda: built.extend(ours.end_deferral()))
        inserts_during_build = 0
        block = 0
        builder.start()
        try:
            while builder.is_alive():
                with theirs.transaction() as conn:
                    # A plain CREATE INDEX would hold this insert until it ends.
                    conn.execute(text("SET LOCAL lock_timeout = '250ms'"))
                    conn.execute(
                        text(
                            "INSERT INTO raw_event (chain_id, block_number, log_index, "
                            "tx_hash, tx_index, address, topics, data) VALUES (10, :b, 0, "
                            "sha256(int8send(:b)), 0, '\\x00', '\\x00', '\\x00')"
                        ),
                        {"b": block},
                    )
                block += 1
                inserts_during_build += builder.is_alive()
        finally:
            builder.join()
        assert sorted(built) == ALL
        assert inserts_during_build > 0
        assert ours.missing_indexes() == []
        assert schema_differences(ours) == []
        other.release()


def test_a_plain_build_would_have_held_them(postgres_url: str) -> None:
    """The other side of the test above: without the concurrent build (nobody else holds
    a writer lock when the build starts) an insert waits, so that test tells the two
    apart."""
    with _stores(postgres_url) as (ours, theirs):
        assert ours.defer_indexes() is None
        _raw_events(ours, 600_000)
        builder = threading.Thread(target=ours.end_deferral)
        builder.start()
        timed_out = False
        try:
            while builder.is_alive() and not timed_out:
                try:
                    with theirs.transaction() as conn:
                        conn.execute(text("SET LOCAL lock_timeout = '50ms'"))
                        conn.execute(text("LOCK TABLE raw_event IN ROW EXCLUSIVE MODE"))
                except OperationalError as exc:
                    timed_out = "lock timeout" in str(exc.orig)
        finally:
            builder.join()
        assert timed_out


def test_one_process_builds_at_a_time(postgres_url: str) -> None:
    with _stores(postgres_url) as (ours, theirs):
        assert ours.defer_indexes() is None
        ours.end_deferral()  # unbalance: nothing deferred by this process any more
        with ours.transaction() as conn:  # dropped by a backfill that was killed
            for name in DEFERRABLE_INDEXES:
                conn.execute(text(f"DROP INDEX {name}"))
        with theirs.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as held:
            key = {"key": namespace(held)}
            held.execute(text("SELECT pg_advisory_lock(:key)"), key)  # another build runs
            assert ours.defer_indexes() == "another indexer is building them"
            built: list[str] = []
            builder = threading.Thread(target=lambda: built.extend(ours.build_indexes()))
            builder.start()
            time.sleep(1.0)
            assert builder.is_alive()
            assert built == []
            held.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            builder.join(30)
        assert sorted(built) == ALL  # the other "build" built nothing: ours builds all
        assert ours.missing_indexes() == []


def test_an_index_left_invalid_is_built_again(postgres_url: str) -> None:
    with _stores(postgres_url) as (ours, theirs):
        assert ours.defer_indexes() is None
        _raw_events(ours, 100)
        _raw_events(ours, 1, first=1_000)
        with ours.transaction() as conn:  # the same transaction hash and log index twice
            conn.execute(
                text(
                    "UPDATE raw_event SET tx_hash = sha256(int8send(CAST(0 AS bigint))) "
                    "WHERE block_number = 1000"
                )
            )
        other = theirs.acquire_writer(10)  # so the build runs concurrently
        with pytest.raises(StoreError, match="duplicate event: re-index the chain"):
            ours.end_deferral()
        with ours.engine.connect() as conn:
            valid = conn.execute(
                text(
                    "SELECT x.indisvalid FROM pg_index x JOIN pg_class c "
                    "ON c.oid = x.indexrelid WHERE c.relname = 'uq_raw_event'"
                )
            ).scalar()
        assert valid is False  # PostgreSQL keeps what a failed concurrent build made
        assert sorted(ours.missing_indexes()) == ALL  # the build stopped at the first
        with ours.transaction() as conn:
            conn.execute(text("DELETE FROM raw_event WHERE block_number = 1000"))
        assert sorted(ours.build_indexes()) == ALL  # the invalid one dropped and built again
        assert ours.missing_indexes() == []
        assert schema_differences(ours) == []
        other.release()
