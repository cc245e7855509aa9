"""A chain's restart back-off starts over once the chain made progress.

Short outages of a quiet chain's only endpoint (a fault proxy dropping every request in
front of a real anvil), with healthy following of empty blocks in between: each outage
must start again from the shortest delay, as the first one did, instead of paying the
longer delays the earlier outages grew (written events are not the only progress).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import Any

import pytest

from chains.endpoints import RpcPolicy
from chains.faultplan import Fault, FaultPlan, FaultRule
from chains.faultproxy import FaultProxy
from chains.rpc import RpcClient, hex_to_int
from chains.spec import ChainSpec
from chains.types import ChainId
from indexer.pipeline import IndexerOptions
from indexer.runner import run_indexers
from indexer.status import watermark
from indexer.store import open_store

pytestmark = pytest.mark.chain

CHAIN = 913379
FAST = RpcPolicy(request_timeout_s=0.3, call_timeout_s=0.6, max_attempts=2, backoff_max_s=0.1)


class _Restarts(logging.Handler):
    """The runner's 'restarting in N s' delays, with when they were logged."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"restarting in ([0-9.]+) s", record.getMessage())
        if found:
            self.delays.append((time.monotonic(), float(found.group(1))))


def test_the_back_off_starts_over_after_the_chain_moved_on(
    anvil_factory: Any, tmp_path: Any
) -> None:
    node = anvil_factory(chain_id=CHAIN)
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    restarts = _Restarts()
    runner_log = logging.getLogger("indexer.runner")
    runner_log.addHandler(restarts)
    with FaultProxy.start(node.url) as proxy, RpcClient(node.url) as chain:
        spec = ChainSpec(ChainId(CHAIN), "quiet", (proxy.url,), 0, 1.0)
        store = open_store(url)
        loop, stop = asyncio.new_event_loop(), asyncio.Event()
        options = IndexerOptions(poll_interval_s=0.05, rpc=FAST)
        job = run_indexers(store, [spec], stop=stop, options=options)
        thread = threading.Thread(target=loop.run_until_complete, args=(job,))
        thread.start()

        def caught_up() -> None:
            chain.call("evm_mine")  # an empty block: the cursor moves, no event
            head = hex_to_int(chain.call("eth_blockNumber"))
            deadline = time.monotonic() + 60
            while True:
                with store.engine.connect() as conn:
                    if watermark(conn).get(CHAIN, -1) >= head:
                        return
                assert time.monotonic() < deadline, f"block {head} never indexed"
                time.sleep(0.05)

        try:
            caught_up()
            outages: list[float] = []
            for _ in range(3):
                outages.append(time.monotonic())
                proxy.set_plan(FaultPlan(rules=(FaultRule(Fault.DROP, 1.0),)))
                time.sleep(2.5)
                proxy.set_plan(FaultPlan())
                caught_up()
                time.sleep(0.3)
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(60)
            loop.close()
            store.dispose()
            runner_log.removeHandler(restarts)
    firsts = []
    for start in outages:
        during = [delay for at, delay in restarts.delays if at >= start]
        assert during, f"no restart after the outage at {start}"
        firsts.append(during[0])
    assert len(restarts.delays) > len(outages)  # the back-off grew within an outage
    assert firsts == [0.5, 0.5, 0.5], restarts.delays
