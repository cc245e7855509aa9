"""Backfill speed-ups change nothing in the store.

A large backfill drops the indexes on random keys and builds them at its end; one that
was interrupted leaves them missing and the next indexer builds them; ranges fetched
concurrently and written in groups give the store a one-by-one index gives. On SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once, store_fingerprint

from indexer.fetch import FetchedRange
from indexer.models import DEFERRABLE_INDEXES, metadata
from indexer.pipeline import IndexerOptions
from indexer.schema import schema_differences
from indexer.state import Changes
from indexer.store import open_store
from indexer.writer import BulkLoad, Prepared, RangeRows


def test_deferral_is_counted_and_rebuilds_once(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert store.missing_indexes() == []
        store.defer_indexes()
        store.defer_indexes()  # a second chain's backfill in the same process
        assert sorted(store.missing_indexes()) == sorted(DEFERRABLE_INDEXES)
        assert store.end_deferral() == []  # the other backfill still runs
        assert store.build_indexes() == []  # not while a backfill of ours runs
        assert sorted(store.end_deferral()) == sorted(DEFERRABLE_INDEXES)
        assert store.missing_indexes() == []
        assert schema_differences(store) == []
    finally:
        store.dispose()


def _prepared(first: int, last: int, events: int, head: int) -> Prepared:
    batch = FetchedRange(first, last, None, None, [], head, 0, 0.0)
    rows = RangeRows(last, "0x", head, 0, events, b"", Changes(), [])
    return Prepared(batch, rows, 0.0)


def test_a_dense_group_after_empty_blocks_defers_the_indexes(tmp_path: Path) -> None:
    """A backfill that starts over empty blocks is judged by its dense part too: at the
    density of the whole sync (10,000 events in 205 blocks) the 795 blocks to go look like
    ~49,000 events, at the group's (10,000 in 5) like ~1.6M."""
    store = open_store(f"sqlite:///{tmp_path / 'rtrm.db'}")
    bulk = BulkLoad(1, store, 100_000)
    try:
        bulk.start_sync()
        empty, dense = _prepared(1, 200, 0, 1_000), _prepared(201, 205, 10_000, 1_000)
        asyncio.run(bulk.before_write([empty]))
        bulk.written([empty])
        assert not bulk.active
        asyncio.run(bulk.before_write([dense]))
        assert bulk.active
        assert sorted(store.missing_indexes()) == sorted(DEFERRABLE_INDEXES)
        asyncio.run(bulk.end_sync(failed=False))
        assert store.missing_indexes() == []
    finally:
        store.dispose()


def test_a_catch_up_on_a_larger_store_keeps_the_indexes(tmp_path: Path) -> None:
    """300,000 events to go are a bulk load into an empty store, but a catch-up on one
    that holds a million: dropping the indexes would make readers scan, and rebuilding
    them reads the whole table."""
    store = open_store(f"sqlite:///{tmp_path / 'rtrm.db'}")
    chain = metadata.tables["chain"]
    try:
        with store.transaction() as conn:
            conn.execute(
                chain.insert().values(
                    chain_id=1, name="a", genesis_hash="0x", finality_depth=1, events=1_000_000
                )
            )
        group = [_prepared(1, 10, 3_000, 1_000)]  # ~300,000 events expected
        bulk = BulkLoad(1, store, 100_000)
        asyncio.run(bulk.check_store())
        assert bulk.stored == 1_000_000
        bulk.start_sync()
        asyncio.run(bulk.before_write(group))
        assert not bulk.active
        assert store.missing_indexes() == []
        always = BulkLoad(1, store, 0)  # 0: every backfill, whatever the store holds
        asyncio.run(always.check_store())
        always.start_sync()
        asyncio.run(always.before_write(group))
        assert always.active
        asyncio.run(always.end_sync(failed=False))
        assert store.missing_indexes() == []
    finally:
        store.dispose()


@pytest.mark.chain
def test_deferred_concurrent_grouped_backfill_equals_a_plain_one(
    small_devnet: Any, store_url: str, tmp_path: Path
) -> None:
    fast = IndexerOptions(bulk_events=0, fetch_concurrency=3, max_span=2, write_ahead=16)
    outcomes = index_once(small_devnet.config_path, store_url, options=fast)
    assert [o.status for o in outcomes] == ["ok"]
    store = open_store(store_url)
    try:
        assert store.missing_indexes() == []
        assert schema_differences(store) == []
    finally:
        store.dispose()
    plain = IndexerOptions(bulk_events=None, fetch_concurrency=1, write_ahead=1)
    fresh = f"sqlite:///{tmp_path / 'plain.db'}"
    index_once(small_devnet.config_path, fresh, options=plain)
    chain_id = small_devnet.nodes[0].chain_id
    assert store_fingerprint(store_url, chain_id) == store_fingerprint(fresh, chain_id)


@pytest.mark.chain
def test_a_range_read_at_once_is_written_in_pieces_that_change_nothing(
    small_devnet: Any, store_url: str, tmp_path: Path
) -> None:
    """A span that returns many more logs than the target is cut into pieces after a block's
    last log; each piece is its own transaction, with the cursor on its last block."""
    pieces = IndexerOptions(target_logs=40, max_span=64)
    reports: list[Any] = []
    outcomes = index_once(
        small_devnet.config_path, store_url, options=pieces, on_batch=reports.append
    )
    assert [o.status for o in outcomes] == ["ok"]
    # The first read covers the controller's first span, 16 blocks, and this world has far
    # more than twice 40 logs there: it is written in pieces.
    first_read = [r for r in reports if r.last <= 16]
    assert len(first_read) > 1
    assert sum(r.events for r in first_read) > 2 * 40
    for before, after in itertools.pairwise(reports):
        assert after.first == before.last + 1
    plain = IndexerOptions(bulk_events=None, fetch_concurrency=1, write_ahead=1, max_span=1)
    fresh = f"sqlite:///{tmp_path / 'plain.db'}"
    index_once(small_devnet.config_path, fresh, options=plain)
    chain_id = small_devnet.nodes[0].chain_id
    assert store_fingerprint(store_url, chain_id) == store_fingerprint(fresh, chain_id)


@pytest.mark.chain
def test_indexes_an_interrupted_backfill_left_missing_are_built(
    small_devnet: Any, store_url: str
) -> None:
    store = open_store(store_url)
    store.defer_indexes()  # a backfill that never reached its end (killed)
    assert sorted(store.missing_indexes()) == sorted(DEFERRABLE_INDEXES)
    store.dispose()
    outcomes = index_once(small_devnet.config_path, store_url)  # a small sync: no deferral
    assert [o.status for o in outcomes] == ["ok"]
    store = open_store(store_url)
    try:
        assert store.missing_indexes() == []
    finally:
        store.dispose()
