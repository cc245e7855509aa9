"""Soak: follow a live chain for a while through a chaotic proxy, with blocks arriving and
reorgs of random depth; at the end the store equals a fresh fault-free index.

The short form runs with ``make test``; the long one is marked ``slow`` (``make test-all``).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once, store_fingerprint
from sqlalchemy import text

from chains.abi import encode_call
from chains.deploy import DEPLOYER
from chains.endpoints import RpcPolicy
from chains.faultplan import FaultPlan
from chains.faultproxy import FaultProxy
from chains.registry import load_registry
from chains.rpc import RpcClient, to_hex
from chains.world import feed_name
from indexer.pipeline import IndexerOptions
from indexer.runner import run_indexers
from indexer.status import watermark
from indexer.store import open_store

pytestmark = pytest.mark.chain

RPC = RpcPolicy(
    request_timeout_s=1.0,
    max_attempts=12,
    backoff_base_s=0.01,
    backoff_max_s=0.2,
    bench_base_s=0.05,
    bench_max_s=0.2,
)


def _on_canonical_head(store: Any, client: RpcClient, chain_id: int, head: int) -> bool:
    """The store reached ``head`` and its tip is the node's block (a reorg right before
    the end may have replaced blocks the indexer had already written: not yet caught up)."""
    with store.engine.connect() as conn:
        if watermark(conn).get(chain_id, -1) < head:
            return False
        tip = conn.execute(
            text("SELECT block_number, block_hash FROM cursor WHERE chain_id = :c"),
            {"c": chain_id},
        ).one()
    block = client.call("eth_getBlockByNumber", [to_hex(int(tip[0])), False])
    return block is not None and block["hash"] == tip[1]


def _soak(state: Any, url: str, tmp_path: Path, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    node = state.nodes[0]
    feed = state.contracts[str(node.chain_id)][feed_name("ETH")]
    plan = FaultPlan.chaos(0.15, seed=seed, timeout_hold_s=1.2, retry_after_s=0.05)
    with FaultProxy.start(node.rpc_url, plan) as proxy:
        registry = replace(load_registry(Path(state.config_path)), database_url=url)
        chains = tuple(replace(c, rpc_urls=(proxy.url,)) for c in registry.chains)
        store = open_store(url)
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        options = IndexerOptions(rpc=RPC, poll_interval_s=0.05)
        runner = threading.Thread(
            target=loop.run_until_complete,
            args=(run_indexers(store, chains, stop=stop, options=options),),
        )
        runner.start()
        try:
            with RpcClient(node.rpc_url) as client:
                deadline = time.monotonic() + seconds
                price = 3_000_00000000
                while time.monotonic() < deadline:
                    price += rng.randint(-5_00000000, 5_00000000)
                    tx = {
                        "from": DEPLOYER,
                        "to": feed,
                        "data": encode_call("updateAnswer(int256)", price),
                        "gas": to_hex(200_000),
                        "gasPrice": "0x0",
                    }
                    if rng.random() < 0.15:
                        client.call("anvil_reorg", [rng.randint(1, 5), [[tx, 0]]])
                    else:
                        client.call("eth_sendTransaction", [tx])
                    time.sleep(rng.uniform(0.02, 0.2))
                head = int(client.call("eth_blockNumber"), 16)
                caught_up = time.monotonic() + 60
                while not _on_canonical_head(store, client, node.chain_id, head):
                    assert time.monotonic() < caught_up, "the indexer never caught up"
                    time.sleep(0.1)
        finally:
            loop.call_soon_threadsafe(stop.set)
            runner.join(timeout=60)
            loop.close()
            store.dispose()
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    index_once(state.config_path, fresh)
    assert store_fingerprint(url, node.chain_id) == store_fingerprint(fresh, node.chain_id)


def test_soak_short(small_devnet: Any, tmp_path: Path) -> None:
    _soak(small_devnet, f"sqlite:///{tmp_path / 'rtrm.db'}", tmp_path, seconds=12, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(600)  # 240 s of traffic, up to 60 s to catch up, a fresh index
def test_soak_long(small_devnet: Any, store_url: str, tmp_path: Path) -> None:
    _soak(small_devnet, store_url, tmp_path, seconds=240, seed=2)
