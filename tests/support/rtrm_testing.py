"""Helpers shared by test folders (on ``sys.path`` through pytest's ``pythonpath``).

- :func:`index_once` runs the indexers in-process until every chain caught up;
- :func:`stored_state` reads a chain's derived state from the store (current or as of a
  block);
- :func:`chain_truth` reads the same from the contracts' view functions at a block.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from sqlalchemy import text

from chains.abi import encode_call
from chains.registry import load_registry
from chains.rpc import RpcClient
from chains.spec import checksum_address
from indexer.runner import run_indexers
from indexer.store import open_store


def index_once(
    config_path: str, store_url: str, *, rpc_urls: tuple[str, ...] | None = None, **kwargs: Any
) -> list[Any]:
    """Run ``rtrm index --once`` in-process against ``store_url`` (every chain through
    ``rpc_urls`` instead of its configured endpoints, if given)."""
    registry = replace(load_registry(Path(config_path)), database_url=store_url)
    if rpc_urls is not None:
        chains = tuple(replace(chain, rpc_urls=rpc_urls) for chain in registry.chains)
        registry = replace(registry, chains=chains)
    store = open_store(store_url)
    try:
        return asyncio.run(run_indexers(store, registry.chains, once=True, **kwargs))
    finally:
        store.dispose()


def stored_state(store_url: str, chain_id: int, block: int | None = None) -> dict[str, Any]:
    """Current (or as-of ``block``) derived state of ``chain_id`` as plain dicts."""
    store = open_store(store_url, migrate=False)
    where = (
        "valid_to IS NULL"
        if block is None
        else (f"valid_from <= {block} AND (valid_to IS NULL OR valid_to > {block})")
    )
    try:
        with store.engine.connect() as conn:
            balances = {
                (p, a, k, t): int(v)
                for p, a, k, t, v in conn.execute(
                    text(
                        "SELECT protocol, account, kind, asset, amount FROM account_balance "
                        f"WHERE chain_id = {chain_id} AND {where}"
                    )
                )
            }
            options = {
                (p, a, int(s)): int(v)
                for p, a, s, v in conn.execute(
                    text(
                        "SELECT protocol, account, series_id, size_wad FROM option_position "
                        f"WHERE chain_id = {chain_id} AND {where}"
                    )
                )
            }
            perps = {
                (p, a, m): (int(s), int(n))
                for p, a, m, s, n in conn.execute(
                    text(
                        "SELECT protocol, account, market, size_wad, open_notional_wad "
                        f"FROM perp_position WHERE chain_id = {chain_id} AND {where}"
                    )
                )
            }
            raw = conn.execute(
                text(
                    "SELECT block_number, tx_hash, log_index FROM raw_event "
                    f"WHERE chain_id = {chain_id} ORDER BY block_number, log_index"
                )
            ).all()
    finally:
        store.dispose()
    return {"balances": balances, "options": options, "perps": perps, "raw": raw}


def _view(  # noqa: PLR0917
    client: RpcClient, to: str, signature: str, types: list[str], user: str, block: int
) -> Any:
    raw = client.call("eth_call", [{"to": to, "data": encode_call(signature, user)}, hex(block)])
    return abi_decode(types, bytes.fromhex(raw[2:]))


def chain_truth(state: Any, block: int, accounts: set[Any]) -> dict[str, Any]:
    """What the contracts say at ``block`` for ``accounts`` (zeros left out)."""
    node = state.nodes[0]
    contracts = state.contracts[str(node.chain_id)]
    lending, options, perps = (
        contracts["lending_pool"],
        contracts["options_market"],
        contracts["perps_market"],
    )
    balances: dict[tuple[str, str, str, str], int] = {}
    positions: dict[tuple[str, str, int], int] = {}
    perp_positions: dict[tuple[str, str, str], tuple[int, int]] = {}
    quote = checksum_address(state.tokens[str(node.chain_id)]["USDC"], key="USDC")
    with RpcClient(node.rpc_url) as client:
        for user in sorted(accounts):
            assets, supplied, borrowed = _view(
                client,
                lending,
                "getUserReserves(address)",
                ["address[]", "uint256[]", "uint256[]"],
                user,
                block,
            )
            for raw_asset, s, b in zip(assets, supplied, borrowed, strict=True):
                asset = checksum_address(raw_asset, key="asset")
                if s:
                    balances[(lending, user, "collateral", asset)] = s
                if b:
                    balances[(lending, user, "debt", asset)] = b
            ids, sizes = _view(
                client, options, "getPositions(address)", ["uint256[]", "int256[]"], user, block
            )
            positions.update({(options, user, i): s for i, s in zip(ids, sizes, strict=True)})
            tokens, amounts = _view(
                client, options, "getCollateral(address)", ["address[]", "uint256[]"], user, block
            )
            for token, amount in zip(tokens, amounts, strict=True):
                if amount:
                    balances[(options, user, "collateral", checksum_address(token, key="t"))] = (
                        amount
                    )
            margin, markets, psizes, notionals, _, _ = _view(
                client,
                perps,
                "getAccount(address)",
                ["int256", "bytes32[]", "int256[]", "int256[]", "int256", "uint256"],
                user,
                block,
            )
            if margin:
                balances[(perps, user, "margin", quote)] = margin
            for market, size, notional in zip(markets, psizes, notionals, strict=True):
                if size:
                    name = market.rstrip(b"\0").decode()
                    perp_positions[(perps, user, name)] = (size, notional)
    return {"balances": balances, "options": positions, "perps": perp_positions}


# Columns that depend on insertion order, not on the chain: left out of fingerprints.
_UNORDERED = {"id", "row_id"}
FINGERPRINT_TABLES = (
    "raw_event",
    "account_balance",
    "option_position",
    "perp_position",
    "oracle_price",
    "vol_update",
    "funding_update",
    "option_series",
    "series_settlement",
    "liquidation",
    "bad_debt",
    "insurance_event",
    "protocol_param",
)


def store_fingerprint(store_url: str, chain_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every row ``chain_id`` has in the data tables, sorted, without surrogate ids."""
    store = open_store(store_url, migrate=False)
    result: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with store.engine.connect() as conn:
            for table in FINGERPRINT_TABLES:
                rows = conn.execute(text(f"SELECT * FROM {table} WHERE chain_id = {chain_id}"))
                keep = [i for i, name in enumerate(rows.keys()) if name not in _UNORDERED]
                result[table] = sorted(
                    (tuple(_plain(row[i]) for i in keep) for row in rows), key=repr
                )
    finally:
        store.dispose()
    return result


