"""The API's snapshot cache: loaded when the watermark moves, never per request.

Concept: requests read a :class:`~aggregation.snapshot.Snapshot` held in memory. A refresh
is started when the store's watermark moves -- told by the in-process indexers
(:meth:`SnapshotCache.kick`, from ``run_indexers``' ``on_batch``) or found by polling the
store every ``poll_s`` -- and runs in a worker thread while requests keep being answered
from the snapshot in hand; the new one is swapped in whole. Every answer carries the
watermark of the snapshot it came from, so an answer is never a mix of two cuts.

Incremental refresh: between the cached cut and the new watermark, if no market data
changed (oracle rounds, vol slices, funding, protocol parameters, option series and
settlements) and no reorg happened, only the accounts whose rows changed are loaded
(``load_snapshot(users=...)``, O(their positions)) into an *overlay*: those users' risk
comes from the overlay (at the new watermark), everybody else's from the base snapshot,
whose positions did not change (its "now", the block time, is older: option decay of the
last blocks is not in it until the next full load). Market data, a reorg, more touched
users than ``incremental_fraction`` of the book, a request for a full refresh
(:meth:`SnapshotCache.refresh`, the scheduler's periodic full recompute) or an overlay
older than ``full_every_s`` load everything again and drop the overlay.

Results computed from a snapshot (reports, exposure, stress runs) are memoised on its
:class:`Entry`, so they are computed once per snapshot and forgotten with it. Work that
every request on a snapshot shares (e.g. the tail-risk scenarios of every cold risk
report) is *prepared* on the entry (:meth:`Entry.prepared`): started in a worker thread
by the first request that wants it, kept outside the LRU memo, and used by the requests
that come once it is ready; until then they take their own, slower path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, text

from aggregation.loader import SnapshotChangedError
from aggregation.snapshot import Snapshot
from api.metrics import ApiMetrics
from chains.spec import Registry
from indexer.status import watermark as stored_watermark
from indexer.store import Store

__all__ = ["Entry", "Loader", "SnapshotCache"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MARKET_TABLES = (
    "oracle_price",
    "vol_update",
    "funding_update",
    "protocol_param",
    "option_series",
    "series_settlement",
)
_VERSIONED_TABLES = ("account_balance", "option_position", "perp_position")
_RETRIES = 3


class Loader(Protocol):
    """``aggregation.loader.load_snapshot``'s signature (a seam for tests)."""

    def __call__(
        self,
        conn: Connection,
        registry: Registry,
        watermark: Mapping[int, int] | None = None,
        *,
        users: Sequence[str] | None = None,
    ) -> Snapshot: ...


