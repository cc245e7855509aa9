"""The snapshot cache's two lanes, with a fake loader behind the ``Loader`` seam.

A real (SQLite) store holds the cursor, account rows, oracle rounds and reorgs the cache
plans from; the loader builds an empty-book :class:`~aggregation.snapshot.Snapshot` of the
accounts present at the cut, and can be held at a gate so that a full load stays in flight
while the test moves the store on.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, text

from aggregation.snapshot import ChainRows, Snapshot, build_snapshot
from api.metrics import ApiMetrics
from api.snapshots import SnapshotCache
from chains.spec import AssetSpec, ChainSpec, Registry
from chains.types import AssetId, ChainId
from indexer.store import Store, open_store

CHAINS = (1, 10)
PROTOCOL = to_checksum_address("0x" + "11" * 20)
ASSET = to_checksum_address("0x" + "22" * 20)
FEED = to_checksum_address("0x" + "33" * 20)
USERS = tuple(to_checksum_address(f"0x{0xA000 + i:040x}") for i in range(70))
ALICE, BOB, CAROL = USERS[:3]


def _registry() -> Registry:
    specs = tuple(ChainSpec(ChainId(c), f"c{c}", ("http://127.0.0.1:1",), 0, 1.0) for c in CHAINS)
    return Registry(chains=specs, assets=(AssetSpec(AssetId("ETH"), "Ether"),))


class FakeStore:
    """Writes what the indexers would: cursors, balance versions, oracle rounds, reorgs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.blocks = dict.fromkeys(CHAINS, 0)
        self.row = 0
        with store.transaction() as conn:
            for chain in CHAINS:
                conn.execute(
                    text("INSERT INTO cursor VALUES (:c, 0, :h)"), {"c": chain, "h": _hash(0)}
                )
            for user in USERS:
                self._balance(conn, CHAINS[0], user, 0)

    def _balance(self, conn: Connection, chain: int, user: str, block: int) -> None:
        conn.execute(
            text(
                "UPDATE account_balance SET valid_to = :b WHERE chain_id = :c AND account = :a "
                "AND valid_to IS NULL"
            ),
            {"c": chain, "a": user, "b": block},
        )
        self.row += 1
        conn.execute(
            text(
                "INSERT INTO account_balance (chain_id, row_id, protocol, account, valid_from, "
                "valid_to, protocol_kind, kind, asset, amount) VALUES "
                "(:c, :r, :p, :a, :b, NULL, 'lending', 'collateral', :t, :n)"
            ),
            {"c": chain, "r": self.row, "p": PROTOCOL, "a": user, "b": block, "t": ASSET,
             "n": str(block + 1)},
        )  # fmt: skip

    def block(
        self, chain: int = CHAINS[0], *, touch: Sequence[str] = (), oracle: bool = False
    ) -> int:
        """One more indexed block on ``chain``, touching ``touch``, with an oracle round."""
        block = self.blocks[chain] = self.blocks[chain] + 1
        with self.store.transaction() as conn:
            for user in touch:
                self._balance(conn, chain, user, block)
            if oracle:
                conn.execute(
                    text(
                        "INSERT INTO oracle_price (chain_id, block_number, tx_hash, log_index, "
                        "feed, round_id, answer, updated_at) VALUES (:c, :b, :h, 0, :f, :b, "
                        "200000000000, :b)"
                    ),
                    {"c": chain, "b": block, "h": _hash(block), "f": FEED},
                )
            self._cursor(conn, chain, block)
        return block

    def _cursor(self, conn: Connection, chain: int, block: int) -> None:
        conn.execute(
            text("UPDATE cursor SET block_number = :b, block_hash = :h WHERE chain_id = :c"),
            {"c": chain, "b": block, "h": _hash(block)},
        )

    def reorg(self, chain: int, ancestor: int) -> None:
        """Roll ``chain`` back to ``ancestor`` (rows above it gone, one ``reorg`` row)."""
        with self.store.transaction() as conn:
            values = {"c": chain, "b": ancestor}
            for table in ("account_balance", "oracle_price"):
                column = "valid_from" if table == "account_balance" else "block_number"
                conn.execute(text(f"DELETE FROM {table} WHERE chain_id = :c AND {column} > :b"),
                             values)  # fmt: skip
            conn.execute(
                text("UPDATE account_balance SET valid_to = NULL WHERE chain_id = :c "
                     "AND valid_to > :b"), values,
            )  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO reorg (chain_id, ancestor, indexed, depth, old_hash, new_hash, "
                    "detected_at) VALUES (:c, :b, :i, :d, :h, :h, 0)"
                ),
                {**values, "i": self.blocks[chain], "d": self.blocks[chain] - ancestor,
                 "h": _hash(ancestor)},
            )  # fmt: skip
            self._cursor(conn, chain, ancestor)
        self.blocks[chain] = ancestor


def _hash(n: int) -> str:
    return f"0x{n:064x}"


