"""The API's snapshot cache: loaded when the watermark moves, never per request.

Concept: requests read a :class:`~aggregation.snapshot.Snapshot` held in memory. A refresh
is started when the store's watermark moves -- told by the in-process indexers
(:meth:`SnapshotCache.kick`, from ``run_indexers``' ``on_batch``) or found by polling the
store every ``poll_s`` -- and runs in a worker thread while requests keep being answered
from the snapshots in hand; a new one is swapped in whole. Every answer carries the
watermark of the snapshot it came from, so an answer is never a mix of two cuts.

Two lanes, so that a block is reflected without waiting for a full load:

- the *fast lane* (one refresh at a time) follows the store's watermark. Between its cut
  and the new watermark it loads only the accounts whose rows changed
  (``load_snapshot(users=...)``, O(their positions)) into an *overlay* entry at the new
  cut: those users' risk comes from the overlay, everybody else's from the *base*
  snapshot or from the overlay entry that last loaded them. A user's answer is therefore
  at a cut that includes every block of the lane's watermark that touched that user; its
  market data and "now" (block time) may be older (option decay, prices: until the next
  full load). Each refresh loads only its touched users: an overlay entry stays valid
  until a base at least as new replaces it;
- the *full lane* (one full load at a time, in the background) loads everything at a cut
  W0 the fast lane has already reached, while the fast lane keeps going. When it is done
  it becomes the base, and overlay entries at cuts W0 includes are dropped; users touched
  after W0 keep their overlay entries (their newer cut). The lane's cuts only move forward
  (a rollback goes through the fast lane, below), so every overlay cut is either within
  W0 or after it, and no user's answer goes back in watermark. A full load is started
  when market data moved (oracle rounds, vol slices, funding, protocol parameters, option
  series and settlements: positions are unchanged but every mark is, and the snapshot
  keeps only the marked arrays, not the raw rows they came from, so repricing means
  loading again), when the overlay is older than ``full_every_s`` or holds more than
  ``incremental_fraction`` of the book, on :meth:`SnapshotCache.request_full`, and by
  :meth:`SnapshotCache.refresh` (the scheduler's periodic full recompute), which waits
  for it. A result whose cut a reorg may have changed is dropped.

Each lane loads in a worker thread of its own, so neither waits for the other, for the
indexers' commits or for the requests' work in the loop's default executor.

The fast lane itself loads everything (requests meanwhile see the snapshots in hand, and
later blocks wait) only when nothing is loaded yet, after a reorg (the ``reorg`` table
grew, or a chain went back: a rollback), when the set of chains changed, or when one
refresh touched more than ``incremental_fraction`` of the book (loading them would cost
about as much); this new base replaces the overlay and any full load in flight.

Results computed from a snapshot (reports, exposure, stress runs) are memoised on its
:class:`Entry`, so they are computed once per snapshot and forgotten with it. Work that
every request on a snapshot shares (e.g. the tail-risk scenarios of every cold risk
report) is *prepared* on the entry (:meth:`Entry.prepared`): started in a worker thread
by the first request that wants it, kept outside the LRU memo, and used by the requests
that come once it is ready; until then they take their own, slower path. Metrics: loads
and their seconds by kind (``full``: either lane; ``users``: the fast lane's overlay),
users in the base, and the fast lane's watermark per chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    """What one fast-lane refresh loads: everything, or the listed users at ``watermark``
    (``market``: market data moved since the lane's last cut, the base needs a full load)."""

    watermark: dict[int, int]
    users: tuple[str, ...] | None
    reorgs: int
    market: bool = False


def _includes(cut: Mapping[int, int], other: Mapping[int, int]) -> bool:
    """Whether ``cut`` includes every block of ``other`` (each of its chains, as far)."""
    return all(chain_id in cut and cut[chain_id] >= block for chain_id, block in other.items())


class SnapshotCache:
    """The base snapshot, its overlay and the two lanes that refresh them (module docstring)."""

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
        self._lock = asyncio.Lock()  # the fast lane: one refresh at a time
        self._task: asyncio.Task[None] | None = None
        self._polled_s = 0.0
        self._first: asyncio.Future[Entry] | None = None
        self.last_error: str | None = None
        # the full lane
        self._full_wanted = asyncio.Event()
        self._full_task: asyncio.Task[None] | None = None
        self._full_busy = False
        self._stale = False  # the base's market data is behind the lane's cut, or asked for
        self._full_waiters: list[asyncio.Future[None]] = []
        self._generation = 0  # bumped by every base the fast lane installs
        # a thread per lane: neither queues behind the other, the indexers' commits or
        # the requests' work in the loop's default executor
        self._fast_thread = ThreadPoolExecutor(1, thread_name_prefix="snapshot-fast")
        self._full_thread = ThreadPoolExecutor(1, thread_name_prefix="snapshot-full")

    # ------------------------------------------------------------------ reading
    @property
    def watermark(self) -> dict[int, int]:
        """The fast lane's cut: every block up to it is reflected for the users it touched."""
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
        """Load everything in the background once the fast lane has caught up."""
        self._stale = True
        self.kick()

    async def refresh(self, *, full: bool = True) -> Entry:
        """Refresh now and return the base entry; ``full`` also waits for a full load at
        the cut the fast lane reached (the scheduler's full recompute)."""
        if self.base is None:
            return await self._load_first()
        await self._refresh_once()
        if full:
            waiter = asyncio.get_running_loop().create_future()
            self._full_waiters.append(waiter)  # after the fast lane: a full load from now on
            self._want_full_load()
            await waiter
        assert self.base is not None
        return self.base

    async def close(self) -> None:
        """Stop both lanes (a load in flight ends in its thread, unused)."""
        for name in ("_task", "_full_task"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        waiters, self._full_waiters = self._full_waiters, []
        for waiter in waiters:
            waiter.cancel()
        for executor in (self._fast_thread, self._full_thread):
            executor.shutdown(wait=False, cancel_futures=True)

    def _ensure_worker(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._worker())

    def _want_full_load(self) -> None:
        if self._full_task is None or self._full_task.done():
            self._full_task = asyncio.get_running_loop().create_task(self._full_worker())
        self._full_wanted.set()

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
        await self._refresh_once()  # without a base, the fast lane loads everything
        assert self.base is not None
        return self.base

    async def _worker(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self._refresh_once()
            except Exception as exc:  # the cache keeps serving the snapshots in hand
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "snapshot refresh failed, keeping watermark %s: %s", self._watermark, exc
                )
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ the fast lane
    async def _refresh_once(self) -> None:
        async with self._lock:  # the worker, the full lane after a reorg, a test
            await self._refresh_locked()

    async def _refresh_locked(self) -> None:
        loop = asyncio.get_running_loop()
        everything = self.base is None
        for attempt in range(_RETRIES):
            try:
                result = await loop.run_in_executor(self._fast_thread, self._load, everything)
                break
            except SnapshotChangedError:
                if attempt == _RETRIES - 1:
                    raise
                everything = True
        if result is not None:
            self._apply(*result)
        aged = (
            self._overlay_since is not None
            and time.monotonic() - self._overlay_since >= self.full_every_s
        )
        if self._stale or (not self._full_busy and (aged or len(self.overlay) > self._limit())):
            self._want_full_load()

    def _apply(self, plan: _Plan, snapshot: Snapshot | None, seconds: float) -> None:
        """Install one fast-lane refresh (loop thread, under the lock)."""
        kind = "full" if plan.users is None else "users"
        if snapshot is not None:
            self._observe(kind, seconds)
            if plan.users is None:
                self._generation += 1  # a full load in flight is older: it is dropped
                self.overlay = {}  # all within the new cut, or rolled back
                self._install_base(snapshot, plan.watermark)
                self._stale = False
            else:
                entry = Entry(snapshot, time.monotonic(), self.memo_size)
                self.overlay.update(dict.fromkeys(plan.users, entry))
                self._overlay_since = self._overlay_since or entry.loaded_s
        self._stale = self._stale or plan.market
        self._watermark, self._reorgs = dict(plan.watermark), plan.reorgs
        self.last_error = None
        if self.metrics is not None:
            for chain_id, block in plan.watermark.items():
                self.metrics.snapshot_block.labels(str(chain_id)).set(block)
        log.debug("snapshot %s at %s in %.3f s", kind, plan.watermark, seconds)

    def _install_base(self, snapshot: Snapshot, cut: Mapping[int, int]) -> None:
        """``snapshot`` (everything at ``cut``) becomes the base; overlay entries ``cut``
        includes are dropped, newer ones kept (loop thread)."""
        self.base = Entry(snapshot, time.monotonic(), self.memo_size)
        self.overlay = {
            user: entry
            for user, entry in self.overlay.items()
            if not _includes(cut, entry.snapshot.watermark)
        }
        kept = {id(entry): entry.loaded_s for entry in self.overlay.values()}
        self._overlay_since = min(kept.values(), default=None)
        if self.metrics is not None:
            self.metrics.snapshot_users.set(snapshot.inputs.n_users)

    def _observe(self, kind: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(kind).inc()
            self.metrics.reload_seconds.labels(kind).observe(seconds)

    def _limit(self) -> float:
        users = 0 if self.base is None else self.base.snapshot.inputs.n_users
        return max(64.0, self.incremental_fraction * users)

    # ------------------------------------------------------------------ the full lane
    async def _full_worker(self) -> None:
        while True:
            await self._full_wanted.wait()
            self._full_wanted.clear()
            self._stale = False
            waiters, self._full_waiters = self._full_waiters, []
            self._full_busy = True
            try:
                await self._full_load()
            except Exception as exc:  # the base in hand stays; tried again in a second
                self._stale = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("full snapshot load failed, keeping the base: %s", exc)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                await asyncio.sleep(1.0)
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
            finally:
                self._full_busy = False
            if self._stale:
                self._full_wanted.set()

    async def _full_load(self) -> None:
        """Everything at the fast lane's cut, in a worker thread; then the swap."""
        cut, reorgs, generation = dict(self._watermark), self._reorgs, self._generation
        loop = asyncio.get_running_loop()
        try:
            snapshot, seconds = await loop.run_in_executor(
                self._full_thread, self._load_all, cut, reorgs
            )
        except SnapshotChangedError:
            log.info("full load at %s dropped: a reorg; the fast lane loads everything", cut)
            await self._refresh_once()  # it sees the reorg and installs a new base
            return
        self._observe("full", seconds)
        if generation != self._generation:
            log.debug("full load at %s dropped: the fast lane installed a newer base", cut)
            return
        self._install_base(snapshot, cut)
        log.debug("snapshot full (background) at %s in %.3f s", cut, seconds)

    # ------------------------------------------------------------------ worker threads
    def _connect(self) -> Connection:
        conn = self.store.engine.connect()
        if self.store.dialect == "postgresql":  # one consistent read for every query
            conn.execution_options(isolation_level="REPEATABLE READ")
        return conn

    def _load_all(self, cut: dict[int, int], reorgs: int) -> tuple[Snapshot, float]:
        """Every user at ``cut``, a cut the fast lane reached with ``reorgs`` reorgs."""
        started = time.perf_counter()
        with self._connect() as conn:
            if int(conn.execute(text("SELECT COUNT(*) FROM reorg")).scalar_one()) != reorgs:
                raise SnapshotChangedError(f"a reorg since the cut {cut} was reached")
            snapshot = self.loader(conn, self.registry, cut)
        return snapshot, time.perf_counter() - started

    def _load(self, everything: bool) -> tuple[_Plan, Snapshot | None, float] | None:
        started = time.perf_counter()
        with self._connect() as conn:
            configured = set(self.registry.chain_ids)
            cut = {c: b for c, b in stored_watermark(conn).items() if c in configured}
            reorgs = int(conn.execute(text("SELECT COUNT(*) FROM reorg")).scalar_one())
            if not everything and cut == self._watermark and reorgs == self._reorgs:
                return None  # nothing new
            plan = self._plan(conn, cut, reorgs, everything)
            snapshot = (
                None  # no account changed: nothing to load
                if plan.users == ()
                else self.loader(conn, self.registry, plan.watermark, users=plan.users)
            )
        return plan, snapshot, time.perf_counter() - started

    def _plan(self, conn: Connection, cut: dict[int, int], reorgs: int, everything: bool) -> _Plan:
        full = _Plan(cut, None, reorgs)
        old = self._watermark
        if everything or self.base is None or reorgs != self._reorgs or set(cut) != set(old):
            return full
        ranges = {c: (old[c], b) for c, b in cut.items() if b != old[c]}
        if any(b < a for a, b in ranges.values()):
            return full  # a chain went back: a rollback
        market = any(
            conn.execute(
                text(
                    f"SELECT 1 FROM {table} WHERE chain_id = :c AND block_number > :a "
                    "AND block_number <= :b LIMIT 1"
                ),
                {"c": chain_id, "a": after, "b": upto},
            ).first()
            is not None
            for chain_id, (after, upto) in ranges.items()
            for table in _MARKET_TABLES
        )
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
        if len(touched) > self._limit():
            return full
        return _Plan(cut, tuple(sorted(touched)), reorgs, market)