@dataclass(slots=True, eq=False)
class Entry:
    """A snapshot and what was computed from it (bounded LRU memo)."""

    snapshot: Snapshot
    loaded_s: float
    memo_size: int = 20_000
    memo: OrderedDict[Hashable, Any] = field(default_factory=OrderedDict)
    preparing: dict[Hashable, asyncio.Future[Any]] = field(default_factory=dict)

    def remembered(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` once per key on this snapshot (the least recent key is dropped)."""
        try:
            value: T = self.memo[key]
        except KeyError:
            value = self.memo[key] = compute()
            if len(self.memo) > self.memo_size:
                self.memo.popitem(last=False)
            return value
        self.memo.move_to_end(key)
        return value

    async def computed(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` once per key, in a worker thread; concurrent callers share it."""
        task: asyncio.Future[T] | None = self.memo.get(key)
        if task is None:
            task = asyncio.get_running_loop().run_in_executor(None, compute)
            self.memo[key] = task
        try:
            return await asyncio.shield(task)
        except Exception:
            if self.memo.get(key) is task:
                del self.memo[key]  # a failure is not remembered: the next call tries again
            raise

    def prepared(self, key: Hashable, prepare: Callable[[], T]) -> T | None:
        """``prepare()``'s result once it is ready, else None (loop thread only).

        The first call starts ``prepare`` in a worker thread; callers meanwhile get None
        and compute what they need on their own. A failure is logged and not retried on
        this snapshot (the next snapshot tries again): requests keep their own path.
        """
        future = self.preparing.get(key)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(None, prepare)
            future.add_done_callback(functools.partial(_log_failure, key))
            self.preparing[key] = future
            return None
        if not future.done() or future.cancelled() or future.exception() is not None:
            return None
        result: T = future.result()
        return result


def _log_failure(key: Hashable, future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("preparing %r failed: %s: %s", key, type(exc).__name__, exc)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one refresh loads: everything, or the listed users at ``watermark``."""

    watermark: dict[int, int]
    users: tuple[str, ...] | None
    reorgs: int


class SnapshotCache:
    """The current snapshot and its overlay (module docstring)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        loader: Loader,
        metrics: ApiMetrics | None = None,
        poll_s: float | None = 0.5,
        full_every_s: float = 10.0,
        incremental_fraction: float = 0.05,
        memo_size: int = 20_000,
    ) -> None:
        self.store = store
        self.registry = registry
        self.loader = loader
        self.metrics = metrics
        self.poll_s = poll_s
        self.full_every_s = full_every_s
        self.incremental_fraction = incremental_fraction
        self.memo_size = memo_size
        self.base: Entry | None = None
        self.overlay: dict[str, Entry] = {}
        self._overlay_since: float | None = None
        self._reorgs = 0
        self._watermark: dict[int, int] = {}
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()
        self._want_full = False
        self._task: asyncio.Task[None] | None = None
        self._polled_s = 0.0
        self._first: asyncio.Future[Entry] | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------------ reading
    @property
    def watermark(self) -> dict[int, int]:
        """The newest cut in memory (the overlay's when there is one)."""
        return dict(self._watermark)

    async def entry(self) -> Entry:
        """The base snapshot (loaded now if nothing is loaded yet)."""
        if self.base is None:
            return await self._load_first()
        self._maybe_poll()
        return self.base

    async def entry_for(self, address: str) -> Entry:
        """The snapshot that holds ``address``' newest positions (overlay, else base)."""
        base = await self.entry()
        return self.overlay.get(address, base)

    # ------------------------------------------------------------------ refreshing
    def kick(self, *_: object) -> None:
        """New blocks are in the store: refresh soon (``on_batch`` callback; loop thread)."""
        self._ensure_worker()
        self._wanted.set()

    def request_full(self) -> None:
        """Load everything on the next refresh (the scheduler's full recompute)."""
        self._want_full = True
        self.kick()

    async def refresh(self, *, full: bool = True) -> Entry:
        """Refresh now and return the base entry (full by default)."""
        if self.base is None:
            return await self._load_first()
        self._want_full = self._want_full or full
        await self._refresh_once()
        assert self.base is not None
        return self.base

    async def close(self) -> None:
        """Stop the background worker."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _ensure_worker(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._worker())

    def _maybe_poll(self) -> None:
        if self.poll_s is None:
            return
        now = time.monotonic()
        if now - self._polled_s >= self.poll_s:
            self._polled_s = now
            self.kick()

    async def _load_first(self) -> Entry:
        if self._first is None or (self._first.done() and self._first.exception() is not None):
            self._first = asyncio.ensure_future(self._first_load())
        return await asyncio.shield(self._first)

    async def _first_load(self) -> Entry:
        self._want_full = True
        await self._refresh_once()
        assert self.base is not None
        return self.base

    async def _worker(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self._refresh_once()
            except Exception as exc:  # the cache keeps serving the snapshot in hand
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "snapshot refresh failed, keeping watermark %s: %s", self._watermark, exc
                )
                await asyncio.sleep(1.0)

    async def _refresh_once(self) -> None:
        async with self._lock:  # one refresh at a time: the worker, the scheduler, a test
            await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        full = self._want_full or self.base is None
        if (
            not full
            and self._overlay_since is not None
            and time.monotonic() - self._overlay_since >= self.full_every_s
        ):
            full = True
        loop = asyncio.get_running_loop()
        for attempt in range(_RETRIES):
            try:
                result = await loop.run_in_executor(None, self._load, full)
                break
            except SnapshotChangedError:
                if attempt == _RETRIES - 1:
                    raise
                full = True
        if result is None:
            return
        plan, snapshot, seconds = result
        kind = "full" if plan.users is None else "users"
        if self.metrics is not None and snapshot is not None:
            self.metrics.reloads.labels(kind).inc()
            self.metrics.reload_seconds.labels(kind).observe(seconds)
        if snapshot is None:
            pass
        elif plan.users is None:
            entry = Entry(snapshot, time.monotonic(), self.memo_size)
            self.base, self.overlay, self._overlay_since = entry, {}, None
            self._want_full = False
            if self.metrics is not None:
                self.metrics.snapshot_users.set(snapshot.inputs.n_users)
        else:
            entry = Entry(snapshot, time.monotonic(), self.memo_size)
            self.overlay.update(dict.fromkeys(plan.users or (), entry))
            self._overlay_since = self._overlay_since or time.monotonic()
        self._watermark, self._reorgs = dict(plan.watermark), plan.reorgs
        self.last_error = None
        if self.metrics is not None:
            for chain_id, block in plan.watermark.items():
                self.metrics.snapshot_block.labels(str(chain_id)).set(block)
        log.debug("snapshot %s at %s in %.3f s", kind, plan.watermark, seconds)

    # ------------------------------------------------------------------ worker thread
    def _load(self, full: bool) -> tuple[_Plan, Snapshot | None, float] | None:
        started = time.perf_counter()
        with self.store.engine.connect() as conn:
            if self.store.dialect == "postgresql":  # one consistent read for every query
                conn.execution_options(isolation_level="REPEATABLE READ")
            configured = set(self.registry.chain_ids)
            cut = {c: b for c, b in stored_watermark(conn).items() if c in configured}
            reorgs = int(conn.execute(text("SELECT COUNT(*) FROM reorg")).scalar_one())
            if not full and cut == self._watermark and reorgs == self._reorgs:
                return None  # nothing new
            plan = self._plan(conn, cut, reorgs, full)
            snapshot = (
                None  # no account changed: nothing to load
                if plan.users == ()
                else self.loader(conn, self.registry, plan.watermark, users=plan.users)
            )
        return plan, snapshot, time.perf_counter() - started

    def _plan(self, conn: Connection, cut: dict[int, int], reorgs: int, full: bool) -> _Plan:
        everything = _Plan(cut, None, reorgs)
        old = self._watermark
        if full or self.base is None or reorgs != self._reorgs or set(cut) != set(old):
            return everything
        ranges = {c: (old[c], b) for c, b in cut.items() if b != old[c]}
        if any(b < a for a, b in ranges.values()):
            return everything  # a chain went back: a rollback
        for chain_id, (after, upto) in ranges.items():
            for table in _MARKET_TABLES:
                hit = conn.execute(
                    text(
                        f"SELECT 1 FROM {table} WHERE chain_id = :c AND block_number > :a "
                        "AND block_number <= :b LIMIT 1"
                    ),
                    {"c": chain_id, "a": after, "b": upto},
                ).first()
                if hit is not None:
                    return everything
        touched: set[str] = set()
        for chain_id, (after, upto) in ranges.items():
            for table in _VERSIONED_TABLES:
                rows = conn.execute(
                    text(
                        f"SELECT DISTINCT account FROM {table} WHERE chain_id = :c AND "
                        "((valid_from > :a AND valid_from <= :b) OR "
                        "(valid_to > :a AND valid_to <= :b))"
                    ),
                    {"c": chain_id, "a": after, "b": upto},
                )
                touched.update(str(account) for (account,) in rows)
        limit = max(64.0, self.incremental_fraction * self.base.snapshot.inputs.n_users)
        if len(touched) + len(self.overlay) > limit:
            return everything
        # users touched earlier are loaded again at the new cut, so the overlay is one cut
        return _Plan(cut, tuple(sorted(touched | set(self.overlay))), reorgs)
