"""Nodes that are behind, inconsistent, or without finality tags, on a real anvil.

A :class:`RewritingProxy` (a :class:`~chains.faultproxy.FaultProxy` that also rewrites
answers) stands in front of the node: a node a few blocks behind the indexed block, not
syncing (a load balancer's lagging backend) is waited for — never a reorg, never a
rollback; a range whose last block stays missing makes the fetcher poll the head again
after a bounded, backed-off number of readings, and logs that stay inconsistent with
their header are a clear error; a node that answers the ``finalized`` and ``safe`` tags
with an error (pre-merge geth) is indexed, with finality from ``finality_depth``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import first_chain_status, index_once, mine_price_blocks, store_fingerprint

from chains.aiorpc import AsyncRpcClient
from chains.devnet import DevnetState
from chains.faultplan import FaultPlan
from chains.faultproxy import FaultProxy
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from chains.rpcwire import dumps, loads
from chains.world import feed_name
from indexer.exceptions import MalformedAnswerError
from indexer.fetch import RangeFetcher
from indexer.ranges import RangeConfig, RangeController
from indexer.reorg import Reorged

pytestmark = pytest.mark.chain

Rewrite = Callable[[Mapping[str, Any], dict[str, Any]], dict[str, Any]]


class RewritingProxy(FaultProxy):
    """A fault proxy whose answers pass through ``rewrite(call, reply)``; with ``flip``
    set, every other HTTP request is served as by a node ``flip`` blocks behind (a load
    balancer alternating between two backends); ``eth_syncing`` is false unless
    ``syncing``."""

    rewrite: Rewrite | None = None
    flip: int | None = None
    syncing = False
    _requests = itertools.count()

    async def _answer(
        self,
        upstream: str,
        *,
        body: bytes,
        parsed: Any,
        calls: list[dict[str, Any]],
        plan: FaultPlan,
        lag: int | None,
    ) -> tuple[int, bytes]:
        if self.flip is not None:
            lag = self.flip if next(self._requests) % 2 else None
        status, raw = await super()._answer(
            upstream, body=body, parsed=parsed, calls=calls, plan=plan, lag=lag
        )
        try:
            answer = loads(raw)
        except ValueError:
            return status, raw
        replies = answer if isinstance(answer, list) else [answer]
        by_id = {call.get("id"): call for call in calls}
        out = []
        for reply in replies:
            call = by_id.get(reply.get("id")) if isinstance(reply, dict) else None
            new = reply
            if call is not None and call.get("method") == "eth_syncing" and not self.syncing:
                new = {**new, "result": False}
            if call is not None and self.rewrite is not None:
                new = self.rewrite(call, new)
            out.append(new)
        return status, dumps(out if isinstance(answer, list) else out[0])


def _start(upstream_url: str) -> RewritingProxy:
    proxy = RewritingProxy.start(upstream_url)
    assert isinstance(proxy, RewritingProxy)
    return proxy


@pytest.fixture
def proxied(small_devnet: DevnetState) -> Iterator[RewritingProxy]:
    with _start(small_devnet.nodes[0].rpc_url) as proxy:
        yield proxy


def _feed(state: DevnetState) -> str:
    node = state.nodes[0]
    return str(state.contracts[str(node.chain_id)][feed_name("ETH")])


def _assert_canonical(state: DevnetState, url: str, tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    index_once(state.config_path, fresh)
    chain_id = state.nodes[0].chain_id
    assert store_fingerprint(url, chain_id) == store_fingerprint(fresh, chain_id)


# ---------------------------------------------------------------- a node behind the cursor


def test_a_node_behind_the_indexed_block_is_waited_for(
    devnet: DevnetState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    with _start(devnet.nodes[0].rpc_url) as proxy:
        index_once(devnet.config_path, url, rpc_urls=(proxy.url,))
        head = mine_price_blocks(devnet, 5, base=2_000_00000000)
        index_once(devnet.config_path, url, rpc_urls=(proxy.url,))
        assert first_chain_status(url).indexed_block == head
        before = store_fingerprint(url, devnet.nodes[0].chain_id)
        proxy.set_syncing(3)  # blocks above head - 3 are missing, eth_syncing stays false
        with caplog.at_level(logging.INFO):
            outcomes = index_once(devnet.config_path, url, rpc_urls=(proxy.url,))
        assert [o.status for o in outcomes] == ["ok"]
        assert f"is at block {head - 3}, behind the indexed block {head}" in caplog.text
        status = first_chain_status(url)
        assert (status.reorgs, status.indexed_block) == (0, head)
        assert store_fingerprint(url, devnet.nodes[0].chain_id) == before
        proxy.set_syncing(None)
        mine_price_blocks(devnet, 2, base=2_100_00000000)
        outcomes = index_once(devnet.config_path, url, rpc_urls=(proxy.url,))
    assert [o.status for o in outcomes] == ["ok"]
    assert first_chain_status(url).reorgs == 0
    _assert_canonical(devnet, url, tmp_path)


def test_a_load_balancer_flipping_to_a_lagging_backend_causes_no_reorg(
    devnet: DevnetState, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    index_once(devnet.config_path, url)
    with _start(devnet.nodes[0].rpc_url) as proxy:
        proxy.flip = 5  # every other answer comes from a backend 5 blocks behind
        for round_ in range(4):
            mine_price_blocks(devnet, 3, base=3_000_00000000 + 10 * round_)
            outcomes = index_once(devnet.config_path, url, rpc_urls=(proxy.url,))
            assert [o.status for o in outcomes] == ["ok"]
    index_once(devnet.config_path, url)  # the rest, from the up-to-date node
    assert first_chain_status(url).reorgs == 0
    _assert_canonical(devnet, url, tmp_path)


# ---------------------------------------------------------------- ranges that do not settle


async def _fetch(
    proxy_url: str, chain_id: int, address: str, first: int, last: int, **options: Any
) -> tuple[float, Exception | None]:
    ranges = RangeController(chain_id, RangeConfig(initial_span=16))
    async with AsyncRpcClient([proxy_url], chain_id=chain_id) as client:
        fetcher = RangeFetcher(chain_id, client, [address], ranges, **options)
        started = time.monotonic()
        try:
            await asyncio.wait_for(fetcher.fetch(first, last, last, 0), 30)
        except (Reorged, MalformedAnswerError) as exc:
            return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _calls(proxy: FaultProxy) -> int:
    return sum(proxy.stats().received_calls.values())


def test_a_missing_last_block_polls_the_head_again_after_bounded_readings(
    small_devnet: DevnetState, proxied: RewritingProxy
) -> None:
    chain_id = small_devnet.nodes[0].chain_id
    with RpcClient(small_devnet.nodes[0].rpc_url) as rpc:
        head = hex_to_int(rpc.call("eth_blockNumber"))
    proxied.set_syncing(2)  # the head poll said `head`; this backend is 2 blocks behind
    before = _calls(proxied)
    elapsed, error = asyncio.run(_fetch(proxied.url, chain_id, _feed(small_devnet), 1, head))
    assert isinstance(error, Reorged)
    assert f"the node has no block {head}" in str(error)
    assert elapsed < 10
    assert _calls(proxied) - before <= 40  # six readings of ~4 calls, plus the chain check
    # A node that keeps claiming the block without serving it is an error, not a wait.
    elapsed, error = asyncio.run(
        _fetch(proxied.url, chain_id, _feed(small_devnet), 1, head, missing_patience_s=0)
    )
    assert isinstance(error, MalformedAnswerError)
    assert f"range 1..{head}: the node has no block {head}" in str(error)
    assert "load balancer" in str(error)


def test_logs_that_disagree_with_their_header_are_a_clear_error(
    small_devnet: DevnetState, proxied: RewritingProxy
) -> None:
    chain_id = small_devnet.nodes[0].chain_id
    with RpcClient(small_devnet.nodes[0].rpc_url) as rpc:
        where = {"fromBlock": "0x0", "toBlock": "latest", "address": _feed(small_devnet)}
        logs = rpc.call("eth_getLogs", [where])
    last = hex_to_int(logs[-1]["blockNumber"])
    good = logs[-1]["blockHash"]
    bad = "0x" + good[2:].upper()  # a proxy that changes the case of hashes in logs

    def upper_log_hashes(call: Mapping[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        if call.get("method") != "eth_getLogs" or not isinstance(reply.get("result"), list):
            return reply
        changed = [
            {**e, "blockHash": bad} if e.get("blockHash") == good else e for e in reply["result"]
        ]
        return {**reply, "result": changed}

    proxied.rewrite = upper_log_hashes
    before = _calls(proxied)
    elapsed, error = asyncio.run(_fetch(proxied.url, chain_id, _feed(small_devnet), last - 3, last))
    assert isinstance(error, MalformedAnswerError)
    message = str(error)
    assert f"of block {last} carries blockHash {bad}" in message
    assert f"header has hash {good}" in message
    assert "logs and headers disagree" in message
    assert elapsed < 10
    assert _calls(proxied) - before <= 40


def test_logs_marked_removed_poll_the_head_again(
    small_devnet: DevnetState, proxied: RewritingProxy
) -> None:
    """A log marked ``removed`` says the chain is reorganising: after the bounded readings
    the pipeline polls the head and runs reorg detection (Reorged), not an error."""
    chain_id = small_devnet.nodes[0].chain_id
    with RpcClient(small_devnet.nodes[0].rpc_url) as rpc:
        where = {"fromBlock": "0x0", "toBlock": "latest", "address": _feed(small_devnet)}
        last = hex_to_int(rpc.call("eth_getLogs", [where])[-1]["blockNumber"])

    def mark_removed(call: Mapping[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        if call.get("method") != "eth_getLogs" or not isinstance(reply.get("result"), list):
            return reply
        return {**reply, "result": [{**e, "removed": True} for e in reply["result"]]}

    proxied.rewrite = mark_removed
    elapsed, error = asyncio.run(_fetch(proxied.url, chain_id, _feed(small_devnet), last - 3, last))
    assert isinstance(error, Reorged)
    assert "is marked removed" in str(error)
    assert elapsed < 10


# ---------------------------------------------------------------- finality without tags


def _tags_answered(mode: str, tags: Sequence[str]) -> Rewrite:
    def rewrite(call: Mapping[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        params = call.get("params") or [None]
        if call.get("method") != "eth_getBlockByNumber" or params[0] not in tags:
            return reply
        if mode == "null":  # a young chain: nothing finalized yet
            return {"jsonrpc": "2.0", "id": reply["id"], "result": None}
        error = {"code": -32602, "message": "invalid argument 0: hex string without 0x prefix"}
        return {"jsonrpc": "2.0", "id": reply["id"], "error": error}

    return rewrite


@pytest.mark.parametrize(
    ("mode", "tags", "finality"),
    [
        ("error", ("finalized", "safe"), "depth"),  # pre-merge geth
        ("null", ("finalized", "safe"), "depth"),
        ("error", ("finalized",), "safe"),  # anvil's safe tag: head - 32
    ],
)
def test_a_node_without_finality_tags_is_indexed_with_the_configured_depth(
    small_devnet: DevnetState,
    proxied: RewritingProxy,
    tmp_path: Path,
    *,
    mode: str,
    tags: tuple[str, ...],
    finality: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    proxied.rewrite = _tags_answered(mode, tags)
    outcomes = index_once(small_devnet.config_path, url, rpc_urls=(proxied.url,))
    assert [o.status for o in outcomes] == ["ok"]
    with RpcClient(small_devnet.nodes[0].rpc_url) as rpc:
        head = hex_to_int(rpc.call("eth_blockNumber"))
        safe = hex_to_int(rpc.call("eth_getBlockByNumber", ["safe", False])["number"])
    depth = load_registry(Path(small_devnet.config_path)).chains[0].finality_depth
    status = first_chain_status(url)
    assert status.indexed_block == head
    assert status.finalized_block == (max(0, head - depth) if finality == "depth" else safe)
    assert status.events > 0
