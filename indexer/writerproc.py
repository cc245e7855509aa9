"""A chain's write transactions in a process of their own, for large backfills.

One Python process runs fetching, decoding and deriving on one core (the GIL), and
committing rows adds about half as much again on SQLite, whose work runs in the
committing process, and the driver's binary COPY encoding on PostgreSQL. During a bulk
backfill (:class:`indexer.writer.BulkLoad`) a :class:`WriterProcess` takes the commits:
the indexer sends each group of prepared ranges (:class:`indexer.writer.RangeRows`)
through a pipe while it prepares the next ranges on its own core, and hands over the
next group before it reads the answer for the previous one, so the child never waits for
it. A group travels pickled: its raw events are one bytes object
(:mod:`indexer.copyrows`), and its derived rows share their strings (accounts, tokens,
protocols), which pickle's memo sends once: unpickling took 1.1-1.4 µs per event with
the memo against 2.0-2.3 without it. Order, grouping and the one-transaction rule do
not change: the child runs :func:`indexer.writer.write_ranges` in one transaction per
group, in the order sent, and answers each only after its commit; after a failed group
it commits no later one.

Invariants:

- The child never outlives the indexer: it asks the kernel for ``SIGKILL`` when its parent
  dies (``PR_SET_PDEATHSIG``) and checks the parent is still the one that started it, so a
  ``kill -9`` of the indexer ends it at once, committed or rolled back as a whole; a
  restarted indexer never meets a late commit.
- A failed or dead child is a :class:`~indexer.exceptions.StoreError` in the indexer (the
  runner restarts the chain from the store); the child is stopped either way.
- The child writes only while the indexer holds the chain's writer lock (PostgreSQL): each
  of its transactions checks the indexer's lock session still holds it
  (:func:`indexer.writerlock.check_writer`), besides the cursor's compare-and-set.
- Start it from the thread that lives as long as it (the event loop's): ``PR_SET_PDEATHSIG``
  follows the thread that started the child.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
from multiprocessing.connection import Connection as Pipe
from typing import Any

from chains.lifetime import pdeathsig_hook
from indexer.exceptions import StoreError
from indexer.store import describe, open_store
from indexer.writer import RangeRows, write_ranges

__all__ = ["WriterProcess"]

_READY = "ready"
_START_TIMEOUT_S = 120.0


class WriterProcess:
    """One chain's commits in a child process (module docstring)."""

    def __init__(
        self, database_url: str, chain_id: int, lock: tuple[int, int] | None = None
    ) -> None:
        """``lock``: the indexer's writer lock (:meth:`indexer.writerlock.Writers.held`),
        which each of the child's transactions checks is still held."""
        self.chain_id = chain_id
        context = multiprocessing.get_context("spawn")  # never fork a threaded process
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(database_url, chain_id, child_end, os.getpid(), lock),
            name=f"rtrm-writer-{chain_id}",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        self._ready = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def wait_ready(self) -> None:
        """Block until the child has opened the store (blocking: call from a thread)."""
        if self._ready:
            return
        if not self._pipe.poll(_START_TIMEOUT_S):
            self.close()
            raise StoreError(f"chain {self.chain_id}: the writer process did not start")
        self._answer(_READY)
        self._ready = True

    def write(self, group: list[RangeRows]) -> None:
        """Commit ``group`` in one transaction in the child; returns after the commit.
        Blocking: call it from a thread."""
        self.send(group)
        self.wait()

    def send(self, group: list[RangeRows]) -> None:
        """Hand ``group`` to the child, which commits it in one transaction after the
        groups sent before it; :meth:`wait` reads the answers, in order. Blocking until the
        child has taken the message (a large one waits for the group before it)."""
        self.wait_ready()
        try:
            self._pipe.send_bytes(pickle.dumps(group, pickle.HIGHEST_PROTOCOL))
        except OSError:
            self.close()
            raise StoreError(self._died()) from None

    def wait(self) -> None:
        """Return once the oldest group sent and not yet answered is committed; a
        :class:`StoreError` if it failed (the child then commits no later group)."""
        self._answer(None)

    def _answer(self, expected: str | None) -> None:
        """Read the child's reply: ``expected``, or the description of its failure."""
        try:
            reply = self._pipe.recv()
        except (EOFError, OSError):
            self.close()
            raise StoreError(self._died()) from None
        if reply != expected:
            self.close()
            raise StoreError(f"chain {self.chain_id}: the writer process failed: {reply}")

    def _died(self) -> str:
        self._process.join(timeout=5)
        return (
            f"chain {self.chain_id}: the writer process died (exit code "
            f"{self._process.exitcode}); the chain restarts from the store"
        )

    def close(self) -> None:
        """Stop the child (after its current transaction) and wait for it; idempotent."""
        with contextlib.suppress(OSError):
            self._pipe.send_bytes(b"")
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._pipe.close()


def _serve(
    database_url: str, chain_id: int, pipe: Pipe, parent: int, lock: tuple[int, int] | None
) -> None:
    """The child: commit each group received, in order, until an empty message or EOF;
    after a failed group, take the groups already sent and commit none of them (the
    indexer stops this process when it reads the failure)."""
    _die_with(parent)
    store = open_store(database_url, migrate=False)
    if lock is not None:
        store.writers.adopt(chain_id, lock)
    failed = False
    try:
        pipe.send(_READY)
        while True:
            try:
                message = pipe.recv_bytes()
            except EOFError:
                return
            if not message:
                return
            if failed:
                continue
            group: list[RangeRows] = pickle.loads(message)
            reply: Any = None
            try:
                with store.transaction() as conn:
                    write_ranges(conn, chain_id, group)
            except Exception as exc:  # the indexer decides; this process only reports
                reply, failed = describe(exc), True
            pipe.send(reply)
    finally:
        store.dispose()


def _die_with(parent: int) -> None:
    """Be killed when ``parent`` dies; exit now if it already has. Ctrl-C (SIGINT to the
    terminal's process group) is the indexer's to handle: it stops between ranges and then
    closes this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hook = pdeathsig_hook(parent)
    if hook is not None:
        hook()
