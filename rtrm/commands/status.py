"""``rtrm status [--json]``: per configured chain, what the store holds and how far behind.

Reads the store (never creates, migrates or writes it: a missing store, or one behind the
schema's head, is an error saying what to run) and asks each chain's nodes, in configured
order with a short timeout, for their chain id and head in one batch: the head is the
first endpoint's that answers *and* serves the chain (``eth_chainId`` the configured
one). A chain no endpoint served shows the head recorded at its last write, and each
endpoint's problem (no answer, an error, another chain id); a chain served by a later
endpoint names the problems of those before it. Every chain of ``rtrm.toml`` is listed, a
chain never indexed too (``state`` "not indexed yet", block fields ``null``), and so is a
chain the store holds that is no longer configured (``state`` "not configured").
Keys of ``--json``: ``chain_id``, ``name``, ``state``, ``head``, ``head_live``,
``indexed_block``, ``indexed_block_hash``, ``finalized_block``, ``events``, ``reorgs``,
``lag_blocks``, ``paused_reason``, ``genesis_hash``, ``detail``.

The exit code is a health check (:func:`unhealthy`): 0 when every configured chain is
healthy, 1 when one is not (paused, or none of its nodes served it), 2 for bad input (a bad
``rtrm.toml``, database URL or store), as every command. A chain never indexed is healthy
while a node serves it (``rtrm index`` has not reached it yet, nothing is wrong with it);
a chain the store holds but ``rtrm.toml`` no longer lists is not judged. Lag is shown,
not judged: no threshold fits every chain. URLs are shown with their credentials hidden,
in ``detail`` and in ``paused_reason`` (a reason stored by the indexer may quote one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chains.urls import hide_credentials, redact
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
HEAD_TIMEOUT_S = 1.0  # per endpoint: connecting, and each read of its answer
_HEAD_CALLS: tuple[tuple[str, list[Any]], ...] = (("eth_chainId", []), ("eth_blockNumber", []))


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
        "nodes served it (no answer, or another chain id), 2 for bad input.",
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
    """The configured chains that fail the health check: paused, or no node served them
    (``head_live`` false: none answered, or with another chain id). A chain not indexed yet
    passes while a node serves it; a chain not configured is not judged (nothing indexes
    it)."""
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
    live heads, ``head_errors`` what was wrong with the endpoints asked for one (all of
    them when a chain has no live head, else those asked before the one that served it)."""
    urls = {int(c.chain_id): c.rpc_urls for c in configured}
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
        nodes = None if error is None else f"no live head: {error}"
        if error is not None and live is not None:
            nodes = f"live head from a later endpoint; {error}"
        stale = f"head as stored at the last write; {nodes}" if nodes and live is None else nodes
        indexed = row.indexed_block if row is not None and row.indexed_block >= 0 else None
        reason = row.paused_reason if row is not None else None
        paused = redact(reason, *urls.get(chain_id, ())) if reason is not None else None
        detail: str | None
        if paused:  # also before its first range is written
            state = "paused"
            detail = "; ".join(d for d in (paused, stale) if d)
        elif row is None or indexed is None:
            state, detail = NOT_INDEXED, "run `rtrm index`"
            if nodes:
                detail = f"{detail}; {nodes}"
        else:
            state, detail = "ok", stale
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
                paused_reason=paused,
                genesis_hash=row.genesis_hash if row is not None else None,
                detail=detail,
            )
        )
    return rows


def _live_heads(chains: tuple[ChainSpec, ...]) -> tuple[dict[int, int], dict[int, str]]:
    """The head of every chain from the first of its endpoints that serves it (module
    docstring), and for each chain the problems of the endpoints asked before that one
    (of all of them when none served it), each named by its place in ``rpc_urls``."""
    heads: dict[int, int] = {}
    problems: dict[int, str] = {}
    for chain in chains:
        chain_id = int(chain.chain_id)
        failed: list[str] = []
        for index, url in enumerate(chain.rpc_urls):
            head, problem = _ask_head(chain, index, url)
            if head is not None:
                heads[chain_id] = head
                break
            failed.append(f"rpc_urls[{index}] {problem}")
        if failed:
            problems[chain_id] = "; ".join(failed)
    return heads, problems


def _ask_head(chain: ChainSpec, index: int, url: str) -> tuple[int | None, str | None]:
    """``eth_chainId`` and ``eth_blockNumber`` from ``url`` in one batch: the head, or
    ``None`` and why this endpoint gives none (the URL named with credentials hidden)."""
    from chains.exceptions import RPCError, TransientRPCError
    from chains.rpc import RpcClient, hex_to_int
    from rtrm.commands.config import urls_setting

    try:
        with RpcClient(url, timeout_s=HEAD_TIMEOUT_S) as client:
            chain_id, block = client.batch(_HEAD_CALLS)
    except RPCError as exc:  # its message hides the URL's credentials
        verb = "did not answer" if isinstance(exc, TransientRPCError) else "answered an error"
        return None, f"{verb}: {exc}"
    where = f"({hide_credentials(url)})"
    configured = int(chain.chain_id)
    try:
        found = hex_to_int(chain_id)
    except ValueError:
        return None, f"{where} answered eth_chainId with {chain_id!r:.100}, not a chain id"
    if found != configured:
        return None, (
            f"{where} answers eth_chainId {found}, but it is configured for chain "
            f"{configured}: it serves another network; fix rpc_urls[{index}] in "
            f"{urls_setting(chain)} (or move it to [chains.{found}]); `rtrm config check "
            "--online` checks every endpoint"
        )
    try:
        return hex_to_int(block), None
    except ValueError:
        return None, f"{where} answered eth_blockNumber with {block!r:.100}, not a block number"


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
