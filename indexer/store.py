"""The store's engine, migrations, single-writer lock, bulk writes and rollback.

``open_store(url)`` makes an engine tuned for the dialect (SQLite: WAL, a busy timeout,
``synchronous=NORMAL``, foreign keys off, real transactions around DDL and reads too;
PostgreSQL: a small pool) and :func:`upgrade` brings the schema to Alembic's head in one
transaction (:mod:`indexer.schema`) — the only way the schema changes.

Writes of one indexed range happen in one transaction (:meth:`Store.transaction`), through
:class:`BulkWriter`, which bypasses the ORM for speed: ``executemany`` on SQLite and
binary ``COPY … FROM STDIN`` on PostgreSQL for inserts (rows that come packed as COPY
tuples, the raw events', go in as they are), a keyed bulk ``UPDATE`` for closing
versions. :func:`rollback` removes everything a chain wrote above a block: two
statements per versioned table, one per fact table, on both databases.

A large backfill writes faster without the indexes on random keys (a transaction hash, an
account: every insert dirties its own page): :meth:`Store.defer_indexes` drops them and
:meth:`Store.end_deferral` builds them once the last backfill of the process is done;
:meth:`Store.build_indexes` builds any that an interrupted backfill left missing
(:mod:`indexer.deferral`, which also keeps several processes on one PostgreSQL store out
of each other's way).

Invariants: one writer per chain — on PostgreSQL a session advisory lock keyed by the
store's schema and the chain id (:meth:`Store.acquire_writer`, :mod:`indexer.writerlock`),
which each write transaction of this process checks its session still holds
(:func:`check_writer`: a killed session, a database restart or an idle timeout frees the
lock behind the writer's back), on SQLite a process-wide lock around each write
transaction (SQLite has one writer anyway); on both, the cursor moves only from where its
writer left it (a compare-and-set in the data's transaction); every write transaction
either commits data, ledger and cursor together or nothing.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeEngine

from chains.urls import hide_credentials, redact
from indexer import deferral, writerlock
from indexer.copyrows import SIGNATURE, TRAILER, unpack
from indexer.exceptions import StoreError, WriterLostError
from indexer.models import (
    APPEND_ONLY_TABLES,
    VERSIONED_TABLES,
    Int256,
    metadata,
)
from indexer.writerlock import WriterLock, Writers, check_writer

__all__ = [
    "HEAD_REVISION",
    "BulkWriter",
    "Store",
    "WriterLock",
    "check_writer",
    "describe",
    "move_cursor",
    "open_store",
    "parse_database_url",
    "reset_chain",
    "rollback",
    "stored_revision",
    "upgrade",
]

ROOT = Path(__file__).resolve().parents[1]
_SQLITE_WRITE_LOCK = threading.Lock()
HEAD_REVISION = "0004"  # the newest migration's (tests check it is Alembic's head)


class Store:
    """An engine plus the store-wide helpers; one per process and database URL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._deferring = 0  # backfills of this process running without the deferrable indexes
        self._defer_lock = threading.Lock()
        # This store's writer-lock sessions (PostgreSQL), for check_writer; SQLite:
        # rtrm_write makes writes BEGIN IMMEDIATE.
        self.writers = Writers()
        self._writes = engine.execution_options(rtrm_write=True, rtrm_writers=self.writers)

    @property
    def url(self) -> str:
        """The database URL, password hidden (for messages)."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def database_url(self) -> str:
        """The database URL to connect with (another process's engine)."""
        return self.engine.url.render_as_string(hide_password=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction (serialised per process on SQLite)."""
        guard = _SQLITE_WRITE_LOCK if self.dialect == "sqlite" else contextlib.nullcontext()
        with guard, self._writes.begin() as conn:
            yield conn

    def acquire_writer(self, chain_id: int) -> WriterLock:
        """Take the single-writer lock of ``chain_id`` (a PostgreSQL advisory lock held by
        a dedicated connection until :meth:`WriterLock.release`, :mod:`indexer.writerlock`).

        Raises :class:`WriterLockedError` at once if another process holds it. On SQLite a
        database file has one writer at a time anyway; the lock is a no-op there. While it
        is held, this store's write transactions for the chain check that its session still
        holds it (:func:`check_writer`).
        """
        if self.dialect != "postgresql":
            return WriterLock(None, chain_id)
        return writerlock.acquire(self.engine, self.writers, chain_id, self.url)

    # ------------------------------------------------------------ deferred indexes

    def defer_indexes(self) -> str | None:
        """A large backfill starts: drop the deferrable indexes (the first backfill of the
        process drops them, later ones are counted). Returns None when they are dropped,
        else why they stay (:func:`indexer.deferral.drop`: other processes write the
        store); the backfill then writes with them."""
        with self._defer_lock:
            if not self._deferring:
                with self.transaction() as conn:
                    refused = deferral.drop(conn, self)
                if refused is not None:
                    return refused
            self._deferring += 1
            return None

    def end_deferral(self) -> list[str]:
        """A backfill ended: when it was the process's last one, build the indexes
        (:meth:`build_indexes`); returns the names built."""
        with self._defer_lock:
            self._deferring = max(0, self._deferring - 1)
            if self._deferring:
                return []
            return deferral.build(self)

    def build_indexes(self) -> list[str]:
        """Build every deferrable index that is missing (after an interrupted backfill),
        unless a backfill of this process is still running; returns the names built."""
        with self._defer_lock:
            return [] if self._deferring else deferral.build(self)

    def stored_events(self) -> int:
        """The events indexed into the store, all chains together (the chains' counters)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(text("SELECT COALESCE(SUM(events), 0) FROM chain")).scalar_one()
            )

    def missing_indexes(self) -> list[str]:
        """The deferrable indexes that do not exist (a backfill runs or was interrupted)."""
        with self.engine.connect() as conn:
            return deferral.missing(conn)

    def dispose(self) -> None:
        self.engine.dispose()


def move_cursor(
    conn: Connection,
    chain_id: int,
    to: tuple[int, str],
    previous: tuple[int, str | None] | None,
) -> None:
    """In a write transaction: move the chain's cursor to ``to`` (block, hash), only from
    ``previous``, where this writer left it (compare-and-set; None: unchecked). A cursor
    that is elsewhere, or a writer lock this process lost (:func:`check_writer`), means
    another process writes the chain: :class:`WriterLostError`, and the caller rolls back.
    A chain without a cursor row gets one (a second writer racing for it fails on its key)."""
    check_writer(conn, chain_id)
    params = {"c": chain_id, "b": to[0], "h": to[1]}
    update = "UPDATE cursor SET block_number = :b, block_hash = :h WHERE chain_id = :c"
    if previous is not None:
        update += " AND block_number = :pb AND block_hash = :ph"
        params |= {"pb": previous[0], "ph": previous[1] or ""}
    if conn.execute(text(update), params).rowcount:
        return
    found = conn.execute(
        text("SELECT block_number, block_hash FROM cursor WHERE chain_id = :c"), {"c": chain_id}
    ).first()
    if found is not None:
        raise WriterLostError(
            f"chain {chain_id}: the cursor moved under this writer (it is at block "
            f"{found[0]}, this writer left it at block {previous[0] if previous else '?'}); "
            "another process writes this chain? Nothing written; the chain restarts from "
            "the store"
        )
    conn.execute(
        text("INSERT INTO cursor (chain_id, block_number, block_hash) VALUES (:c, :b, :h)"),
        params,
    )


def open_store(url: str, *, migrate: bool = True) -> Store:
    """An engine for ``url`` (created SQLite directories included), migrated to head."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    else:  # postgresql (parse_database_url refuses the others)
        engine = create_engine(parsed, pool_size=10, max_overflow=10, pool_pre_ping=True)
    store = Store(engine)
    if migrate:
        upgrade(store)
    return store


_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}  # the drivers RTRM installs


def parse_database_url(url: str) -> URL:
    """``url`` parsed, for a database and driver RTRM supports; else a :class:`StoreError`
    saying what to write (a URL SQLAlchemy rejects or cannot load the driver of would
    otherwise fail later, as an unexpected error)."""
    example = "sqlite:///.rtrm/rtrm.db or postgresql+psycopg://user@host:5432/db"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"database_url {_shown(url)!r} is not a SQLAlchemy URL "
            f"({redact(str(exc), url)}); use e.g. {example}"
        ) from None
    except ValueError as exc:  # e.g. a port that is not a number
        raise StoreError(
            f"database_url {_shown(url)!r} is malformed ({redact(str(exc), url)}); "
            f"check the host:port part (the port is a number), e.g. {example}"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend not in _DRIVERS:
        raise StoreError(
            f"database_url {shown!r}: unsupported database {backend!r}; "
            "RTRM supports sqlite and postgresql (postgresql+psycopg://…)"
        )
    if driver != _DRIVERS[backend]:
        scheme = "sqlite" if backend == "sqlite" else "postgresql+psycopg"
        raise StoreError(
            f"database_url {shown!r}: RTRM talks to {backend} through the {_DRIVERS[backend]} "
            f"driver, not {driver}; write the URL as {scheme}://…, e.g. {example}"
        )
    return parsed


def _shown(url: str) -> str:
    """A database URL that does not parse, fit to print: credentials hidden, also in a
    string without a scheme (``user:password@host/db``)."""
    return _PASSWORD.sub("***", hide_credentials(url))


_PASSWORD = re.compile(r"(?<=:)[^:@/\s]+(?=@)")


def _sqlite_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE: DDL (a
    # migration, an index build) committed statement by statement, so a kill -9 left half a
    # schema, and the reads of one connection saw a new snapshot per statement. Driver
    # transactions off; _sqlite_begin opens a real one wherever SQLAlchemy begins.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA busy_timeout=60000",
        "PRAGMA cache_size=-262144",  # 256 MiB page cache
        "PRAGMA temp_store=MEMORY",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the database's write lock at once (waiting out the busy
    # timeout), never in mid-transaction, where SQLite would fail at once on a read
    # snapshot another writer has since made stale.
    immediate = conn.get_execution_options().get("rtrm_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def upgrade(store: Store) -> None:
    """Run every pending Alembic migration on ``store`` (idempotent).

    A store already at :data:`HEAD_REVISION` is recognised by reading ``alembic_version``
    (a table check and one ``SELECT``), without loading Alembic (:mod:`indexer.schema`):
    importing it and reading every migration script cost each command's start, and each
    writer process's, 0.1-0.2 s."""
    try:
        if stored_revision(store) == HEAD_REVISION:
            return
        from indexer import schema  # noqa: PLC0415 - Alembic loads only when it has work

        schema.upgrade(store)
    except OperationalError as exc:
        raise StoreError(
            f"cannot migrate the store at {store.url}: {exc.orig}; check database_url in "
            "rtrm.toml (or RTRM_DATABASE_URL) and that the database is running"
        ) from None


def stored_revision(store: Store) -> str | None:
    """The revision in ``alembic_version`` (None: no such table, a new store)."""
    with store.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if revision is None else str(revision)


# ---------------------------------------------------------------- bulk writes


class BulkWriter:
    """Fast inserts and version closes inside one transaction, per dialect.

    PostgreSQL gets ``COPY … FROM STDIN (FORMAT BINARY)``: each value goes in its column's
    binary form (integers, ``NUMERIC``, ``BYTEA``), which the server stores without
    parsing text (a raw event: 2.2 µs of server time against 3.8 µs as text).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (tuples in ``columns`` order) into ``table``."""
        if not rows:
            return
        dbapi: Any = self.conn.connection.dbapi_connection
        if self.dialect == "postgresql":
            column_list = ", ".join(columns)
            copy_sql = f"COPY {table} ({column_list}) FROM STDIN (FORMAT BINARY)"
            with dbapi.cursor() as cursor, cursor.copy(copy_sql) as copy:
                copy.set_types(_copy_types(table, tuple(columns)))
                for row in rows:
                    copy.write_row(row)
            return
        wanted = [i for i, name in enumerate(columns) if name in _int256_columns(table)]
        if wanted:
            rows = [_stringify(row, wanted) for row in rows]
        marks = ", ".join("?" * len(columns))
        cursor = dbapi.cursor()
        try:
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        finally:
            cursor.close()

    def insert_packed(
        self, table: str, columns: Sequence[str], kinds: str, chunks: Sequence[bytes]
    ) -> None:
        """Insert rows packed as binary COPY tuples of ``kinds`` (:mod:`indexer.copyrows`):
        PostgreSQL copies the bytes as they are, in one ``COPY``; SQLite inserts the
        unpacked tuples."""
        if not any(chunks):
            return
        dbapi: Any = self.conn.connection.dbapi_connection
        if self.dialect == "postgresql":
            copy_sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
            with dbapi.cursor() as cursor, cursor.copy(copy_sql) as copy:
                copy.write(SIGNATURE)
                for chunk in chunks:
                    copy.write(chunk)
                copy.write(TRAILER)
            return
        for chunk in chunks:
            self.insert(table, columns, unpack(chunk, kinds))

    def close_versions(self, table: str, chain_id: int, closes: Sequence[tuple[int, int]]) -> None:
        """Set ``valid_to`` of versions ``(row_id, valid_to)`` of ``chain_id``."""
        if not closes:
            return
        dbapi: Any = self.conn.connection.dbapi_connection
        if self.dialect == "postgresql":
            with dbapi.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} AS t SET valid_to = v.valid_to "
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS v(row_id, valid_to) "
                    "WHERE t.chain_id = %s AND t.row_id = v.row_id",
                    ([r for r, _ in closes], [b for _, b in closes], chain_id),
                )
            return
        cursor = dbapi.cursor()
        try:
            cursor.executemany(
                f"UPDATE {table} SET valid_to = ? WHERE chain_id = ? AND row_id = ?",
                [(valid_to, chain_id, row_id) for row_id, valid_to in closes],
            )
        finally:
            cursor.close()


