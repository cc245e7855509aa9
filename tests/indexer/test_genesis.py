"""Which chain the endpoints must serve: ``genesis_hash`` from ``rtrm.toml``, else the one
the store recorded, else the one the endpoints agree on.

Two real anvil nodes with one chain id and different genesis blocks (another start
timestamp) sit behind a chain's endpoint list: the one serving another genesis is benched
with a warning naming it and both hashes, and never poisons the other; a configured genesis
that no endpoint serves pauses the chain without dropping anything; a new genesis on every
endpoint with none configured is a restarted node, re-indexed from scratch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import text

from chains.endpoints import RpcPolicy
from chains.faultproxy import FaultProxy
from chains.rpc import RpcClient, hex_to_int
from chains.spec import ChainSpec
from chains.types import ChainId
from indexer.pipeline import IndexerOptions
from indexer.runner import ChainOutcome, run_indexers
from indexer.store import open_store

pytestmark = pytest.mark.chain

CHAIN = 913378
FAST = RpcPolicy(request_timeout_s=2.0, call_timeout_s=5.0, max_attempts=4, bench_base_s=5.0)


def _node(anvil_factory: Any, timestamp: int, blocks: int) -> tuple[str, str]:
    """A node of CHAIN with ``blocks`` mined: its URL and genesis hash."""
    node = anvil_factory(chain_id=CHAIN, genesis_timestamp=timestamp)
    with RpcClient(node.url) as client:
        for _ in range(blocks):
            client.call("evm_mine")
        return node.url, str(client.call("eth_getBlockByNumber", ["0x0", False])["hash"])


def _head_hash(url: str) -> tuple[int, str]:
    with RpcClient(url) as client:
        block = client.call("eth_getBlockByNumber", ["latest", False])
    return hex_to_int(block["number"]), str(block["hash"])


def _index(url: str, urls: tuple[str, ...], genesis: str | None) -> ChainOutcome:
    spec = ChainSpec(ChainId(CHAIN), "audit", urls, 0, 1.0, genesis_hash=genesis)
    store = open_store(url)
    try:
        options = IndexerOptions(rpc=FAST)
        return asyncio.run(run_indexers(store, [spec], once=True, options=options))[0]
    finally:
        store.dispose()


def _stored(url: str) -> tuple[Any, ...]:
    """(genesis, cursor block, cursor hash, paused reason) of CHAIN in the store."""
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return tuple(
                conn.execute(
                    text(
                        "SELECT c.genesis_hash, k.block_number, k.block_hash, c.paused_reason "
                        "FROM chain c LEFT JOIN cursor k ON k.chain_id = c.chain_id "
                        "WHERE c.chain_id = :c"
                    ),
                    {"c": CHAIN},
                ).one()
            )
    finally:
        store.dispose()


@pytest.fixture
def nodes(anvil_factory: Any) -> dict[str, tuple[str, str]]:
    return {
        "good": _node(anvil_factory, 1_700_000_000, 6),
        "other": _node(anvil_factory, 1_800_000_000, 2),
    }


@pytest.mark.parametrize("reference", ["configured", "stored"])
def test_an_endpoint_serving_another_genesis_is_benched_not_followed(
    nodes: Any, store_url: str, reference: str, caplog: pytest.LogCaptureFixture
) -> None:
    (good, genesis), (other, other_genesis) = nodes["good"], nodes["other"]
    configured = genesis if reference == "configured" else None
    if reference == "stored":  # indexed before through the good endpoint alone
        assert _index(store_url, (good,), None).status == "ok"
    caplog.set_level(logging.WARNING)
    with RpcClient(good) as client:
        client.call("evm_mine")
    outcome = _index(store_url, (other, good), configured)  # the other one is listed first
    assert outcome.status == "ok", outcome.detail
    head, head_hash = _head_hash(good)
    assert _stored(store_url) == (genesis, head, head_hash, None)
    benched = [r.getMessage() for r in caplog.records if "benched" in r.getMessage()]
    assert benched, caplog.text
    assert other in benched[0]
    assert genesis in benched[0]
    assert other_genesis in benched[0]


def test_a_configured_genesis_no_endpoint_serves_pauses_and_drops_nothing(
    nodes: Any, store_url: str
) -> None:
    (good, genesis), (other, other_genesis) = nodes["good"], nodes["other"]
    assert _index(store_url, (good,), genesis).status == "ok"
    before = _stored(store_url)
    typo = "0x" + "11" * 32
    with_password = good.replace("http://", "http://ops:s3cretpw@")  # anvil ignores it
    outcome = _index(store_url, (with_password,), typo)
    assert outcome.status == "paused"
    assert typo in outcome.detail
    assert genesis in outcome.detail
    assert "rpc_urls" in outcome.detail
    after = _stored(store_url)
    assert after[:3] == before[:3]  # nothing dropped
    assert typo in after[3]  # rtrm status shows why
    assert "ops:***@" in after[3]  # the endpoint named, its password not
    assert "s3cretpw" not in outcome.detail + after[3]
    # The URL now points at another chain while the configured genesis is the old one.
    outcome = _index(store_url, (other,), genesis)
    assert outcome.status == "paused"
    assert other_genesis in outcome.detail
    assert _stored(store_url)[:3] == before[:3]
    assert _index(store_url, (good,), genesis).status == "ok"  # fixed: it goes on
    assert _stored(store_url)[3] is None


def test_a_restarted_node_without_configured_genesis_is_reindexed(
    nodes: Any, tmp_path: Any
) -> None:
    (good, genesis), (other, other_genesis) = nodes["good"], nodes["other"]
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    with FaultProxy.start(good) as first, FaultProxy.start(good) as second:
        urls = (first.url, second.url)
        assert _index(url, urls, None).status == "ok"
        assert _stored(url)[0] == genesis
        first.repoint(other)  # one endpoint restarted: not yet every one
        outcome = _index(url, urls, None)
        assert outcome.status == "ok"
        assert _stored(url)[0] == genesis
        second.repoint(other)  # both: the node was restarted
        outcome = _index(url, urls, None)
    assert outcome.status == "ok", outcome.detail
    head, head_hash = _head_hash(other)
    assert _stored(url) == (other_genesis, head, head_hash, None)
