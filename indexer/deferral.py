"""Deferred indexes: a large backfill writes without the indexes on random keys.

Each insert into an index on a transaction hash or an account dirties a page of its own,
so a large backfill drops those indexes (:data:`indexer.models.DEFERRABLE_INDEXES`) and
builds them once at its end, as bulk loaders do (:meth:`indexer.store.Store.defer_indexes`
counts the backfills of one process; the last one to end builds). Exactly-once never
depends on them: the cursor moves in the data's transaction, and the unique index checks
the raw events again when it is built.

On PostgreSQL several processes may write one store (one ``rtrm index --chain`` each), and
the indexes are shared:

- a backfill drops them only when no other process holds a writer lock on the store
  (:func:`indexer.writerlock.other_writers`): ``DROP INDEX`` would wait for the others'
  transactions and stall their next ones, and their readers would go without the indexes;
- a build while others write uses ``CREATE INDEX CONCURRENTLY``, which lets their inserts
  go on (a plain build blocks them until it ends);
- one process builds at a time (a one-key advisory lock on the store's namespace, which
  never meets the two-key writer locks); a process that finds another building waits for
  it, then builds what is still missing, and a backfill does not drop them meanwhile;
- an index an interrupted concurrent build left invalid counts as missing: it is dropped
  and built again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Index, inspect, text
from sqlalchemy.exc import IntegrityError

from indexer.exceptions import StoreError
from indexer.models import DEFERRABLE_INDEXES, metadata
from indexer.writerlock import other_writers

if TYPE_CHECKING:
    from indexer.store import Store

__all__ = ["build", "drop", "missing"]

log = logging.getLogger(__name__)

_BUILD_MEMORY = "512MB"  # PostgreSQL's sort memory for a build
_BUILD_POLL_S = 0.5  # while another process builds


def drop(conn: Connection, store: Store) -> str | None:
    """In a write transaction: drop the deferrable indexes; None when done, else why they
    stay (PostgreSQL: another process writes the store, or builds them)."""
    if store.dialect == "postgresql":
        writers = store.writers
        key = {"key": writers.namespace_of(conn)}
        if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), key).scalar():
            return "another indexer is building them"
        others = other_writers(conn, writers)
        if others:
            return (
                f"{others} other indexer process(es) write this store, and dropping the "
                "shared indexes would stall them"
            )
    for index in deferrable():
        conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    return None


def missing(conn: Connection) -> list[str]:
    """The deferrable indexes that do not exist or are invalid."""
    return [str(index.name) for index in deferrable() if not _present(conn, index)]


def build(store: Store) -> list[str]:
    """Build every missing deferrable index; returns the names built."""
    if store.dialect != "postgresql":
        with store.transaction() as conn:
            return _build(conn, store)
    lock = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        writers = store.writers
        key = {"key": writers.namespace_of(lock)}
        waited = False
        while not lock.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
            if not waited:
                log.info("another indexer is building the deferred indexes: waiting for it")
                waited = True
            time.sleep(_BUILD_POLL_S)
        try:
            if not missing(lock):
                return []
            if not other_writers(lock, writers):
                with store.transaction() as conn:
                    conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{_BUILD_MEMORY}'")
                    return _build(conn, store)
            log.info("other indexers write this store: building the indexes concurrently")
            lock.exec_driver_sql(f"SET maintenance_work_mem = '{_BUILD_MEMORY}'")
            try:
                return _build(lock, store, concurrently=True)
            finally:
                lock.exec_driver_sql("RESET maintenance_work_mem")
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:key)"), key)
    finally:
        lock.close()


def deferrable() -> list[Index]:
    """The deferrable indexes' definitions, as the models declare them."""
    every = (index for table in metadata.tables.values() for index in table.indexes)
    found = {str(index.name): index for index in every}
    return [found[name] for name in DEFERRABLE_INDEXES]


def _build(conn: Connection, store: Store, *, concurrently: bool = False) -> list[str]:
    built: list[str] = []
    how = " CONCURRENTLY" if concurrently else ""
    for index in deferrable():
        present = _present(conn, index)
        if present:
            continue
        if present is False:  # left invalid by an interrupted concurrent build
            conn.execute(text(f"DROP INDEX{how} IF EXISTS {index.name}"))
        table = index.table
        assert table is not None
        columns = ", ".join(column.name for column in index.columns)
        unique = "UNIQUE " if index.unique else ""
        try:
            conn.execute(
                text(f"CREATE {unique}INDEX{how} {index.name} ON {table.name} ({columns})")
            )
        except IntegrityError as exc:  # a duplicate raw event: never expected
            reason = str(exc.orig or exc).splitlines()[0]
            raise StoreError(
                f"cannot build {index.name} on {store.url}: {reason}; the store holds"
                " a duplicate event: re-index the chain (rtrm index --reset-chain)"
            ) from None
        built.append(str(index.name))
    return built


def _present(conn: Connection, index: Index) -> bool | None:
    """True: the index exists and is usable; False: it exists but is invalid (PostgreSQL,
    an interrupted concurrent build); None: it does not exist."""
    if conn.dialect.name != "postgresql":
        table = index.table
        assert table is not None
        names = {found["name"] for found in inspect(conn).get_indexes(table.name)}
        return True if index.name in names else None
    valid = conn.execute(
        text(
            "SELECT x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
            "WHERE c.relname = :name AND c.relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        ),
        {"name": index.name},
    ).scalar()
    return None if valid is None else bool(valid)
