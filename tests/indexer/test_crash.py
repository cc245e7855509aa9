"""kill -9 of ``rtrm index`` at random points, restarted each time: no duplicate, no loss.

The indexer runs as a real process (following the head, one block per getLogs call so
a kill lands mid-backfill), is killed with SIGKILL after a random delay while new blocks
keep arriving, and is restarted; at the end the store equals a fresh index. Once more
with every backfill dropping the deferrable indexes: a kill leaves them missing, and the
next indexer builds them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once, store_fingerprint

from chains.abi import encode_call
from chains.deploy import DEPLOYER
from chains.rpc import RpcClient, to_hex
from chains.world import feed_name
from indexer.store import open_store

pytestmark = pytest.mark.chain


def _indexer(config: str, url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RTRM_CONFIG": config, "RTRM_DATABASE_URL": url}
    command = ["rtrm", "index", "--max-span", "1", "--no-progress", *extra]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _new_rounds(state: Any, count: int, base: int) -> None:
    node = state.nodes[0]
    feed = state.contracts[str(node.chain_id)][feed_name("BTC")]
    with RpcClient(node.rpc_url) as client:
        for i in range(count):
            tx = {
                "from": DEPLOYER,
                "to": feed,
                "data": encode_call("updateAnswer(int256)", base + i),
                "gas": to_hex(200_000),
                "gasPrice": "0x0",
            }
            client.call("eth_sendTransaction", [tx])
            client.call("evm_mine")


@pytest.mark.parametrize("bulk", ["plain", "deferred indexes"])
def test_kill_9_at_random_points(
    small_devnet: Any, store_url: str, tmp_path: Path, bulk: str
) -> None:
    rng = random.Random(2026)
    log = tmp_path / "indexer.log"
    extra = ("--bulk-events", "0") if bulk == "deferred indexes" else ()
    for round_no in range(6):
        process = _indexer(small_devnet.config_path, store_url, log, *extra)
        time.sleep(rng.uniform(0.8, 2.5))  # start-up is ~0.7 s: kills land mid-indexing
        _new_rounds(small_devnet, 2, base=60_000_00000000 + round_no * 100)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL, log.read_text()[-3000:]
    outcomes = index_once(small_devnet.config_path, store_url)
    assert [o.status for o in outcomes] == ["ok"], log.read_text()[-2000:]
    store = open_store(store_url)
    try:
        assert store.missing_indexes() == []  # built again after the interrupted backfill
    finally:
        store.dispose()
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    index_once(small_devnet.config_path, fresh)
    chain_id = small_devnet.nodes[0].chain_id
    assert store_fingerprint(store_url, chain_id) == store_fingerprint(fresh, chain_id)
