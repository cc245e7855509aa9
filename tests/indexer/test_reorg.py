"""Reorgs made with anvil: after each, the store equals a fresh index of the canonical chain.

Blocks with events are mined on a seeded devnet, indexed, then replaced by ``anvil_reorg``
with different events; indexing again must roll back to the common ancestor and
re-index — while following the head, and in the middle of a backfill (depths 1, 3 and
64). anvil's ``finalized`` tag trails the head by 64 blocks: a reorg that deep is still
handled, a deeper one pauses the chain and leaves the store untouched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rtrm_testing import (
    eth_price_tx,
    first_chain_status,
    index_once,
    mine_price_blocks,
    store_fingerprint,
)
from sqlalchemy import text

from chains.devnet import DevnetState
from chains.rpc import RpcClient, hex_to_int
from indexer.pipeline import BatchReport, IndexerOptions
from indexer.store import open_store

pytestmark = pytest.mark.chain

ANVIL_FINALITY = 64  # anvil's `finalized` tag is head - 64


def _reorg(state: DevnetState, depth: int, price: int) -> None:
    """Replace the last ``depth`` blocks; the new first block carries another round."""
    with RpcClient(state.nodes[0].rpc_url) as client:
        client.call("anvil_reorg", [depth, [[eth_price_tx(state, price), 0]]])


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
    mine_price_blocks(devnet, max(depth, 3), base=3_000_00000000)
    index_once(devnet.config_path, store_url)
    _reorg(devnet, depth, price=1_234_00000000)
    outcomes = index_once(devnet.config_path, store_url)
    assert [o.status for o in outcomes] == ["ok"]
    assert first_chain_status(store_url).reorgs == 1
    _assert_canonical(devnet, store_url, tmp_path)


@pytest.mark.parametrize("depth", [1, 3, ANVIL_FINALITY])
def test_reorg_during_backfill(
    devnet: DevnetState, store_url: str, tmp_path: Path, depth: int
) -> None:
    mine_price_blocks(devnet, depth + 12, base=2_000_00000000)
    done: list[BatchReport] = []
    reorged_after: list[int] = []

    def reorg_once(report: BatchReport) -> None:
        done.append(report)
        # Once the first block to be replaced is written, and while ranges fetched ahead of
        # the writer hold old versions of the others: replace the top `depth` blocks, then
        # mine on top (keeping the ancestor above anvil's finalized block) so that the
        # backfill goes on after the reorg.
        if not reorged_after and report.last >= _head(devnet) - depth + 1:
            _reorg(devnet, depth, price=999_00000000)
            mine_price_blocks(devnet, max(0, 4 - depth), base=998_00000000)
            reorged_after.append(len(done))

    index_once(
        devnet.config_path, store_url, on_batch=reorg_once, options=IndexerOptions(max_span=2)
    )
    assert reorged_after, "the backfill ended before the reorg"
    assert len(done) > reorged_after[0]  # the backfill went on after it
    assert first_chain_status(store_url).reorgs == 1
    assert 1 <= _reorg_depths(store_url)[0] <= depth
    _assert_canonical(devnet, store_url, tmp_path)


def _head(state: DevnetState) -> int:
    with RpcClient(state.nodes[0].rpc_url) as client:
        return hex_to_int(client.call("eth_blockNumber"))


def _reorg_depths(url: str) -> list[int]:
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return [int(d) for (d,) in conn.execute(text("SELECT depth FROM reorg"))]
    finally:
        store.dispose()


def test_reorg_below_finality_pauses_and_keeps_the_store(
    devnet: DevnetState, store_url: str
) -> None:
    mine_price_blocks(devnet, ANVIL_FINALITY + 10, base=2_500_00000000)
    index_once(devnet.config_path, store_url)
    chain_id = devnet.nodes[0].chain_id
    before = store_fingerprint(store_url, chain_id)
    _reorg(devnet, ANVIL_FINALITY + 6, price=777_00000000)
    outcomes = index_once(devnet.config_path, store_url)
    assert outcomes[0].status == "paused"
    assert "below the finalized block" in outcomes[0].detail
    assert "reorg below" in (first_chain_status(store_url).paused_reason or "")
    assert store_fingerprint(store_url, chain_id) == before


def test_head_going_back_after_snapshot_revert(
    devnet: DevnetState, store_url: str, tmp_path: Path
) -> None:
    with RpcClient(devnet.nodes[0].rpc_url) as client:
        snapshot = client.call("evm_snapshot")
        mine_price_blocks(devnet, 5, base=2_100_00000000)
        index_once(devnet.config_path, store_url)
        client.call("evm_revert", [snapshot])
        head = hex_to_int(client.call("eth_blockNumber"))
    mine_price_blocks(devnet, 2, base=2_200_00000000)  # a shorter, different chain
    index_once(devnet.config_path, store_url)
    assert first_chain_status(store_url).indexed_block == head + 2
    _assert_canonical(devnet, store_url, tmp_path)


def test_reorg_metrics_and_status(devnet: DevnetState, store_url: str) -> None:
    from indexer.metrics import IndexerMetrics

    metrics = IndexerMetrics()
    index_once(devnet.config_path, store_url, metrics=metrics)
    mine_price_blocks(devnet, 3, base=3_100_00000000)
    index_once(devnet.config_path, store_url, metrics=metrics)
    _reorg(devnet, 2, price=3_300_00000000)
    index_once(devnet.config_path, store_url, metrics=metrics)
    chain = str(devnet.nodes[0].chain_id)
    assert metrics.registry.get_sample_value("rtrm_indexer_reorgs_total", {"chain_id": chain}) == 1
    assert first_chain_status(store_url).lag_blocks == 0