@functools.cache
def _int256_columns(table: str) -> frozenset[str]:
    """The :class:`Int256` columns of ``table`` (decimal text on SQLite)."""
    return frozenset(c.name for c in metadata.tables[table].columns if isinstance(c.type, Int256))


# PostgreSQL's binary COPY format of each column type the indexer writes.
_COPY_TYPES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (Int256, "numeric"),
    (BigInteger, "int8"),
    (Integer, "int4"),
    (Boolean, "bool"),
    (Float, "float8"),
    (LargeBinary, "bytea"),
    (String, "text"),
)


@functools.cache
def _copy_types(table: str, columns: tuple[str, ...]) -> list[str]:
    """The binary COPY type of each of ``columns`` of ``table``."""
    found = metadata.tables[table].columns
    return [
        next(name for kind, name in _COPY_TYPES if isinstance(found[column].type, kind))
        for column in columns
    ]


def _stringify(row: Sequence[Any], indexes: list[int]) -> tuple[Any, ...]:
    values = list(row)
    for i in indexes:
        if values[i] is not None:
            values[i] = str(values[i])
    return tuple(values)


def rollback(conn: Connection, chain_id: int, block: int) -> int:
    """Remove everything ``chain_id`` indexed above ``block``; returns raw events removed.

    Versioned tables: versions born above ``block`` go, versions closed above it are
    current again. Facts, raw events and the ledger above ``block`` go. The caller moves
    the cursor in the same transaction.
    """
    params = {"chain": chain_id, "block": block}
    for model in VERSIONED_TABLES:
        name = model.__tablename__
        conn.execute(
            text(f"DELETE FROM {name} WHERE chain_id = :chain AND valid_from > :block"), params
        )
        conn.execute(
            text(
                f"UPDATE {name} SET valid_to = NULL WHERE chain_id = :chain AND valid_to > :block"
            ),
            params,
        )
    for model in APPEND_ONLY_TABLES:
        conn.execute(
            text(
                f"DELETE FROM {model.__tablename__} "
                "WHERE chain_id = :chain AND block_number > :block"
            ),
            params,
        )
    conn.execute(text("DELETE FROM block WHERE chain_id = :chain AND number > :block"), params)
    removed = conn.execute(
        text("DELETE FROM raw_event WHERE chain_id = :chain AND block_number > :block"), params
    )
    return int(removed.rowcount or 0)


def reset_chain(conn: Connection, chain_id: int) -> None:
    """Forget everything about ``chain_id`` (a node restarted with a new genesis)."""
    rollback(conn, chain_id, -1)
    for name in ("cursor", "reorg", "chain"):
        conn.execute(text(f"DELETE FROM {name} WHERE chain_id = :chain"), {"chain": chain_id})


def describe(error: BaseException) -> str:
    """A one-line description of a database error for log lines and pause reasons."""
    orig = getattr(error, "orig", None)
    return str(orig or error).splitlines()[0]