def _plain(value: Any) -> Any:
    if type(value).__name__ == "Decimal":
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


@contextlib.contextmanager
def serve_process(
    config_path: str | Path, log_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``rtrm serve --port 0 *args`` on the devnet of ``config_path`` (no other ``RTRM_*``
    variable than ``env`` leaks in), stderr to ``log_path``: the process and its URL once
    it announced it; killed on exit if still running."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RTRM_")}
    clean |= {"RTRM_CONFIG": str(config_path), **(env or {})}
    rtrm = Path(sys.executable).with_name("rtrm")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(rtrm), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=clean,
        )
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("RTRM serving on http://127.0.0.1:"), first
            yield process, first.split()[-1]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            assert process.stdout is not None
            process.stdout.close()


def first_chain_status(store_url: str) -> Any:
    """``rtrm status``'s row of the store's first chain (:func:`indexer.status.chain_status`)."""
    from indexer.status import chain_status

    store = open_store(store_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return chain_status(conn)[0]
    finally:
        store.dispose()


def eth_price_tx(state: Any, price: int) -> dict[str, Any]:
    """A transaction sending one ETH oracle round on the devnet's first chain."""
    from chains.deploy import DEPLOYER
    from chains.rpc import to_hex
    from chains.world import feed_name

    node = state.nodes[0]
    return {
        "from": DEPLOYER,
        "to": state.contracts[str(node.chain_id)][feed_name("ETH")],
        "data": encode_call("updateAnswer(int256)", price),
        "gas": to_hex(200_000),
        "gasPrice": "0x0",
    }


def eth_price_round(state: Any, price: int) -> int:
    """Send one ETH oracle round to the devnet's first chain (automine); its block number."""
    from chains.rpc import hex_to_int

    with RpcClient(state.nodes[0].rpc_url) as client:
        client.call("eth_sendTransaction", [eth_price_tx(state, price)])
        return hex_to_int(client.call("eth_blockNumber"))


def mine_price_blocks(state: Any, count: int, base: int) -> int:
    """``count`` blocks on the devnet's first chain, each with one ETH oracle round
    (automine: a block per transaction), prices ``base``, ``base + 1``, …; the head once
    they are all mined (anvil may answer before it mines)."""
    from chains.rpc import hex_to_int

    with RpcClient(state.nodes[0].rpc_url) as client:
        sent = [
            client.call("eth_sendTransaction", [eth_price_tx(state, base + i)])
            for i in range(count)
        ]
        deadline = time.monotonic() + 10
        for tx_hash in sent:
            while client.call("eth_getTransactionReceipt", [tx_hash]) is None:
                assert time.monotonic() < deadline, "anvil did not mine the transactions"
                time.sleep(0.01)
        return hex_to_int(client.call("eth_blockNumber"))


def seed_chain_row(store_url: str, chain_id: int, genesis_hash: str) -> None:
    """A ``chain`` row (finality depth 2, nothing indexed), as the pipeline's first start
    writes it, for tests that write ranges directly."""
    store = open_store(store_url)
    try:
        with store.transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO chain (chain_id, name, genesis_hash, finality_depth, events, "
                    "reorgs, head_block, finalized_block, updated_at) "
                    "VALUES (:c, 'test', :g, 2, 0, 0, 0, 0, 0)"
                ),
                {"c": chain_id, "g": genesis_hash},
            )
    finally:
        store.dispose()
