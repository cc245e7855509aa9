"""Reorgs made with anvil: after each, the store equals a fresh index of the canonical chain.

Blocks with events are mined on a seeded devnet, indexed, then replaced by ``anvil_reorg``
with different events; indexing again must roll back to the common ancestor and
re-index. anvil's ``finalized`` tag trails the head by 64 blocks: a reorg that deep is
still handled, a deeper one pauses the chain and leaves the store untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once, store_fingerprint

from chains.abi import encode_call
from chains.deploy import DEPLOYER
from chains.devnet import DevnetOptions, DevnetState, up
from chains.rpc import RpcClient, hex_to_int, to_hex
from chains.world import feed_name
from indexer.pipeline import BatchReport, IndexerOptions
from indexer.status import chain_status
from indexer.store import open_store

pytestmark = pytest.mark.chain

ANVIL_FINALITY = 64  # anvil's `finalized` tag is head - 64


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[DevnetState]:
    state, nodes = up(
        DevnetOptions(chains=1, users=8, seed=11, block_time_s=0, state_dir=tmp_path / "net")
    )
    try:
        yield state
    finally:
        for node in nodes:
            node.stop()


def _feed_tx(state: DevnetState, price: int) -> dict[str, Any]:
    node = state.nodes[0]
    feed = state.contracts[str(node.chain_id)][feed_name("ETH")]
    return {
        "from": DEPLOYER,
        "to": feed,
        "data": encode_call("updateAnswer(int256)", price),
        "gas": to_hex(200_000),
        "gasPrice": "0x0",
    }


def _mine_price_blocks(state: DevnetState, count: int, base: int) -> None:
    """``count`` blocks, each with one oracle round (automine: a block per transaction)."""
    with RpcClient(state.nodes[0].rpc_url) as client:
        for i in range(count):
            client.call("eth_sendTransaction", [_feed_tx(state, base + i)])


def _reorg(state: DevnetState, depth: int, price: int) -> None:
    """Replace the last ``depth`` blocks; the new first block carries another round."""
    with RpcClient(state.nodes[0].rpc_url) as client:
        client.call("anvil_reorg", [depth, [[_feed_tx(state, price), 0]]])


def _status(url: str) -> Any:
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return chain_status(conn)[0]
    finally:
        store.dispose()


def _assert_canonical(state: DevnetState, url: str, tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    index_once(state.config_path, fresh)
    chain_id = state.nodes[0].chain_id
    assert store_fingerprint(url, chain_id) == store_fingerprint(fresh, chain_id)


@pytest.mark.parametrize("depth", [1, 3, ANVIL_FINALITY])
def test_reorg_while_following(
    devnet: DevnetState, store_url: str, tmp_path: Path, depth: int
) -> None:
    index_once(devnet.config_path, store_url)
    _mine_price_blocks(devnet, max(depth, 3), base=3_000_00000000)
    index_once(devnet.config_path, store_url)
    _reorg(devnet, depth, price=1_234_00000000)
    outcomes = index_once(devnet.config_path, store_url)
    assert [o.status for o in outcomes] == ["ok"]
    assert _status(store_url).reorgs == 1
    _assert_canonical(devnet, store_url, tmp_path)


def test_reorg_during_backfill(devnet: DevnetState, store_url: str, tmp_path: Path) -> None:
    _mine_price_blocks(devnet, 12, base=2_000_00000000)
    done: list[BatchReport] = []

    def reorg_once(report: BatchReport) -> None:
        done.append(report)
        if len(done) == 3:  # mid-backfill: replace blocks already indexed and beyond
            _reorg(devnet, 8, price=999_00000000)

    index_once(
        devnet.config_path, store_url, on_batch=reorg_once, options=IndexerOptions(max_span=2)
    )
    assert len(done) > 3
    _assert_canonical(devnet, store_url, tmp_path)


def test_reorg_below_finality_pauses_and_keeps_the_store(
    devnet: DevnetState, store_url: str
) -> None:
    _mine_price_blocks(devnet, ANVIL_FINALITY + 10, base=2_500_00000000)
    index_once(devnet.config_path, store_url)
    chain_id = devnet.nodes[0].chain_id
    before = store_fingerprint(store_url, chain_id)
    _reorg(devnet, ANVIL_FINALITY + 6, price=777_00000000)
    outcomes = index_once(devnet.config_path, store_url)
    assert outcomes[0].status == "paused"
    assert "below the finalized block" in outcomes[0].detail
    assert "reorg below" in (_status(store_url).paused_reason or "")
    assert store_fingerprint(store_url, chain_id) == before


def test_head_going_back_after_snapshot_revert(
    devnet: DevnetState, store_url: str, tmp_path: Path
) -> None:
    with RpcClient(devnet.nodes[0].rpc_url) as client:
        snapshot = client.call("evm_snapshot")
        _mine_price_blocks(devnet, 5, base=2_100_00000000)
        index_once(devnet.config_path, store_url)
        client.call("evm_revert", [snapshot])
        head = hex_to_int(client.call("eth_blockNumber"))
    _mine_price_blocks(devnet, 2, base=2_200_00000000)  # a shorter, different chain
    index_once(devnet.config_path, store_url)
    assert _status(store_url).indexed_block == head + 2
    _assert_canonical(devnet, store_url, tmp_path)


def test_reorg_metrics_and_status(devnet: DevnetState, store_url: str) -> None:
    from indexer.metrics import IndexerMetrics

    metrics = IndexerMetrics()
    index_once(devnet.config_path, store_url, metrics=metrics)
    _mine_price_blocks(devnet, 3, base=3_100_00000000)
    index_once(devnet.config_path, store_url, metrics=metrics)
    _reorg(devnet, 2, price=3_300_00000000)
    index_once(devnet.config_path, store_url, metrics=metrics)
    chain = str(devnet.nodes[0].chain_id)
    assert metrics.registry.get_sample_value("rtrm_indexer_reorgs_total", {"chain_id": chain}) == 1
    assert _status(store_url).lag_blocks == 0
