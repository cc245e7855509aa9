"""The store: migrations equal the models, exact integers, rollback, single writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command as alembic_command
from sqlalchemy import inspect, text

import insurance.models  # noqa: F401 - its tables share the metadata the migrations build
from indexer.exceptions import StoreError, WriterLockedError
from indexer.models import metadata
from indexer.schema import head_revision, schema_differences
from indexer.state import VERSION_COLUMNS
from indexer.store import HEAD_REVISION, BulkWriter, open_store, rollback, upgrade

ROOT = Path(__file__).resolve().parents[2]
EXTREMES = [0, 1, -1, 2**255 - 1, -(2**255), 2**256 - 1, 10**30]


def test_migrations_equal_the_models(store_url: str) -> None:
    store = open_store(store_url)
    try:
        assert schema_differences(store) == []
        upgrade(store)  # idempotent
        assert schema_differences(store) == []
    finally:
        store.dispose()


def _alembic(store_url: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={store_url}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_head_revision_is_the_newest_migration() -> None:
    """The one-query check that a store is at head needs the head's revision by heart."""
    assert head_revision() == HEAD_REVISION


def test_a_store_behind_head_is_migrated_and_one_at_head_skips_alembic(store_url: str) -> None:
    _alembic(store_url, "upgrade", "0003")
    store = open_store(store_url)  # one revision behind: Alembic migrates it
    try:
        assert schema_differences(store) == []
    finally:
        store.dispose()
    script = (
        "import sys; from indexer.store import open_store; "
        f"open_store({store_url!r}).dispose(); print(sorted(m for m in sys.modules if "
        "m.split('.')[0] == 'alembic'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_alembic_cli_upgrades_to_head(store_url: str) -> None:
    _alembic(store_url, "upgrade", "head")
    store = open_store(store_url, migrate=False)
    try:
        assert schema_differences(store) == []
    finally:
        store.dispose()


def test_an_interrupted_migration_leaves_nothing(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill -9 mid-migration once left SQLite with tables but no revision: every
    later start failed with "table … already exists". The whole upgrade is one transaction."""
    real_upgrade = alembic_command.upgrade

    def upgrade_then_die(config: Any, revision: str) -> None:
        real_upgrade(config, revision)  # every table created, the revision stamped ...
        raise KeyboardInterrupt  # ... and the process stops before the commit

    store = open_store(store_url, migrate=False)
    try:
        monkeypatch.setattr(alembic_command, "upgrade", upgrade_then_die)
        with pytest.raises(KeyboardInterrupt):
            upgrade(store)
        assert inspect(store.engine).get_table_names() == []
        monkeypatch.setattr(alembic_command, "upgrade", real_upgrade)
        upgrade(store)
        assert schema_differences(store) == []
    finally:
        store.dispose()


def test_a_read_connection_sees_one_snapshot(store_url: str) -> None:
    """The reads of one connection (an API answer, a snapshot load) see one state of the
    store even while the indexer commits in between."""
    store = open_store(store_url)
    chain = metadata.tables["chain"]
    row = {"chain_id": 777, "name": "x", "genesis_hash": "0x" + "00" * 32, "finality_depth": 1}
    count = text("SELECT COUNT(*) FROM chain")
    try:
        with store.engine.connect() as reader:
            if store.dialect == "postgresql":
                reader.execution_options(isolation_level="REPEATABLE READ")
            before = reader.execute(count).scalar_one()
            with store.transaction() as conn:
                conn.execute(chain.insert().values(**row))
            assert reader.execute(count).scalar_one() == before
        with store.engine.connect() as reader:
            assert reader.execute(count).scalar_one() == before + 1
    finally:
        store.dispose()


_OLD_RAW: dict[str, Any] = {  # a raw_event row as migration 0003 left it: 0x-hex text
    "chain_id": 1,
    "block_number": 7,
    "block_hash": "0x" + "ab" * 32,
    "tx_hash": "0x" + "cd" * 32,
    "tx_index": 2,
    "log_index": 5,
    "address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "contract": "Token",
    "event": "Transfer",
    "topics": "0x" + "01" * 32 + ",0x" + "02" * 32 + ",0x" + "03" * 32,
    "data": "0x" + "00" * 31 + "05",
}


def test_raw_events_are_converted_to_bytes_and_back(store_url: str) -> None:
    """Migration 0004 keeps every raw event, in bytes; its downgrade gives the text back
    (block hash from the ledger; contract and event names are not kept)."""
    _alembic(store_url, "upgrade", "0003")
    store = open_store(store_url, migrate=False)
    columns = ", ".join(_OLD_RAW)
    values = ", ".join(f":{name}" for name in _OLD_RAW)
    try:
        with store.transaction() as conn:
            conn.execute(text(f"INSERT INTO raw_event ({columns}) VALUES ({values})"), _OLD_RAW)
            conn.execute(
                text("INSERT INTO block (chain_id, number, hash) VALUES (1, 7, :h)"),
                {"h": _OLD_RAW["block_hash"]},
            )
    finally:
        store.dispose()
    _alembic(store_url, "upgrade", "head")
    store = open_store(store_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT chain_id, block_number, log_index, tx_hash, tx_index, address, "
                    "topics, data FROM raw_event"
                )
            ).one()
        assert tuple(row) == (
            1,
            7,
            5,
            b"\xcd" * 32,
            2,
            bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"),
            b"\x01" * 32 + b"\x02" * 32 + b"\x03" * 32,
            bytes(31) + b"\x05",
        )
        assert schema_differences(store) == []
    finally:
        store.dispose()
    _alembic(store_url, "downgrade", "0003")
    store = open_store(store_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            back = conn.execute(text(f"SELECT {columns} FROM raw_event")).one()
        expected = {**_OLD_RAW, "address": _OLD_RAW["address"].lower(), "contract": "", "event": ""}
        assert dict(back._mapping) == expected
    finally:
        store.dispose()


def test_int256_round_trips_exactly(store_url: str) -> None:
    store = open_store(store_url)
    try:
        with store.transaction() as conn:
            rows = [
                [1, i + 1, "0xP", "0xA", 10, None, "collateral", f"0x{i}", "lending", v]
                for i, v in enumerate(EXTREMES)
            ]
            BulkWriter(conn).insert("account_balance", VERSION_COLUMNS["account_balance"], rows)
        with store.engine.connect() as conn:
            got = conn.execute(text("SELECT amount FROM account_balance ORDER BY row_id"))
            values = [int(v) for (v,) in got]
        assert values == EXTREMES
    finally:
        store.dispose()


def _version(row_id: int, account: str, valid_from: int, amount: int) -> list[object]:
    return [1, row_id, "0xP", account, valid_from, None, "collateral", "0xT", "lending", amount]


def test_rollback_restores_the_state_as_of_the_block(store_url: str) -> None:
    store = open_store(store_url)
    columns = VERSION_COLUMNS["account_balance"]
    try:
        with store.transaction() as conn:
            writer = BulkWriter(conn)
            writer.insert("account_balance", columns, [_version(1, "0xA", 10, 5)])
        with store.transaction() as conn:
            writer = BulkWriter(conn)
            writer.close_versions("account_balance", 1, [(1, 20)])
            writer.insert(
                "account_balance", columns, [_version(2, "0xA", 20, 7), _version(3, "0xB", 21, 1)]
            )
        with store.transaction() as conn:
            rollback(conn, 1, 15)
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT row_id, valid_from, valid_to, amount FROM account_balance")
            ).all()
        assert [(r[0], r[1], r[2], int(r[3])) for r in rows] == [(1, 10, None, 5)]
    finally:
        store.dispose()


def test_a_bad_url_names_the_fix() -> None:
    with pytest.raises(StoreError, match="supports sqlite and postgresql"):
        open_store("mysql://root@localhost/x")
    with pytest.raises(StoreError, match="not a SQLAlchemy URL"):
        open_store("not a url")


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:s3cretpw@localhost/x",  # unsupported database
        "postgresql+psycopg2://bob:s3cretpw@db:5432/x",  # another driver
        "postgresql+psycopg://bob:s3cretpw@db:port/x",  # malformed
        "bob:s3cretpw@db/x",  # not a URL at all
    ],
)
def test_a_bad_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(StoreError, match="database_url") as raised:
        open_store(url)
    assert "s3cretpw" not in str(raised.value)
    assert "***" in str(raised.value)


def test_only_one_writer_per_chain_on_postgres(store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("advisory locks are a PostgreSQL feature; SQLite has one writer anyway")
    first, second = open_store(store_url), open_store(store_url, migrate=False)
    try:
        lock = first.acquire_writer(42161)
        with pytest.raises(WriterLockedError, match="chain 42161"):
            second.acquire_writer(42161)
        other = second.acquire_writer(10)  # another chain is free
        other.release()
        lock.release()
        second.acquire_writer(42161).release()  # free again once released
    finally:
        first.dispose()
        second.dispose()
