"""``rtrm config show [--json]`` and ``rtrm config check [--online]``: the configuration
RTRM sees, and whether its RPC endpoints serve the chains it names.

Both load ``rtrm.toml`` the way every other command does (``--config``, else
discovery) and apply ``RTRM_*`` overrides, so what they print is what the indexer and
the API will use. ``show`` masks the database URL's password and prints RPC URLs with
their credentials hidden (:func:`chains.urls.hide_credentials`: user and password, query
values, path segments that look like API keys).

``check`` validates offline (exit 0, or 2 with the key path and a fix). ``check --online``
then asks every ``rpc_urls`` entry, all at once with a short timeout, for ``eth_chainId``
and block 0 in one batch, as the indexer's chain check does, and reports each endpoint:
good, or one problem with its fix (no answer, another chain id, a genesis other than
``genesis_hash``, or without one a genesis the chain's other endpoints do not serve).
Exit 0 when every endpoint is good, 1 when one is not. The URLs it prints hide their
credentials, as everywhere. A ``ws(s)://`` URL never gets here: validation refuses it
(RTRM's clients speak HTTP(S) only).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from rich.console import Group, RenderableType

from chains.urls import hide_credentials
from rtrm.commands import load_config
from rtrm.output import emit, make_table

if TYPE_CHECKING:
    import argparse

    from chains.spec import ChainSpec, Registry
    from rtrm.commands import Subparsers

__all__ = ["ONLINE_TIMEOUT_S", "EndpointCheck", "check_endpoints", "register", "urls_setting"]

ONLINE_TIMEOUT_S = 3.0  # per endpoint: connecting, and each read of its answer
_MAX_PROBES = 16  # endpoints asked at once
_CHECK_CALLS: tuple[tuple[str, list[Any]], ...] = (
    ("eth_chainId", []),
    ("eth_getBlockByNumber", ["0x0", False]),
)
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class EndpointCheck:
    """What one ``rpc_urls`` entry answered to ``rtrm config check --online``.

    ``index`` is its position in the chain's ``rpc_urls``; ``url`` has its credentials
    hidden; ``found_chain_id`` and ``genesis_hash`` are what it served (``None`` when it
    gave no usable answer); ``problem`` names what is wrong and the fix (``None``: good).
    """

    chain_id: int
    chain_name: str
    index: int
    url: str
    found_chain_id: int | None
    genesis_hash: str | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class _Answer:
    """One endpoint's ``eth_chainId`` and block 0 hash, or why there are none."""

    chain_id: int | None = None
    genesis_hash: str | None = None
    error: str | None = None


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
    check = actions.add_parser(
        "check",
        help="validate; exit 0 if valid, 2 if not",
        description="Validate rtrm.toml: exit 0 if valid, 2 if not. With --online, also ask "
        "every RPC endpoint for its chain id and genesis block: exit 1 if one does not answer "
        "or serves another chain.",
    )
    check.add_argument(
        "--online",
        action="store_true",
        help=f"ask every rpc_url for eth_chainId and block 0 ({ONLINE_TIMEOUT_S:g} s timeout)",
    )
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
    if not args.online:
        return 0
    checks = check_endpoints(registry)
    for check in checks:
        where = f"chain {check.chain_id} ({check.chain_name}) rpc_urls[{check.index}] {check.url}"
        if check.problem is None:
            found = f"chain id {check.found_chain_id}, genesis {check.genesis_hash}"
            print(f"ok      {where}: {found}")
        else:
            print(f"FAILED  {where}: {check.problem}")
    failed = sum(check.problem is not None for check in checks)
    if failed:
        print(f"online: {failed} of {len(checks)} endpoints failed the check (above)")
        return 1
    print(f"online: all {len(checks)} endpoints serve their chain")
    return 0


def check_endpoints(
    registry: Registry, *, timeout_s: float = ONLINE_TIMEOUT_S
) -> list[EndpointCheck]:
    """Every endpoint of every chain, in configuration order, asked at once and judged
    (module docstring)."""
    jobs = [url for chain in registry.chains for url in chain.rpc_urls]
    with ThreadPoolExecutor(max_workers=max(1, min(_MAX_PROBES, len(jobs)))) as pool:
        answers = iter(list(pool.map(lambda url: _ask(url, timeout_s), jobs)))
    checks: list[EndpointCheck] = []
    for chain in registry.chains:
        mine = [next(answers) for _ in chain.rpc_urls]
        for index, (answer, problem) in enumerate(zip(mine, _judge(chain, mine), strict=True)):
            checks.append(
                EndpointCheck(
                    chain_id=int(chain.chain_id),
                    chain_name=chain.name,
                    index=index,
                    url=hide_credentials(chain.rpc_urls[index]),
                    found_chain_id=answer.chain_id,
                    genesis_hash=answer.genesis_hash,
                    problem=problem,
                )
            )
    return checks


