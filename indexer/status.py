"""What the store says about each chain, and the watermark vector readers use.

:func:`watermark` is the published cross-chain cut ``{chain_id: block}``: for every chain,
the last block whose events are all in the store. A reader that reads each chain "as of"
its watermark block sees a consistent snapshot while the indexers keep writing.
:func:`chain_status` adds counters and health for ``rtrm status`` and the API.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

__all__ = ["ChainStatus", "chain_status", "watermark"]


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """One chain as the store last recorded it (``head`` may be refreshed live)."""

    chain_id: int
    name: str
    head: int
    indexed_block: int
    indexed_block_hash: str | None
    finalized_block: int
    events: int
    reorgs: int
    lag_blocks: int
    paused_reason: str | None
    genesis_hash: str


def watermark(conn: Connection) -> dict[int, int]:
    """``{chain_id: last fully indexed block}`` for every chain in the store."""
    rows = conn.execute(text("SELECT chain_id, block_number FROM cursor ORDER BY chain_id"))
    return {int(chain): int(block) for chain, block in rows}


def chain_status(conn: Connection, heads: dict[int, int] | None = None) -> list[ChainStatus]:
    """Every chain in the store; ``heads`` (live ``eth_blockNumber``) override stored ones."""
    heads = heads or {}
    rows = conn.execute(
        text(
            "SELECT c.chain_id, c.name, c.head_block, c.finalized_block, c.events, c.reorgs, "
            "c.paused_reason, c.genesis_hash, k.block_number, k.block_hash "
            "FROM chain c LEFT JOIN cursor k ON k.chain_id = c.chain_id ORDER BY c.chain_id"
        )
    )
    result = []
    for (
        chain_id,
        name,
        stored_head,
        finalized,
        events,
        reorgs,
        paused,
        genesis,
        block,
        bhash,
    ) in rows:
        head = heads.get(int(chain_id), int(stored_head))
        indexed = int(block) if block is not None else -1
        result.append(
            ChainStatus(
                chain_id=int(chain_id),
                name=str(name),
                head=head,
                indexed_block=indexed,
                indexed_block_hash=bhash,
                finalized_block=int(finalized),
                events=int(events),
                reorgs=int(reorgs),
                lag_blocks=max(0, head - indexed),
                paused_reason=paused,
                genesis_hash=str(genesis),
            )
        )
    return result