class FakeLoader:
    """``load_snapshot`` over the fake store: the accounts present at the cut, no books.

    ``hold()`` makes the next full load (no ``users``) wait at a gate until ``release()``.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.calls: list[tuple[dict[int, int], tuple[str, ...] | None]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self._hold_next = False
        self.lock = threading.Lock()

    def hold(self) -> None:
        self.gate.clear()
        self.started.clear()
        self._hold_next = True

    def release(self) -> None:
        self.gate.set()

    def __call__(
        self,
        conn: Connection,
        registry: Registry,
        watermark: Mapping[int, int] | None = None,
        *,
        users: Sequence[str] | None = None,
    ) -> Snapshot:
        assert watermark is not None
        cut = dict(watermark)
        with self.lock:
            self.calls.append((cut, None if users is None else tuple(users)))
            held = self._hold_next and users is None
            self._hold_next = self._hold_next and not held
        if held:
            self.started.set()
            assert self.gate.wait(30)
        complete = users is None
        if users is None:
            found: set[str] = set()
            for chain, block in cut.items():
                accounts = conn.execute(
                    text(
                        "SELECT DISTINCT account FROM account_balance WHERE chain_id = :c AND "
                        "valid_from <= :b AND (valid_to IS NULL OR valid_to > :b)"
                    ),
                    {"c": chain, "b": block},
                )
                found.update(str(a) for (a,) in accounts)
            users = sorted(found)
        chains = [
            ChainRows(c, b, 1_700_000_000 + b, (), (), (), (), {}, {}, {}) for c, b in cut.items()
        ]
        snapshot = build_snapshot(registry, chains, users=users)
        return replace(snapshot, complete=complete)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[FakeStore, FakeLoader, Registry]]:
    store = open_store(f"sqlite:///{tmp_path / 'rtrm.db'}")
    try:
        registry = _registry()
        yield FakeStore(store), FakeLoader(registry), registry
    finally:
        store.dispose()


def _cache(world: tuple[FakeStore, FakeLoader, Registry], **options: Any) -> SnapshotCache:
    fake, loader, registry = world
    metrics = ApiMetrics(CollectorRegistry())
    return SnapshotCache(fake.store, registry, loader=loader, metrics=metrics, poll_s=None,
                         **options)  # fmt: skip


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


async def _cut_of(cache: SnapshotCache, user: str) -> dict[int, int]:
    return dict((await cache.entry_for(user)).snapshot.watermark)


def _base_cut(cache: SnapshotCache) -> dict[int, int]:
    assert cache.base is not None
    return dict(cache.base.snapshot.watermark)


def _loads(cache: SnapshotCache, kind: str) -> float:
    assert cache.metrics is not None
    name, labels = "rtrm_api_snapshot_reloads_total", {"kind": kind}
    return cache.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_block_is_reflected_while_a_full_load_is_in_flight(world: Any) -> None:
    fake, loader, _ = world

    async def scenario() -> None:
        cache = _cache(world)
        await cache.entry()
        assert _base_cut(cache) == {1: 0, 10: 0}
        loader.hold()
        w0 = fake.block(touch=[BOB], oracle=True)  # market data moved: a full load starts
        await cache.refresh(full=False)
        assert await _cut_of(cache, BOB) == {1: w0, 10: 0}  # Bob's block, without waiting
        assert await asyncio.to_thread(loader.started.wait, 10)
        later = fake.block(touch=[ALICE])
        started = time.monotonic()
        await cache.refresh(full=False)  # not behind the held full load
        assert time.monotonic() - started < 2.0
        assert await _cut_of(cache, ALICE) == {1: later, 10: 0}
        assert _base_cut(cache) == {1: 0, 10: 0}
        assert cache.watermark == {1: later, 10: 0}
        loader.release()
        await _until(lambda: _base_cut(cache) == {1: w0, 10: 0})
        assert BOB not in cache.overlay  # the new base includes Bob's block
        assert await _cut_of(cache, BOB) == {1: w0, 10: 0}
        assert await _cut_of(cache, ALICE) == {1: later, 10: 0}  # touched after W0: kept
        assert await _cut_of(cache, CAROL) == {1: w0, 10: 0}
        assert _loads(cache, "full") == 2
        assert _loads(cache, "users") == 2
        await cache.close()

    _run(scenario)


def test_refresh_full_waits_for_a_full_load_at_the_current_cut(world: Any) -> None:
    fake, loader, _ = world

    async def scenario() -> None:
        cache = _cache(world)
        await cache.entry()
        fake.block(touch=[ALICE])
        top = fake.block(CHAINS[1], touch=[CAROL])
        entry = await cache.refresh()
        assert dict(entry.snapshot.watermark) == {1: 1, 10: top}
        assert entry.snapshot.complete
        assert cache.overlay == {}
        assert loader.calls[-1] == ({1: 1, 10: top}, None)
        await cache.close()

    _run(scenario)


def test_request_full_and_an_old_overlay_load_in_the_background(world: Any) -> None:
    fake, loader, _ = world

    async def scenario() -> None:
        cache = _cache(world, full_every_s=0.0)
        await cache.entry()
        loader.hold()
        block = fake.block(touch=[ALICE])
        await cache.refresh(full=False)  # the overlay is "old" at once: a full load starts
        assert await asyncio.to_thread(loader.started.wait, 10)
        assert await _cut_of(cache, ALICE) == {1: block, 10: 0}
        loader.release()
        await _until(lambda: cache.overlay == {})
        assert _base_cut(cache) == {1: block, 10: 0}
        cache.full_every_s = 3600.0
        before = _loads(cache, "full")
        cache.request_full()
        await _until(lambda: _loads(cache, "full") > before)
        await cache.close()

    _run(scenario)


def test_a_reorg_loads_everything_and_drops_the_full_load_in_flight(world: Any) -> None:
    fake, loader, _ = world

    async def scenario() -> None:
        cache = _cache(world)
        await cache.entry()
        for _ in range(3):
            fake.block(touch=[ALICE], oracle=True)
        loader.hold()
        await cache.refresh(full=False)
        assert await asyncio.to_thread(loader.started.wait, 10)  # a full load at block 3
        fake.reorg(CHAINS[0], ancestor=1)
        again = fake.block(touch=[BOB])
        await cache.refresh(full=False)  # the fast lane loads everything itself
        assert _base_cut(cache) == {1: again, 10: 0}
        assert cache.overlay == {}
        loader.release()
        await _until(lambda: not cache._full_busy)
        assert _base_cut(cache) == {1: again, 10: 0}  # not block 3
        assert await _cut_of(cache, ALICE) == {1: again, 10: 0}
        await cache.close()

    _run(scenario)


def test_a_block_touching_much_of_the_book_loads_everything_in_the_fast_lane(
    world: Any,
) -> None:
    fake, loader, _ = world

    async def scenario() -> None:
        cache = _cache(world, incremental_fraction=0.0)  # the floor: 64 users
        await cache.entry()
        few = fake.block(touch=USERS[:64])
        await cache.refresh(full=False)
        assert len(cache.overlay) == 64
        cut, users = loader.calls[-1]
        assert cut == {1: few, 10: 0}
        assert sorted(users or ()) == sorted(USERS[:64])
        many = fake.block(touch=USERS[:65])
        await cache.refresh(full=False)
        assert loader.calls[-1] == ({1: many, 10: 0}, None)
        assert cache.overlay == {}
        assert _base_cut(cache) == {1: many, 10: 0}
        await cache.close()

    _run(scenario)


@pytest.mark.parametrize("seed", range(3))
def test_answers_never_go_back_and_include_each_users_blocks(world: Any, seed: int) -> None:
    """Random blocks, oracle rounds, full requests and slow full loads; a reader polls
    every user: per user, the answer's cut never goes back, and once the cache's watermark
    has passed a user's last touched block, the answer includes it."""
    fake, loader, _ = world
    rng = random.Random(seed)
    last_touch: dict[str, dict[int, int]] = {u: {} for u in USERS}
    seen: dict[str, dict[int, int]] = {u: {} for u in USERS}
    original = loader.__call__

    def slow(*args: Any, **kwargs: Any) -> Snapshot:
        time.sleep(rng.uniform(0.0, 0.05) if kwargs.get("users") is None else 0.0)
        snapshot: Snapshot = original(*args, **kwargs)
        return snapshot

    async def scenario() -> None:
        cache = _cache(world, full_every_s=0.3)
        cache.loader = slow
        await cache.entry()
        done = False

        async def reader() -> None:
            while not done:
                claimed = cache.watermark
                for user in USERS:
                    cut = await _cut_of(cache, user)
                    assert all(cut[c] >= b for c, b in seen[user].items()), (user, cut)
                    seen[user] = cut
                    for chain, block in last_touch[user].items():
                        if claimed.get(chain, -1) >= block:
                            assert cut[chain] >= block, (user, chain, block, cut, claimed)
                # A pause, not sleep(0): a reader that never lets go of the GIL makes the
                # writer thread wait a switch interval (5 ms) for it after every statement.
                await asyncio.sleep(0.001)

        task = asyncio.create_task(reader())
        for _ in range(60):
            chain = rng.choice(CHAINS)
            touched = rng.sample(USERS, rng.randint(0, 2))
            block = await asyncio.to_thread(
                fake.block, chain, touch=touched, oracle=rng.random() < 0.3
            )
            for user in touched:
                last_touch[user][chain] = block
            if rng.random() < 0.1:
                cache.request_full()
            cache.kick()
            await asyncio.sleep(rng.uniform(0.0, 0.03))
        await cache.refresh()
        done = True
        await task
        assert cache.overlay == {}
        for user in USERS:
            assert await _cut_of(cache, user) == cache.watermark
        await cache.close()

    _run(scenario)
