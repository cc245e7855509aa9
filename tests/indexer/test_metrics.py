"""Prometheus tells a stalled chain from a healthy one, through a fault proxy on anvil.

The head, indexed block and lag move on every head poll (not only when a range is
written); RPC errors are exported while nothing is written; ``head_age_seconds`` grows
while no node answers; ``paused`` is 1 during a syncing pause and 0 once it clears.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chains.endpoints import RpcPolicy
from chains.faultplan import Fault, FaultPlan, FaultRule
from chains.faultproxy import FaultProxy
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from indexer.metrics import IndexerMetrics
from indexer.pipeline import IndexerOptions
from indexer.runner import run_indexers
from indexer.store import open_store

pytestmark = pytest.mark.chain

QUICK_RPC = RpcPolicy(
    request_timeout_s=0.5,
    call_timeout_s=1.5,
    max_attempts=3,
    backoff_base_s=0.01,
    backoff_max_s=0.1,
    bench_base_s=0.05,
    bench_max_s=0.2,
)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One small seeded chain, a block per transaction."""
    from chains.devnet import DevnetOptions, up

    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=1, users=4, seed=3, block_time_s=0, state_dir=home))
    try:
        yield state
    finally:
        for node in nodes:
            node.stop()


class _Following:
    """``run_indexers`` following the devnet through a fault proxy, in a thread."""

    def __init__(self, state: Any, tmp_path: Path) -> None:
        self.node = state.nodes[0]
        self.chain = str(self.node.chain_id)
        self.metrics = IndexerMetrics()
        self.proxy = FaultProxy.start(self.node.rpc_url)
        registry = load_registry(Path(state.config_path))
        chains = tuple(replace(c, rpc_urls=(self.proxy.url,)) for c in registry.chains)
        self.store = open_store(f"sqlite:///{tmp_path / 'rtrm.db'}")
        options = IndexerOptions(poll_interval_s=0.05, pause_recheck_s=0.2, rpc=QUICK_RPC)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        work = run_indexers(
            self.store, chains, stop=self.stop, metrics=self.metrics, options=options
        )
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(work,))
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=60)
        self.loop.close()
        self.proxy.stop()
        self.store.dispose()

    def value(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"chain_id": self.chain})

    def rpc_errors(self) -> float:
        return sum(
            sample.value
            for family in self.metrics.registry.collect()
            if family.name == "rtrm_indexer_rpc_errors"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels["chain_id"] == self.chain
        )

    def real_head(self) -> int:
        with RpcClient(self.node.rpc_url) as client:
            return hex_to_int(client.call("eth_blockNumber"))

    def mine(self, blocks: int) -> int:
        with RpcClient(self.node.rpc_url) as client:
            client.call("anvil_mine", [hex(blocks)])
        return self.real_head()


def _until(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def following(devnet: Any, tmp_path: Path) -> Iterator[_Following]:
    run = _Following(devnet, tmp_path)
    try:
        head = run.real_head()
        _until("caught up", lambda: run.value("rtrm_indexer_indexed_block") == head)
        yield run
    finally:
        run.close()


def test_lag_and_errors_grow_while_nothing_is_written(following: _Following) -> None:
    run = following
    indexed = run.value("rtrm_indexer_indexed_block")
    assert run.value("rtrm_indexer_lag_blocks") == 0
    logs = frozenset({"eth_getLogs", "eth_getBlockReceipts", "eth_getTransactionReceipt"})
    run.proxy.set_plan(FaultPlan(rules=(FaultRule(Fault.HTTP_500, 1.0, methods=logs),)))
    head = run.mine(20)
    _until("the head gauge follows the node", lambda: run.value("rtrm_indexer_head_block") == head)
    _until("lag is head - indexed", lambda: run.value("rtrm_indexer_lag_blocks") == 20)
    _until("errors exported without a write", lambda: run.rpc_errors() > 0)
    assert run.value("rtrm_indexer_indexed_block") == indexed
    run.proxy.set_plan(FaultPlan())
    _until("caught up again", lambda: run.value("rtrm_indexer_lag_blocks") == 0)


def test_a_silent_chain_shows_a_growing_head_age(following: _Following) -> None:
    run = following
    age = run.value("rtrm_indexer_head_age_seconds")
    assert age is not None
    assert age < 2.0
    errors = run.rpc_errors()
    known_head = run.value("rtrm_indexer_head_block")
    run.proxy.set_plan(FaultPlan(rules=(FaultRule(Fault.DROP, 1.0),)))
    run.mine(5)
    _until("errors of a dropping node exported", lambda: run.rpc_errors() > errors)
    _until("head age grows", lambda: (run.value("rtrm_indexer_head_age_seconds") or 0) > 3.0)
    assert run.value("rtrm_indexer_head_block") == known_head  # unknown: the last one seen
    run.proxy.set_plan(FaultPlan())
    _until("answers again", lambda: (run.value("rtrm_indexer_head_age_seconds") or 9) < 1.0)
    _until("caught up again", lambda: run.value("rtrm_indexer_lag_blocks") == 0)


def test_a_syncing_pause_sets_and_clears_the_paused_gauge(following: _Following) -> None:
    run = following
    assert run.value("rtrm_indexer_paused") == 0
    run.proxy.set_syncing(5)
    _until("paused", lambda: run.value("rtrm_indexer_paused") == 1)
    run.proxy.set_syncing(None)
    _until("resumed", lambda: run.value("rtrm_indexer_paused") == 0)
