"""A bulk backfill's commits in a child process: same transactions, failures reported, no
orphan (the end-to-end equality and kill -9 cases are in test_bulk.py and test_crash.py,
whose bulk backfills commit through it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import seed_chain_row
from sqlalchemy import text

from indexer.copyrows import pack_row
from indexer.exceptions import StoreError
from indexer.state import Changes
from indexer.store import open_store
from indexer.writer import RAW_KINDS, LedgerRow, RangeRows
from indexer.writerproc import WriterProcess

CHAIN = 31337
BLOCK = "0x" + "ab" * 32


def _rows(last: int, raw: list[tuple[Any, ...]]) -> RangeRows:
    ledger: list[LedgerRow] = [(CHAIN, last, BLOCK, "0x" + "cd" * 32, 1_700_000_000)]
    packed = b"".join(pack_row(row, RAW_KINDS) for row in raw)
    return RangeRows(last, BLOCK, last + 5, last - 1, len(raw), packed, Changes(), ledger)


def _raw(index: int) -> tuple[Any, ...]:
    tx = index.to_bytes(32, "big")
    return (CHAIN, 7, index, tx, 0, b"\x11" * 20, b"\x22" * 32, b"")


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"  # a zombie has ended


def _wait_gone(pid: int | None, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_commits_rows_cursor_and_counters_in_one_transaction(store_url: str) -> None:
    seed_chain_row(store_url, CHAIN, BLOCK)
    writer = WriterProcess(store_url, CHAIN)
    try:
        writer.write([_rows(7, [_raw(0), _raw(1)]), _rows(8, [_raw(2)])])
    finally:
        writer.close()
    assert _wait_gone(writer.pid)
    store = open_store(store_url)
    try:
        with store.engine.connect() as conn:
            events = conn.execute(text("SELECT COUNT(*) FROM raw_event")).scalar()
            cursor = conn.execute(text("SELECT block_number, block_hash FROM cursor")).one()
            counted = conn.execute(text("SELECT events, head_block FROM chain")).one()
    finally:
        store.dispose()
    assert events == 3
    assert tuple(cursor) == (8, BLOCK)
    assert tuple(counted) == (3, 13)


def test_a_failed_commit_is_a_store_error_and_writes_nothing(store_url: str) -> None:
    seed_chain_row(store_url, CHAIN, BLOCK)
    writer = WriterProcess(store_url, CHAIN)
    broken = _rows(7, [_raw(0), _raw(0)])  # the same event twice: the key refuses it
    with pytest.raises(StoreError, match="writer process failed"):
        writer.write([broken])
    assert _wait_gone(writer.pid)
    store = open_store(store_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM raw_event")).scalar() == 0
            assert conn.execute(text("SELECT COUNT(*) FROM cursor")).scalar() == 0
    finally:
        store.dispose()


def _count(url: str) -> tuple[int, tuple[Any, ...] | None]:
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            events = conn.execute(text("SELECT COUNT(*) FROM raw_event")).scalar_one()
            cursor = conn.execute(text("SELECT block_number, block_hash FROM cursor")).first()
    finally:
        store.dispose()
    return int(events), None if cursor is None else tuple(cursor)


def test_groups_sent_ahead_commit_in_order_and_are_answered_in_order(store_url: str) -> None:
    seed_chain_row(store_url, CHAIN, BLOCK)
    writer = WriterProcess(store_url, CHAIN)
    try:
        writer.send([_rows(7, [_raw(0), _raw(1)])])
        writer.send([_rows(8, [_raw(2)])])
        writer.wait()
        writer.wait()
    finally:
        writer.close()
    assert _count(store_url) == (3, (8, BLOCK))


def test_a_group_sent_behind_a_failed_one_is_never_committed(store_url: str) -> None:
    seed_chain_row(store_url, CHAIN, BLOCK)
    writer = WriterProcess(store_url, CHAIN)
    writer.send([_rows(7, [_raw(0), _raw(0)])])  # the same event twice: the key refuses it
    writer.send([_rows(8, [_raw(1)])])  # already on its way when the first one fails
    with pytest.raises(StoreError, match="writer process failed"):
        writer.wait()
    assert _wait_gone(writer.pid)
    assert _count(store_url) == (0, None)


def test_a_dead_child_is_a_store_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rtrm.db"
    open_store(url).dispose()
    writer = WriterProcess(url, CHAIN)
    writer.wait_ready()
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)
    with pytest.raises(StoreError, match="writer process died"):
        writer.write([_rows(7, [_raw(0)])])


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rtrm.db"
    open_store(url).dispose()
    script = (
        "import sys, time\n"
        "from indexer.writerproc import WriterProcess\n"
        f"w = WriterProcess({url!r}, {CHAIN})\n"
        "w.wait_ready()\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert _alive(child)
            parent.kill()  # kill -9: no clean-up runs in the parent
            parent.wait()
            assert _wait_gone(child), "the writer process outlived its indexer"
        finally:
            parent.kill()


def test_the_child_stops_writing_once_the_indexer_lost_its_lock(postgres_url: str) -> None:
    """The child checks the indexer's writer lock in each transaction: after the lock's
    session is killed (another indexer may write the chain now) it commits nothing."""
    seed_chain_row(postgres_url, CHAIN, BLOCK)
    store = open_store(postgres_url, migrate=False)
    lock = store.acquire_writer(CHAIN)
    writer = WriterProcess(postgres_url, CHAIN, store.writers.held(CHAIN))
    try:
        writer.write([_rows(7, [_raw(0)])])
        with store.engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lock.pid})
        with pytest.raises(StoreError, match="lost its writer lock"):
            writer.write([_rows(8, [_raw(1)])])
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM raw_event")).scalar() == 1
    finally:
        writer.close()
        lock.release()
        store.dispose()