def _ask(url: str, timeout_s: float) -> _Answer:
    """``eth_chainId`` and block 0 from ``url`` in one batch, as the indexer's chain check
    sends them (an endpoint that refuses batches would fail the indexer too)."""
    from chains.exceptions import RPCError, TransientRPCError
    from chains.rpc import RpcClient, hex_to_int

    try:
        with RpcClient(url, timeout_s=timeout_s) as client:
            chain_id, block = client.batch(_CHECK_CALLS)
    except RPCError as exc:  # its message hides the URL's credentials
        verb = "did not answer" if isinstance(exc, TransientRPCError) else "answered an error"
        return _Answer(error=f"{verb}: {exc}")
    fix = "is it this chain's Ethereum JSON-RPC URL? check rpc_urls"
    try:
        found = hex_to_int(chain_id)
    except ValueError:
        return _Answer(error=f"answered eth_chainId with {chain_id!r:.80}, not a number; {fix}")
    genesis = block.get("hash") if isinstance(block, dict) else None
    if not isinstance(genesis, str) or not _HASH.fullmatch(genesis):
        return _Answer(
            chain_id=found,
            error=f"answered eth_getBlockByNumber(0x0) with {block!r:.120}, not block 0; {fix}",
        )
    return _Answer(chain_id=found, genesis_hash=genesis.lower())


def _judge(chain: ChainSpec, answers: list[_Answer]) -> list[str | None]:
    """Each endpoint's problem, or ``None``: the chain id must be the configured one, and
    the genesis ``genesis_hash`` or, without one, the one the other endpoints serve (the
    most common; on a tie, every endpoint is at fault)."""
    configured = int(chain.chain_id)
    urls = urls_setting(chain)
    problems: list[str | None] = []
    for index, answer in enumerate(answers):
        fix_url = f"fix rpc_urls[{index}] in {urls}"
        if answer.error is not None:
            problems.append(answer.error)
        elif answer.chain_id != configured:
            problems.append(
                f"answers eth_chainId {answer.chain_id}, but it is configured for chain "
                f"{configured}: it serves another network; {fix_url} (or move it to "
                f"[chains.{answer.chain_id}])"
            )
        elif chain.genesis_hash is not None and answer.genesis_hash != chain.genesis_hash:
            problems.append(
                f"serves genesis {answer.genesis_hash}, but genesis_hash of [chains.{configured}] "
                f"is {chain.genesis_hash}: the URL points at another network with the same chain "
                f"id, or at a node reset since (anvil keeps no state); {fix_url}, or genesis_hash "
                "if the chain was re-created on purpose"
            )
        else:
            problems.append(None)
    good = [i for i, problem in enumerate(problems) if problem is None]
    served = Counter(answers[i].genesis_hash for i in good)
    if len(served) <= 1:  # they agree
        return problems
    (first, first_count), (_, second_count) = served.most_common(2)
    majority = first if first_count > second_count else None
    for i in good:
        genesis = answers[i].genesis_hash
        if genesis == majority:
            continue
        others = "; ".join(
            f"rpc_urls[{j}] serves {answers[j].genesis_hash}"
            for j in good
            if answers[j].genesis_hash != genesis
        )
        pin = f"set genesis_hash in [chains.{configured}] to the right one"
        if majority is None:
            problems[i] = (
                f"serves genesis {genesis}, but {others}: the chain's endpoints disagree and "
                f"no genesis is the majority; {pin} and fix the URLs that serve another"
            )
        else:
            problems[i] = (
                f"serves genesis {genesis}, unlike the chain's other endpoints ({others}): it "
                f"points at another network or at a reset node; fix rpc_urls[{i}] in {urls} "
                f"(and {pin}, to catch this when indexing)"
            )
    return problems


def urls_setting(chain: ChainSpec) -> str:
    """Where the chain's RPC URLs were set: the environment override, or ``rtrm.toml``."""
    variable = f"RTRM_CHAIN_{int(chain.chain_id)}_RPC_URLS"
    return variable if variable in os.environ else f"[chains.{int(chain.chain_id)}] of rtrm.toml"


def masked(registry: Registry) -> Registry:
    """``registry`` fit to print: its RPC URLs with their credentials hidden, and the
    password of its database URL replaced by ``***``."""
    chains = tuple(
        replace(chain, rpc_urls=tuple(hide_credentials(url) for url in chain.rpc_urls))
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
