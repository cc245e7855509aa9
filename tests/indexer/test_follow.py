"""Following the head: a new block is in the store within about a block time; the CLI's
``rtrm index`` and ``rtrm status`` work against a live devnet; the watermark is exact."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import eth_price_round

from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from indexer.runner import run_indexers
from indexer.status import watermark
from indexer.store import open_store

pytestmark = pytest.mark.chain


def test_new_blocks_are_indexed_within_a_block_time(small_devnet: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    registry = replace(load_registry(Path(small_devnet.config_path)), database_url=url)
    store = open_store(url)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(
        target=loop.run_until_complete, args=(run_indexers(store, registry.chains, stop=stop),)
    )
    runner.start()
    try:
        delays = []
        for i in range(5):
            block = eth_price_round(small_devnet, 4_000_00000000 + i)
            mined = time.monotonic()
            while True:
                with store.engine.connect() as conn:
                    if watermark(conn).get(small_devnet.nodes[0].chain_id, -1) >= block:
                        break
                assert time.monotonic() - mined < 10, f"block {block} not indexed in 10 s"
                time.sleep(0.02)
            delays.append(time.monotonic() - mined)
        # block time is 1 s here (the devnet's chain 1 plan); polling is a quarter of it
        assert sorted(delays)[len(delays) // 2] < 2.0, delays
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(timeout=30)
        loop.close()
        store.dispose()


def test_cli_index_once_and_status(small_devnet: Any, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RTRM_CONFIG": small_devnet.config_path,
        "RTRM_DATABASE_URL": f"sqlite:///{tmp_path / 'rtrm.db'}",
    }
    run = [sys.executable, "-m", "rtrm"]
    index = subprocess.run(
        [*run, "index", "--once", "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert index.returncode == 0, index.stderr
    summary = json.loads(index.stdout)
    assert summary[0]["status"] == "ok"
    assert summary[0]["events"] > 0
    assert "blocks" in index.stderr  # one INFO line per range, with the block range
    status = subprocess.run(
        [*run, "status", "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    keys = {
        "chain_id",
        "head",
        "indexed_block",
        "indexed_block_hash",
        "finalized_block",
        "events",
        "reorgs",
        "lag_blocks",
    }
    assert keys <= set(rows[0])
    assert rows[0]["indexed_block"] == summary[0]["indexed_block"]
    assert rows[0]["events"] == summary[0]["events"]
    table = subprocess.run([*run, "status"], env=env, capture_output=True, text=True, check=False)
    assert "Indexing status" in table.stdout


def test_bad_arguments_are_clear_errors(small_devnet: Any, tmp_path: Path) -> None:
    env = {**os.environ, "RTRM_CONFIG": small_devnet.config_path}
    run = [sys.executable, "-m", "rtrm", "index", "--once"]
    unknown = subprocess.run(
        [*run, "--chain", "42"], env=env, capture_output=True, text=True, check=False
    )
    assert unknown.returncode == 2
    assert "42" in unknown.stderr
    bad_db = subprocess.run(
        run,
        env={**env, "RTRM_DATABASE_URL": "mysql://nope"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad_db.returncode == 2
    assert "supports sqlite and postgresql" in bad_db.stderr


def test_two_indexers_for_one_chain_on_postgres(small_devnet: Any, store_url: str) -> None:
    """Only one writes; the other reports the lock (or, following, stands by)."""
    if not store_url.startswith("postgresql"):
        pytest.skip("the single-writer lock is PostgreSQL's; SQLite has one writer anyway")
    env = {**os.environ, "RTRM_CONFIG": small_devnet.config_path, "RTRM_DATABASE_URL": store_url}
    run = [sys.executable, "-m", "rtrm", "index", "--no-progress"]
    first = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        store = open_store(store_url)
        chain_id = small_devnet.nodes[0].chain_id
        deadline = time.monotonic() + 60
        while True:  # wait until the first one writes
            with store.engine.connect() as conn:
                if watermark(conn).get(chain_id, -1) > 0:
                    break
            assert time.monotonic() < deadline, "the first indexer never wrote"
            time.sleep(0.2)
        store.dispose()
        second = subprocess.run(
            [*run, "--once", "--json"], env=env, capture_output=True, text=True, check=False
        )
        assert second.returncode == 1
        assert json.loads(second.stdout)[0]["status"] == "locked"
        assert "another indexer holds its writer lock" in second.stderr
    finally:
        first.terminate()  # SIGTERM: finishes the range in flight, releases the lock
        assert first.wait(timeout=30) == 0
    again = subprocess.run(
        [*run, "--once", "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["status"] == "ok"


def test_a_broken_chain_never_stalls_the_others(tmp_path: Path) -> None:
    """Chain 10's only endpoint drops every request; chain 1 is indexed to its head."""
    from chains.devnet import DevnetOptions, up
    from chains.faultplan import Fault, FaultPlan, FaultRule
    from chains.faultproxy import FaultProxy

    state, nodes = up(
        DevnetOptions(chains=2, users=10, seed=3, block_time_s=0, state_dir=tmp_path / "net")
    )
    dead = FaultProxy.start(nodes[1].url, FaultPlan(rules=(FaultRule(Fault.DROP, 1.0),)))
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    try:
        registry = load_registry(Path(state.config_path))
        good, bad = registry.chains
        chains = (good, replace(bad, rpc_urls=(dead.url,)))
        store = open_store(url)
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        runner = threading.Thread(
            target=loop.run_until_complete, args=(run_indexers(store, chains, stop=stop),)
        )
        runner.start()
        try:
            with RpcClient(nodes[0].url) as client:
                head = hex_to_int(client.call("eth_blockNumber"))
            deadline = time.monotonic() + 60
            while True:
                with store.engine.connect() as conn:
                    if watermark(conn).get(int(good.chain_id), -1) >= head:
                        break
                assert time.monotonic() < deadline, "the healthy chain stalled"
                time.sleep(0.1)
            with store.engine.connect() as conn:
                assert int(bad.chain_id) not in watermark(conn)
        finally:
            loop.call_soon_threadsafe(stop.set)
            runner.join(timeout=60)
            loop.close()
            store.dispose()
    finally:
        dead.stop()
        for node in nodes:
            node.stop()
