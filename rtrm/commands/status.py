"""``rtrm status [--json]``: per configured chain, what the store holds and how far behind.

Reads the store (never creates, migrates or writes it: a missing store, or one behind the
schema's head, is an error saying what to run) and asks each chain's nodes for their head
with a short timeout; a chain whose nodes do not answer shows the head recorded at its
last write, and why the nodes did not answer. Every chain of ``rtrm.toml`` is listed, a
chain never indexed too (``state`` "not indexed yet", block fields ``null``), and so is a
chain the store holds that is no longer configured (``state`` "not configured").
Keys of ``--json``: ``chain_id``, ``name``, ``state``, ``head``, ``head_live``,
``indexed_block``, ``indexed_block_hash``, ``finalized_block``, ``events``, ``reorgs``,
``lag_blocks``, ``paused_reason``, ``genesis_hash``, ``detail``.

The exit code is a health check (:func:`unhealthy`): 0 when every configured chain is
healthy, 1 when one is not (paused, or none of its nodes answered), 2 for bad input (a bad
``rtrm.toml``, database URL or store), as every command. A chain never indexed is healthy
while its nodes answer (``rtrm index`` has not reached it yet, nothing is wrong with it);
a chain the store holds but ``rtrm.toml`` no longer lists is not judged. Lag is shown,
not judged: no threshold fits every chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtrm.commands import load_config
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    import argparse

    from rich.console import RenderableType

    from chains.spec import ChainSpec
    from indexer.status import ChainStatus
    from rtrm.commands import Subparsers

__all__ = ["StatusRow", "register", "status_rows", "unhealthy"]

NOT_INDEXED = "not indexed yet"
NOT_CONFIGURED = "not configured"


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One chain as ``rtrm status`` shows it; ``None`` where nothing is known yet.

    ``state`` is ``ok``, ``paused``, ``not indexed yet`` or ``not configured``; ``detail``
    says what to do, or why the head is not live (``head_live``: read from a node now)."""

    chain_id: int
    name: str
    state: str
    head: int | None
    head_live: bool
    indexed_block: int | None
    indexed_block_hash: str | None
    finalized_block: int | None
    events: int
    reorgs: int
    lag_blocks: int | None
    paused_reason: str | None
    genesis_hash: str | None
    detail: str | None


def register(subparsers: Subparsers) -> None:
    status = subparsers.add_parser(
        "status",
        help="per chain: head, indexed block, lag, reorgs",
        description="Per configured chain: head, indexed block, lag, reorgs and state. Exit "
        "code 0 when every configured chain is healthy, 1 when one is paused or none of its "
        "nodes answered, 2 for bad input.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    from indexer.status import chain_status, open_for_reading

    registry = load_config(args)
    store = open_for_reading(registry.database_url)
    try:
        with store.engine.connect() as conn:
            stored = chain_status(conn)
    finally:
        store.dispose()
    heads, errors = _live_heads(registry.chains)
    rows = status_rows(registry.chains, stored, heads, errors)
    emit(rows, as_json=args.json, table=lambda: _status_table(rows))
    return 1 if unhealthy(rows) else 0


def unhealthy(rows: list[StatusRow]) -> list[StatusRow]:
    """The configured chains that fail the health check: paused, or no node answered
    (``head_live`` false). A chain not indexed yet passes while its nodes answer; a chain
    not configured is not judged (nothing indexes it)."""
    return [
        row
        for row in rows
        if row.state != NOT_CONFIGURED and (row.state == "paused" or not row.head_live)
    ]


def status_rows(
    configured: tuple[ChainSpec, ...],
    stored: list[ChainStatus],
    heads: dict[int, int],
    head_errors: dict[int, str],
) -> list[StatusRow]:
    """Every configured chain, then the store's other chains, by chain id; ``heads`` are
    live heads, ``head_errors`` why a chain's nodes gave none."""
    in_store = {row.chain_id: row for row in stored}
    names = {row.chain_id: row.name for row in stored} | {
        int(c.chain_id): c.name for c in configured
    }
    in_config = {int(c.chain_id) for c in configured}
    rows = []
    for chain_id in sorted(names):
        row = in_store.get(chain_id)
        live = heads.get(chain_id)
        head = live if live is not None else (row.head if row is not None else None)
        error = head_errors.get(chain_id)
        no_head = f"nodes did not answer: {error}" if error else None
        indexed = row.indexed_block if row is not None and row.indexed_block >= 0 else None
        detail: str | None
        if row is not None and row.paused_reason:  # also before its first range is written
            state = "paused"
            stale = f"head as stored at the last write; {no_head}" if no_head else None
            detail = "; ".join(d for d in (row.paused_reason, stale) if d)
        elif row is None or indexed is None:
            state, detail = NOT_INDEXED, "run `rtrm index`"
            if no_head:
                detail = f"{detail}; {no_head}"
        else:
            state = "ok"
            detail = f"head as stored at the last write; {no_head}" if no_head else None
        if chain_id not in in_config:
            state, detail = NOT_CONFIGURED, "in the store but not in rtrm.toml"
        lag = None if head is None or indexed is None else max(0, head - indexed)
        rows.append(
            StatusRow(
                chain_id=chain_id,
                name=names[chain_id],
                state=state,
                head=head,
                head_live=live is not None,
                indexed_block=indexed,
                indexed_block_hash=row.indexed_block_hash if row is not None else None,
                finalized_block=row.finalized_block if row is not None else None,
                events=row.events if row is not None else 0,
                reorgs=row.reorgs if row is not None else 0,
                lag_blocks=lag,
                paused_reason=row.paused_reason if row is not None else None,
                genesis_hash=row.genesis_hash if row is not None else None,
                detail=detail,
            )
        )
    return rows


def _live_heads(chains: tuple[ChainSpec, ...]) -> tuple[dict[int, int], dict[int, str]]:
    """``eth_blockNumber`` of every chain that answers within a second, and for the
    others the last error (an answer that is not a block number is one)."""
    from chains.exceptions import ChainError
    from chains.rpc import RpcClient, hex_to_int

    heads: dict[int, int] = {}
    errors: dict[int, str] = {}
    for chain in chains:
        chain_id = int(chain.chain_id)
        for url in chain.rpc_urls:
            try:
                with RpcClient(url, timeout_s=1.0) as client:
                    answer = client.call("eth_blockNumber")
            except ChainError as exc:
                errors[chain_id] = str(exc)
                continue
            try:
                heads[chain_id] = hex_to_int(answer)
            except ValueError:
                errors[chain_id] = f"eth_blockNumber on {url} answered {answer!r:.100}"
                continue
            errors.pop(chain_id, None)
            break
    return heads, errors


def _status_table(rows: list[StatusRow]) -> RenderableType:
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
        head = "-" if row.head is None else f"{row.head:,}" + ("" if row.head_live else " (stored)")
        state = f"{row.state}: {row.detail}" if row.detail else row.state
        table.add_row(
            str(row.chain_id),
            row.name,
            head,
            _number(row.indexed_block),
            _number(row.finalized_block),
            _number(row.lag_blocks),
            f"{row.events:,}",
            str(row.reorgs),
            state,
        )
    if all(row.indexed_block is None for row in rows):
        table.caption = "nothing indexed yet: run `rtrm index`"
    return table


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
