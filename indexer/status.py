"""What the store says about each chain, and the watermark vector readers use.

:func:`watermark` is the published cross-chain cut ``{chain_id: block}``: for every chain,
the last block whose events are all in the store. A reader that reads each chain "as of"
its watermark block sees a consistent snapshot while the indexers keep writing.
:func:`chain_status` adds counters and health for ``rtrm status`` and the API.
:func:`open_for_reading` opens a store that must already exist at the schema's head, and
never creates, migrates or writes it (``rtrm status`` pointed at a mistyped URL must not
leave a new database behind).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from indexer.exceptions import StoreError
from indexer.store import (
    HEAD_REVISION,
    Store,
    describe,
    open_store,
    parse_database_url,
    stored_revision,
)

__all__ = ["ChainStatus", "chain_status", "open_for_reading", "watermark"]


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


def open_for_reading(url: str) -> Store:
    """The store at ``url``, checked to exist and to be at :data:`HEAD_REVISION`; raises
    :class:`StoreError` saying what to run when it is missing or behind."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        if database == ":memory:" or not Path(database).is_file():
            raise StoreError(f"no store at {url}; run `rtrm index` first (it creates it)")
    store = open_store(url, migrate=False)
    try:
        revision = stored_revision(store)
    except SQLAlchemyError as exc:
        store.dispose()
        raise StoreError(
            f"cannot read the store at {store.url}: {describe(exc)}; check database_url in "
            "rtrm.toml (or RTRM_DATABASE_URL) and that the database is running"
        ) from None
    if revision == HEAD_REVISION:
        return store
    store.dispose()
    if revision is None:
        raise StoreError(f"no store at {store.url}; run `rtrm index` first (it creates it)")
    if revision.isdigit() and int(revision) > int(HEAD_REVISION):
        raise StoreError(
            f"the store at {store.url} is at revision {revision}, newer than this rtrm knows "
            f"({HEAD_REVISION}); upgrade rtrm"
        )
    raise StoreError(
        f"the store at {store.url} is at revision {revision}, this rtrm reads "
        f"{HEAD_REVISION}; run `rtrm index` (it migrates the store) or `alembic upgrade head`"
    )
