"""``rtrm config show [--json]`` and ``rtrm config check``: the configuration RTRM sees.

Both load ``rtrm.toml`` the way every other command does (``--config``, else
discovery) and apply ``RTRM_*`` overrides, so what they print is what the indexer and
the API will use. Passwords in URLs are masked; API keys embedded in an RPC URL's path
are not detectable and are printed as configured.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from rich.console import Group, RenderableType

from rtrm.commands import load_config
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    import argparse

    from chains.spec import Registry
    from rtrm.commands import Subparsers

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show or check the configuration",
        description="Show or check rtrm.toml as RTRM sees it, RTRM_* overrides applied.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print chains, contracts, tokens and assets")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=show_config)
    check = actions.add_parser("check", help="validate; exit 0 if valid, 2 if not")
    check.set_defaults(func=check_config)


def show_config(args: argparse.Namespace) -> int:
    registry = masked(load_config(args))
    emit(registry, as_json=args.json, table=lambda: config_tables(registry))
    return 0


def check_config(args: argparse.Namespace) -> int:
    registry = load_config(args)
    contracts = sum(len(chain.contracts) for chain in registry.chains)
    tokens = sum(len(chain.tokens) for chain in registry.chains)
    counts = f"chains {len(registry.chains)}, contracts {contracts}, tokens {tokens}"
    print(f"ok: {registry.source}: {counts}, assets {len(registry.assets)}")
    return 0


def masked(registry: Registry) -> Registry:
    """``registry`` with passwords in its database and RPC URLs replaced by ``***``."""
    chains = tuple(
        replace(chain, rpc_urls=tuple(mask_password(url) for url in chain.rpc_urls))
        for chain in registry.chains
    )
    return replace(registry, chains=chains, database_url=mask_password(registry.database_url))


def config_tables(registry: Registry) -> RenderableType:
    chains = make_table(
        "chain",
        "name",
        "rpc urls",
        "finality",
        "block time (s)",
        title="Chains",
        numeric=("chain", "finality", "block time (s)"),
    )
    contracts = make_table(
        "chain",
        "name",
        "kind",
        "address",
        "deployed",
        "asset",
        title="Contracts",
        numeric=("chain", "deployed"),
    )
    tokens = make_table(
        "chain",
        "symbol",
        "address",
        "decimals",
        "asset",
        "kind",
        title="Tokens",
        numeric=("chain", "decimals"),
    )
    for chain in registry.chains:
        urls = "\n".join(chain.rpc_urls)
        cid = str(chain.chain_id)
        chains.add_row(cid, chain.name, urls, str(chain.finality_depth), f"{chain.block_time_s:g}")
        for c in chain.contracts:
            row = (cid, c.name, c.kind, c.address, str(c.deployed_block), c.asset_id or "")
            contracts.add_row(*row)
        for t in chain.tokens:
            tokens.add_row(cid, t.symbol, t.address, str(t.decimals), t.asset_id, t.kind)
    assets = make_table("asset", "name", "rolls up to", "peg", title="Assets")
    for asset in registry.assets:
        root = registry.root_asset(asset.asset_id).asset_id
        assets.add_row(asset.asset_id, asset.name, "" if asset.is_root else root, asset.peg or "")
    header = f"config: {registry.source}\ndatabase: {registry.database_url}"
    return Group(header, chains, contracts, tokens, assets)


def mask_password(url: str) -> str:
    """``scheme://user:***@host/...``; URLs without a password are returned unchanged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
