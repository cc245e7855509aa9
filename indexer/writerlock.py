"""One writer per chain on PostgreSQL: a session advisory lock, checked at every write.

A chain's writer holds the advisory lock ``(namespace, chain id)`` on a connection of its
own (:func:`acquire`) for as long as it writes. The namespace is the store's, a hash of
its schema (``current_schema()``): two processes writing one store exclude each other,
while stores in different schemas of one database (two deployments, parallel test runs)
never do. Advisory locks are per database already.

A lock can vanish behind its holder's back (the session killed, the database restarted,
an idle timeout), so each write transaction checks its session still holds it
(:func:`check_writer`). :func:`other_writers` counts the writer sessions of other
processes on the same store: a backfill drops the shared indexes only when there are none
(:mod:`indexer.deferral`).

SQLite needs none of this: a database file has one writer at a time, and the store
serialises its own process's write transactions.
"""

from __future__ import annotations

import zlib

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from indexer.exceptions import WriterLockedError, WriterLostError

__all__ = ["WriterLock", "Writers", "acquire", "check_writer", "namespace", "other_writers"]


class Writers:
    """A store's writer-lock sessions: its namespace (PostgreSQL, once known) and the
    backend pid of each chain's lock session. Write transactions carry it in their
    execution options (``rtrm_writers``) for :func:`check_writer`."""

    def __init__(self) -> None:
        self.namespace: int | None = None
        self.pids: dict[int, int] = {}

    def held(self, chain_id: int) -> tuple[int, int] | None:
        """The namespace and session pid of the lock this store holds on ``chain_id``,
        for :meth:`adopt` in another process (None: it holds none)."""
        pid = self.pids.get(chain_id)
        return None if pid is None or self.namespace is None else (self.namespace, pid)

    def adopt(self, chain_id: int, held: tuple[int, int]) -> None:
        """Check, in this store's write transactions of ``chain_id``, the lock another
        process's session holds (a bulk backfill's writer process checks its indexer's)."""
        self.namespace, self.pids[chain_id] = held

    def namespace_of(self, conn: Connection) -> int:
        """The store's lock namespace (read once per store)."""
        if self.namespace is None:
            self.namespace = namespace(conn)
        return self.namespace


class WriterLock:
    """A held single-writer lock; :meth:`release` is idempotent.

    ``pid`` is the backend pid of the session holding it (PostgreSQL; None on SQLite)."""

    def __init__(
        self,
        conn: Connection | None,
        chain_id: int,
        pid: int | None = None,
        writers: Writers | None = None,
    ) -> None:
        self._conn = conn
        self.chain_id = chain_id
        self.pid = pid
        self._writers = writers

    def held(self) -> bool:
        """Whether the lock's session is alive and still holds it (SQLite: always)."""
        conn, writers = self._conn, self._writers
        if conn is None or writers is None:
            return self.pid is None
        try:
            found = conn.execute(_HELD, _params(writers, self.chain_id, pid=self.pid)).first()
            conn.commit()
        except SQLAlchemyError:  # the session is gone
            return False
        return found is not None

    def release(self) -> None:
        writers = self._writers
        if writers is not None and writers.pids.get(self.chain_id) == self.pid:
            del writers.pids[self.chain_id]  # this store writes the chain no more
        conn, self._conn = self._conn, None
        if conn is None or writers is None:
            return
        try:
            key = _params(writers, self.chain_id)
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :chain)"), key)
            conn.commit()
        except SQLAlchemyError:  # the session already ended: so did its lock
            conn.invalidate()
        finally:
            conn.close()  # closing the session releases the lock in any case


def acquire(engine: Engine, writers: Writers, chain_id: int, where: str) -> WriterLock:
    """Take the writer lock of ``chain_id`` on a connection of its own (PostgreSQL), or
    raise :class:`WriterLockedError` at once if another session holds it."""
    conn = engine.connect()
    try:
        writers.namespace_of(conn)
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(:ns, :chain)"), _params(writers, chain_id)
        ).scalar()
        pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        conn.commit()
    except BaseException:
        conn.close()
        raise
    if not got:
        conn.close()
        raise WriterLockedError(
            f"chain {chain_id}: another indexer holds its writer lock on {where}; "
            "run one `rtrm index --chain` per chain (stop the other one first)"
        )
    writers.pids[chain_id] = pid
    return WriterLock(conn, chain_id, pid, writers)


def check_writer(conn: Connection, chain_id: int) -> None:
    """In a write transaction of ``chain_id``: raise :class:`WriterLostError` (the caller
    rolls back) if this store holds the chain's writer lock and its session no longer does
    — it was killed, the database restarted or timed it out, and another indexer may
    already write the chain. A bulk backfill's writer process checks its indexer's lock
    (:meth:`Writers.adopt`). A no-op on SQLite and for stores that hold no lock."""
    writers: Writers | None = conn.get_execution_options().get("rtrm_writers")
    pid = writers.pids.get(chain_id) if writers is not None else None
    if writers is None or pid is None:
        return
    if conn.execute(_HELD, _params(writers, chain_id, pid=pid)).first() is None:
        raise WriterLostError(
            f"chain {chain_id}: this indexer lost its writer lock (its database session "
            f"{pid} ended: killed, a database restart or an idle timeout); nothing written, "
            "another indexer may write the chain now"
        )


def other_writers(conn: Connection, writers: Writers) -> int:
    """How many sessions of other processes hold a writer lock on this store (PostgreSQL)."""
    found = conn.execute(
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 2 AND classid = CAST(:ns AS bigint) & 4294967295 "
            "AND NOT (pid = ANY(CAST(:ours AS int[])))"
        ),
        {"ns": writers.namespace_of(conn), "ours": list(writers.pids.values())},
    ).scalar_one()
    return int(found)


def namespace(conn: Connection) -> int:
    """The lock namespace of the store ``conn`` reads: its schema's name, hashed into
    PostgreSQL's signed 32-bit key space."""
    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    return _signed32(zlib.crc32(f"rtrm:{schema}".encode()))


# The lock (namespace, chain) as pg_locks shows a two-key advisory lock: classid, objid,
# objsubid 2; oids are unsigned, the keys signed.
_HELD = text(
    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = :pid AND granted "
    "AND classid = CAST(:ns AS bigint) & 4294967295 AND objid = CAST(:chain AS bigint) "
    "& 4294967295 AND objsubid = 2"
)


def _params(writers: Writers, chain_id: int, **holder: int | None) -> dict[str, int | None]:
    """The lock's keys (namespace, chain), and for ``_HELD`` its holder's pid."""
    assert writers.namespace is not None, "the namespace is read when a lock is taken"
    return {"ns": writers.namespace, "chain": _signed32(chain_id), **holder}


def _signed32(value: int) -> int:
    """Fold ``value`` into PostgreSQL's signed 32-bit advisory-lock key space."""
    folded = value % (1 << 32)
    return folded - (1 << 32) if folded >= 1 << 31 else folded
