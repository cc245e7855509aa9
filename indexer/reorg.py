"""Reorgs, finality and pauses of one chain's indexer (mixed into
:class:`indexer.pipeline.ChainIndexer`).

The head poll is here (:meth:`ReorgHandling._head`: the head, the finalized block, a new
genesis, a syncing node, whether the cursor's block was replaced or is missing); the
pipeline calls it on every poll, and its fetcher links every range to the one before.
After a reorg, the common ancestor is the highest ledger block whose stored hash is still
canonical — a matching hash implies matching ancestry, so a sparse ledger (blocks with
logs, range ends, every block followed at the head) is enough; everything above it is
rolled back (two statements per versioned table, see :func:`indexer.store.rollback`) and
re-indexed, and the reorg is recorded with its depth.

Only a *different* hash at a height the node has is evidence of a reorg. A block the
node does not have (its head is below our cursor: a lagging node, or a load balancer's
backend that is) proves nothing: if the blocks it has match the ledger, the indexer waits
for it (:meth:`ReorgHandling._behind`) — nothing is rolled back, no reorg is counted. A
genuinely shorter canonical chain differs at a height the node has, sooner or later at
the cursor itself once the node's head passes it.

Finality is the node's ``finalized`` tag, else its ``safe`` tag, else
``head - finality_depth`` from the chain's config; a tag the node answers with an error
(pre-merge nodes, young chains: "finalized block not found") or with null is absent.
``safe`` is accepted as the bound because it is the node's own claim that the block will
not be reorganised short of a consensus failure — which is what a pause is for; it trails
the head less than most configured depths. A rollback whose changed blocks reach below
the bound, a head that goes back below a block the node called final, or a syncing node
pauses the chain: :class:`ChainPausedError` (permanent, an operator must act) or
:class:`Paused` (clears itself when the node is back), with the reason stored in the
chain's row — the store is never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from chains.exceptions import RPCError
from indexer import answers
from indexer.exceptions import ChainPausedError, MalformedAnswerError
from indexer.store import move_cursor, rollback

if TYPE_CHECKING:
    from chains.spec import ChainSpec
    from indexer.metrics import IndexerMetrics
    from indexer.state import ChainState
    from indexer.store import Store

__all__ = ["Paused", "ReorgHandling", "Reorged", "Restarted"]

log = logging.getLogger("indexer.pipeline")


class Reorged(Exception):  # noqa: N818 - control flow inside the indexer only
    """The fetcher saw that the stored tip is no longer canonical."""


class Restarted(Exception):  # noqa: N818 - control flow inside the indexer only
    """Block 0 changed: the node was restarted or replaced by another chain."""


class Paused(ChainPausedError):  # noqa: N818 - a kind of pause, not an error
    """A pause that may clear by itself (syncing node): the runner retries later."""


class ReorgHandling:
    """Rollback to the common ancestor, finality checks and pauses (see the module)."""

    chain_id: int
    spec: ChainSpec
    store: Store
    client: Any
    state: ChainState | None
    metrics: IndexerMetrics | None
    cursor: tuple[int, str]
    finalized: int
    reorgs: int
    reorgs_here: int
    paused: str | None
    start_block: int
    head: int
    genesis_hash: str
    tip_replaced: bool
    # Defaults (the pipeline's __init__ leaves them alone): the last _head() found no block
    # at the cursor's height; the node is behind the cursor (logged once per episode); the
    # source of the finalized block ("finalized", "safe" or "finality_depth").
    tip_missing: bool = False
    lagging: bool = False
    finality_source: str = ""

    # ------------------------------------------------------------ head and finality

    async def _head(self) -> tuple[int, int]:
        """The head and the finalized block; raises :class:`Restarted` (new genesis) or
        pauses a syncing node; notes whether the cursor's block was replaced."""
        return await answers.reread(self._read_head)

    async def _read_head(self) -> tuple[int, int]:
        number, tip_hash = self.cursor
        answered = await self.client.batch(
            [
                ("eth_getBlockByNumber", ["latest", False]),
                ("eth_syncing", []),
                ("eth_getBlockByNumber", ["0x0", False]),
                ("eth_getBlockByNumber", [hex(max(number, 0)), False]),
                ("eth_getBlockByNumber", ["finalized", False]),
                ("eth_getBlockByNumber", ["safe", False]),
            ],
            raise_on_error=False,  # a node without the tags answers them with an error
        )
        for answer in answered[:4]:
            if isinstance(answer, RPCError):
                raise answer
        chain = self.chain_id
        latest = answers.header(answered[0], chain_id=chain, block="latest")
        syncing = answered[1]
        genesis = answers.header(answered[2], chain_id=chain, block=0)
        tip = answers.header(answered[3], chain_id=chain, block=max(number, 0))
        if latest is None:
            raise MalformedAnswerError(
                f"chain {chain}: eth_getBlockByNumber(latest) answered null; check the "
                "chain's rpc_urls"
            )
        if genesis is None or genesis["hash"] != self.genesis_hash:
            raise Restarted
        # A missing block is not a replaced one: the node may only be behind (see _behind).
        self.tip_missing = bool(tip_hash) and tip is None
        self.tip_replaced = bool(tip_hash) and tip is not None and tip["hash"] != tip_hash
        if syncing:
            await self._pause(
                "the node is syncing (eth_syncing is not false); indexing resumes when it "
                "has caught up, or point rpc_urls at a synced node",
                permanent=False,
            )
        head = int(latest["number"], 16)
        final, source = self._finality(head, answered[4], answered[5])
        if source != self.finality_source:
            log.info("chain %s: finality from %s (block %s)", chain, source, final)
            self.finality_source = source
        if self.lagging and head >= number and not self.tip_missing:
            log.info("chain %s: the node caught up (head %s)", chain, head)
            self.lagging = False
        self.head, self.finalized = head, final
        return head, final

    def _finality(self, head: int, finalized: Any, safe: Any) -> tuple[int, str]:
        """The finalized block and where it comes from: the node's ``finalized`` tag, else
        its ``safe`` tag, else ``head - finality_depth``; a tag answered with an error
        (the node does not know it) or null (nothing final yet) is absent."""
        for tag, answer in (("finalized", finalized), ("safe", safe)):
            if isinstance(answer, RPCError):
                continue
            found = answers.header(answer, chain_id=self.chain_id, block=tag)
            if found is not None:  # the node knows: trust its tag
                return min(int(found["number"], 16), head), f"the node's {tag!r} tag"
        depth = self.spec.finality_depth
        return max(0, head - depth), f"finality_depth = {depth} (the node has no finality tags)"

    # ------------------------------------------------------------ reorgs and pauses

    async def _head_went_back(self, head: int, finalized: int) -> None:
        """The node's head is below our cursor: a reorg to a shorter chain, unless it went
        below a block the node itself called final before (syncing, or another chain)."""
        if head < self.finalized or head < finalized:
            await self._pause(
                f"the node's head went back to block {head}, below the finalized block "
                f"{max(self.finalized, finalized)} (indexed: {self.cursor[0]}); the node is "
                "syncing or serves another chain — check rpc_urls in rtrm.toml",
                permanent=False,
            )

    async def _behind(self, head: int) -> bool:
        """The node's head is below the cursor (or it lacks the cursor's block): True when
        it is merely behind — at the highest ledger block it has, its hash is ours, so
        wait for it; False when that hash differs (a reorg to a shorter chain)."""
        number, stored_hash = await asyncio.to_thread(self._ledger_at_or_below, head)
        if stored_hash:
            found = answers.header(
                await self.client.call("eth_getBlockByNumber", [hex(number), False]),
                chain_id=self.chain_id,
                block=number,
            )
            # None: the answer came from a node behind the one that gave the head (a load
            # balancer) — no evidence of a reorg either.
            if found is not None and found["hash"] != stored_hash:
                return False
        self._note_behind(head)
        return True

    def _note_behind(self, head: int) -> None:
        if not self.lagging:
            log.warning(
                "chain %s: the node is at block %s, behind the indexed block %s; waiting for "
                "it (its blocks match the store: not a reorg)",
                self.chain_id,
                head,
                self.cursor[0],
            )
            self.lagging = True

    async def _reorg(self) -> None:
        """Roll back to the highest ledger block that is still canonical, or pause; do
        nothing if no block the node has differs from the ledger (it is behind)."""
        head, finalized = await self._head()
        stored = await asyncio.to_thread(self._ledger_above, finalized)
        ancestor: tuple[int, str] | None = None
        replaced = False  # a block the node has differs from the ledger's
        for chunk in _chunks(stored, 100):
            headers = await self.client.batch(
                [("eth_getBlockByNumber", [hex(n), False]) for n, _ in chunk]
            )
            for (number, stored_hash), answer in zip(chunk, headers, strict=True):
                header = answers.header(answer, chain_id=self.chain_id, block=number)
                if header is None:  # not there (yet): neither canonical nor replaced
                    continue
                if header["hash"] == stored_hash:
                    ancestor = (number, stored_hash)
                    break
                replaced = True
            if ancestor is not None:
                break
        if ancestor is None:
            below = await asyncio.to_thread(self._ledger_at_or_below, finalized)
            canonical = answers.header(
                await self.client.call("eth_getBlockByNumber", [hex(below[0]), False]),
                chain_id=self.chain_id,
                block=below[0],
            )
            if below[1] and canonical is not None and canonical["hash"] != below[1]:
                await self._pause(
                    f"reorg below the finalized block {finalized}: block {below[0]} "
                    f"changed from {below[1]} to {canonical['hash']}; the store was not "
                    "touched — re-index this chain (rtrm index --reset-chain "
                    f"{self.chain_id}) once the node is on the right chain",
                    permanent=True,
                )
            if below[1] and canonical is None:
                replaced = False  # the node lacks even that block: it is far behind
            ancestor = below
        if not replaced:
            if ancestor[0] < self.cursor[0]:
                self._note_behind(head)
            else:  # blocks above the cursor moved while the fetcher read them: read again
                log.info("chain %s: the indexed blocks are all canonical", self.chain_id)
            return
        old_tip = self.cursor
        depth = old_tip[0] - ancestor[0]
        new = answers.header(
            await self.client.call("eth_getBlockByNumber", [hex(old_tip[0]), False]),
            chain_id=self.chain_id,
            block=old_tip[0],
        )
        await asyncio.to_thread(self._rollback, ancestor, old_tip, new["hash"] if new else "")
        self.reorgs += 1
        self.reorgs_here += 1
        if self.metrics is not None:
            self.metrics.reorgs.labels(self.chain_id).inc()
            self.metrics.reorg_depth.labels(self.chain_id).observe(depth)
        log.warning(
            "chain %s: reorg of depth %s: rolled back from block %s to %s (head %s)",
            self.chain_id,
            depth,
            old_tip[0],
            ancestor[0],
            head,
        )

    def _ledger_above(self, finalized: int) -> list[tuple[int, str]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT number, hash FROM block WHERE chain_id = :c AND number >= :f "
                    "ORDER BY number DESC"
                ),
                {"c": self.chain_id, "f": finalized},
            )
            return [(int(n), str(h)) for n, h in rows]

    def _ledger_at_or_below(self, finalized: int) -> tuple[int, str]:
        with self.store.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT number, hash FROM block WHERE chain_id = :c AND number <= :f "
                    "ORDER BY number DESC LIMIT 1"
                ),
                {"c": self.chain_id, "f": finalized},
            ).first()
        return (int(row[0]), str(row[1])) if row else (self.start_block - 1, "")

    def _rollback(self, ancestor: tuple[int, str], old_tip: tuple[int, str], new_hash: str) -> None:
        assert self.state is not None
        number, block_hash = ancestor
        with self.store.transaction() as conn:
            move_cursor(conn, self.chain_id, ancestor, old_tip)  # from where it left it
            removed = rollback(conn, self.chain_id, number)
            conn.execute(
                text(
                    "UPDATE chain SET reorgs = reorgs + 1, events = events - :e WHERE chain_id = :c"
                ),
                {"c": self.chain_id, "e": removed},
            )
            conn.execute(
                text(
                    "INSERT INTO reorg (chain_id, ancestor, indexed, depth, old_hash, new_hash, "
                    "detected_at) VALUES (:c, :a, :i, :d, :o, :n, :t)"
                ),
                {
                    "c": self.chain_id,
                    "a": number,
                    "i": old_tip[0],
                    "d": old_tip[0] - number,
                    "o": old_tip[1],
                    "n": new_hash,
                    "t": time.time(),
                },
            )
            self.state.load(conn)
        self.cursor = (number, block_hash)

    async def _pause(self, reason: str, *, permanent: bool) -> None:
        if reason != self.paused:
            log.error("chain %s paused: %s", self.chain_id, reason)
            await asyncio.to_thread(self._store_pause, reason)
        raise (
            ChainPausedError(self.chain_id, reason) if permanent else Paused(self.chain_id, reason)
        )

    def _store_pause(self, reason: str | None) -> None:
        """Record (or clear, with None) why the chain is paused."""
        if reason is None:
            log.info("chain %s resumed", self.chain_id)
        self.paused = reason
        with self.store.transaction() as conn:
            conn.execute(
                text("UPDATE chain SET paused_reason = :r WHERE chain_id = :c"),
                {"c": self.chain_id, "r": reason[:1000] if reason else None},
            )


def _chunks(items: list[tuple[int, str]], size: int) -> list[list[tuple[int, str]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
