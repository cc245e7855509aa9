"""``rtrm status [--json]``: per chain, what the store holds and how far behind it is.

Reads the store (never writes it) and asks each chain's nodes for their head with a short
timeout; a chain whose nodes do not answer shows the head recorded at its last write.
Keys of ``--json``: ``chain_id``, ``name``, ``head``, ``indexed_block``,
``indexed_block_hash``, ``finalized_block``, ``events``, ``reorgs``, ``lag_blocks``,
``paused_reason``, ``genesis_hash``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtrm.commands import load_config
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    import argparse

    from rich.console import RenderableType

    from indexer.status import ChainStatus
    from rtrm.commands import Subparsers

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    status = subparsers.add_parser("status", help="per chain: head, indexed block, lag, reorgs")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    from indexer.status import chain_status
    from indexer.store import open_store

    registry = load_config(args)
    heads = _live_heads([(int(c.chain_id), c.rpc_urls) for c in registry.chains])
    store = open_store(registry.database_url)
    try:
        with store.engine.connect() as conn:
            rows = chain_status(conn, heads)
    finally:
        store.dispose()
    emit(rows, as_json=args.json, table=lambda: _status_table(rows, heads))
    return 0


def _live_heads(chains: list[tuple[int, tuple[str, ...]]]) -> dict[int, int]:
    """``eth_blockNumber`` of every chain that answers within a second."""
    from chains.exceptions import ChainError
    from chains.rpc import RpcClient, hex_to_int

    heads: dict[int, int] = {}
    for chain_id, urls in chains:
        for url in urls:
            try:
                with RpcClient(url, timeout_s=1.0) as client:
                    heads[chain_id] = hex_to_int(client.call("eth_blockNumber"))
                break
            except ChainError:
                continue
    return heads


def _status_table(rows: list[ChainStatus], heads: dict[int, int]) -> RenderableType:
    table = make_table(
        "chain",
        "name",
        "head",
        "indexed",
        "finalized",
        "lag",
        "events",
        "reorgs",
        "state",
        title="Indexing status",
        numeric=("chain", "head", "indexed", "finalized", "lag", "events", "reorgs"),
    )
    for row in rows:
        live = "" if row.chain_id in heads else " (stored)"
        state = f"paused: {row.paused_reason}" if row.paused_reason else "ok"
        table.add_row(
            str(row.chain_id),
            row.name,
            f"{row.head:,}{live}",
            f"{row.indexed_block:,}",
            f"{row.finalized_block:,}",
            f"{row.lag_blocks:,}",
            f"{row.events:,}",
            str(row.reorgs),
            state,
        )
    if not rows:
        table.caption = "nothing indexed yet: run `rtrm index`"
    return table
