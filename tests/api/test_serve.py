"""``rtrm serve`` as a user runs it: a subprocess with live indexers on a devnet.

A user withdraws part of a lending supply on chain; within a couple of seconds the
service has indexed the block, refreshed only that user (no market data moved: the
incremental path), and ``/v1/users/{address}/risk`` answers at the new watermark with
exactly the report the library computes there. SIGTERM then stops it with exit code 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from rtrm_testing import serve_process

from aggregation.loader import load_snapshot
from aggregation.user_report import user_risk_report
from api.encoding import dumps
from chains.abi import encode_call
from chains.keeper import ChainContracts, crash
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from indexer.store import open_store

pytestmark = pytest.mark.chain


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Any]:
    from chains.devnet import DevnetOptions, up

    state, nodes = up(
        DevnetOptions(chains=1, users=40, seed=7, block_time_s=0, state_dir=tmp_path / "devnet")
    )
    try:
        yield state
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def served(devnet: Any, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {"RTRM_API_TOKEN": "t" * 32}
    log = tmp_path / "serve.log"
    with serve_process(devnet.config_path, log, "--full-recompute", "3600", env=env) as served:
        yield served


def _wait_for(predicate: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def _reloads(metrics: str, kind: str) -> float:
    """The snapshot loads of ``kind`` (``full`` or ``users``) so far, from /metrics."""
    prefix = f'rtrm_api_snapshot_reloads_total{{kind="{kind}"}}'
    line = next((x for x in metrics.splitlines() if x.startswith(prefix)), None)
    return float(line.split()[-1]) if line is not None else 0.0


def _supplier(base: str, users: list[str]) -> tuple[str, dict[str, Any]]:
    """A user with a lending supply and no debt anywhere, and that supply."""
    for user in users:
        chains = requests.get(f"{base}/v1/users/{user}/positions", timeout=30).json()["chains"]
        balances = [b for c in chains for b in c["balances"]]
        supplies = [b for b in balances if b["protocol_kind"] == "lending" and b["amount"] > 0]
        if supplies and not any(b["kind"] == "debt" and b["amount"] for b in balances):
            return user, supplies[0]
    raise AssertionError("no pure supplier in the seeded world")


def test_serve_reflects_a_new_block_then_stops_on_sigterm(devnet: Any, served: Any) -> None:
    process, base = served
    _wait_for(lambda: requests.get(f"{base}/healthz", timeout=30).ok)
    _wait_for(
        lambda: all(
            c["lag_blocks"] == 0
            for c in requests.get(f"{base}/v1/status", timeout=30).json()["chains"]
        )
    )
    exposure = requests.get(f"{base}/v1/assets/exposure?top=100", timeout=30).json()
    users = sorted({h["address"] for a in exposure["assets"] for h in a["top_holders"]})
    user, supply = _supplier(base, users)
    before = requests.get(f"{base}/v1/users/{user}/risk", timeout=30).json()
    users_before = _reloads(requests.get(f"{base}/metrics", timeout=30).text, "users")
    chain_id = int(next(iter(before["watermark"])))
    rpc_url = devnet.nodes[0].rpc_url
    with RpcClient(rpc_url) as client:
        data = encode_call(
            "withdraw(address,uint256,address)", supply["token"], supply["amount"] // 10, user
        )
        tx = {"from": user, "to": supply["protocol_address"], "data": data, "gas": "0x7a120"}
        tx_hash = client.call("eth_sendTransaction", [{**tx, "gasPrice": "0x0"}])
        receipt = _wait_for(lambda: client.call("eth_getTransactionReceipt", [tx_hash]))
        assert receipt["status"] == "0x1", receipt
        block = hex_to_int(receipt["blockNumber"])
    mined = time.monotonic()

    def reflected() -> dict[str, Any] | None:
        risk = requests.get(f"{base}/v1/users/{user}/risk", timeout=30).json()
        return risk if risk["watermark"][str(chain_id)] >= block else None

    after = _wait_for(reflected, timeout_s=20.0)
    assert time.monotonic() - mined < 10.0
    assert after["collateral_usd"] < before["collateral_usd"]
    registry = load_registry(Path(devnet.config_path))
    store = open_store(registry.database_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            cut = {int(c): b for c, b in after["watermark"].items()}
            snapshot = load_snapshot(conn, registry, cut)
    finally:
        store.dispose()
    assert after == json.loads(dumps(user_risk_report(snapshot, user)))
    metrics = requests.get(f"{base}/metrics", timeout=30).text
    # reflected by loading the users the block touched (a full load may run beside it, once
    # the overlay is older than the cache's full_every_s: on a slow machine, during the test)
    assert _reloads(metrics, "users") > users_before
    full_before = _reloads(metrics, "full")

    # an oracle round moves every mark: the whole snapshot is loaded again
    node = devnet.nodes[0]
    chain = ChainContracts(
        node.chain_id, node.rpc_url, devnet.contracts[str(node.chain_id)],
        devnet.tokens[str(node.chain_id)],
    )  # fmt: skip
    crash([chain], asset="ETH", move=0.02, blocks=1)
    with RpcClient(rpc_url) as client:
        head = hex_to_int(client.call("eth_blockNumber"))
    moved = _wait_for(
        lambda: (
            (r := requests.get(f"{base}/v1/users/{user}/risk", timeout=30).json())
            and r["watermark"][str(chain_id)] >= head
            and r
        )
    )
    assert moved["greeks"]["ETH"]["spot_usd"] > after["greeks"]["ETH"]["spot_usd"]
    assert _reloads(requests.get(f"{base}/metrics", timeout=30).text, "full") > full_before
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
