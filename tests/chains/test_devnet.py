"""The devnet end to end on real anvil nodes: deploy, seed, crash, liquidate, stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode

from chains.abi import encode_call
from chains.anvil import AnvilNode
from chains.artifacts import EventAbi, event_table
from chains.deploy import DEPLOYER
from chains.devnet import DevnetOptions, DevnetState, down, load_state, up
from chains.exceptions import DevnetError, ExecutionRevertedError
from chains.keeper import ChainContracts, crash
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int, to_hex
from chains.seed import LIQUIDATOR
from chains.types import AssetKind

pytestmark = pytest.mark.chain


def _logs(client: RpcClient) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = client.call(
        "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}]
    )
    return logs


def _transact(client: RpcClient, sender: str, to: str, data: str) -> dict[str, Any]:
    """Send one transaction on an automining node and return its successful receipt."""
    tx_hash = client.call(
        "eth_sendTransaction",
        [{"from": sender, "to": to, "data": data, "gas": to_hex(3_000_000), "gasPrice": "0x0"}],
    )
    receipt: dict[str, Any] | None = None
    for _ in range(200):  # anvil may answer null for a few ms after mining
        receipt = client.call("eth_getTransactionReceipt", [tx_hash])
        if receipt is not None:
            break
        time.sleep(0.01)
    assert receipt is not None
    assert receipt["status"] == "0x1", f"{data[:10]} to {to} reverted"
    return receipt


def _decode(event: EventAbi, log: dict[str, Any]) -> tuple[Any, ...]:
    indexed = [p for p in event.inputs if p["indexed"]]
    plain = [p for p in event.inputs if not p["indexed"]]
    topics = [bytes.fromhex(t[2:]) for t in log["topics"][1:]]
    assert len(topics) == len(indexed)
    values = [abi_decode([p["type"]], t)[0] for p, t in zip(indexed, topics, strict=True)]
    values += abi_decode([p["type"] for p in plain], bytes.fromhex(log["data"][2:]))
    return tuple(values)


@pytest.fixture(scope="module")
def devnet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DevnetState, list[AnvilNode]]]:
    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=3, users=150, seed=7, block_time_s=0, state_dir=home))
    try:
        yield state, nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def crashed(devnet: tuple[DevnetState, list[AnvilNode]]) -> dict[int, Any]:
    state, _ = devnet
    chains = [
        ChainContracts(
            n.chain_id, n.rpc_url, state.contracts[str(n.chain_id)], state.tokens[str(n.chain_id)]
        )
        for n in state.nodes
    ]
    return crash(chains, asset="ETH", move=-0.5, blocks=2)


def test_config_written_with_the_asset_map(devnet: tuple[DevnetState, list[AnvilNode]]) -> None:
    state, _ = devnet
    registry = load_registry(Path(state.config_path))
    assert registry.chain_ids == (1, 10, 42161)
    remote = registry.chain(10)
    rveth = remote.token("rvETH")
    assert rveth.kind is AssetKind.RECEIPT_SHARE
    assert registry.root_asset(rveth.asset_id).asset_id == "ETH"
    assert remote.token("USDC.e").kind is AssetKind.BRIDGED
    assert registry.chain(1).contract("lending_pool").deployed_block >= 1
    assert remote.genesis_hash is not None


def test_chainlink_style_reads(devnet: tuple[DevnetState, list[AnvilNode]]) -> None:
    state, _ = devnet
    node = state.nodes[0]
    feed = state.contracts[str(node.chain_id)]["feed_eth_usd"]
    with RpcClient(node.rpc_url) as client:
        decimals = hex_to_int(
            client.call("eth_call", [{"to": feed, "data": encode_call("decimals()")}, "latest"])
        )
        raw = client.call(
            "eth_call", [{"to": feed, "data": encode_call("latestRoundData()")}, "latest"]
        )
        round_id, answer, started, updated, answered_in = abi_decode(
            ["uint80", "int256", "uint256", "uint256", "uint80"], bytes.fromhex(raw[2:])
        )
        first = client.call(
            "eth_call", [{"to": feed, "data": encode_call("getRoundData(uint80)", 1)}, "latest"]
        )
        logs = client.call(
            "eth_getLogs", [{"address": feed, "fromBlock": "0x0", "toBlock": "latest"}]
        )
    assert decimals == 8
    assert round_id == answered_in > 1
    assert started == updated > 0
    assert abi_decode(["uint80", "int256"], bytes.fromhex(first[2:])[:64]) == (1, 3_000 * 10**8)
    answers = [
        hex_to_int(log["topics"][1])
        for log in logs
        if len(log["topics"]) == 3 and log["data"] != "0x"
    ]
    assert answers[-1] == answer


def test_crash_liquidates_and_leaves_bad_debt(crashed: dict[int, Any]) -> None:
    total_liquidations = sum(c.lending + c.options + c.perps for c in crashed.values())
    bad_debts = sum(
        c.lending_deficits + c.options_bad_debts + c.perps_bad_debts for c in crashed.values()
    )
    assert total_liquidations > 0
    assert bad_debts > 0
    assert all(c.reverted == 0 for c in crashed.values())


def test_every_event_type_is_emitted_and_decodes(
    devnet: tuple[DevnetState, list[AnvilNode]], crashed: dict[int, Any]
) -> None:
    """Seeding plus a crash emits most events; the few admin and slow paths left are done
    here, as an operator or user would."""
    state, _ = devnet
    home = state.nodes[0]
    contracts, tokens = state.contracts[str(home.chain_id)], state.tokens[str(home.chain_id)]
    with RpcClient(home.rpc_url) as client:
        fund = contracts["insurance_fund"]
        _transact(
            client, DEPLOYER, fund, encode_call("setOperator(address,bool)", LIQUIDATOR, True)
        )
        _transact(
            client,
            DEPLOYER,
            fund,
            encode_call("payClaim(bytes32,address,uint256)", b"claim-1", DEPLOYER, 10**6),
        )
        escrow = contracts["bridge_escrow"]
        _transact(
            client,
            DEPLOYER,
            escrow,
            encode_call(
                "release(address,address,uint256,bytes32)",
                tokens["rvETH"],
                DEPLOYER,
                1,
                b"\x01" * 32,
            ),
        )
        logs = _logs(client)
        table = event_table()
        requested = [log for log in logs if table[log["topics"][0]].name == "WithdrawalRequested"]
        client.call("evm_increaseTime", [20 * 86_400 + 60])
        underwriter = "0x" + requested[0]["topics"][1][26:]
        _transact(client, underwriter, fund, encode_call("withdraw()"))
        opened = [log for log in logs if table[log["topics"][0]].name == "PositionOpened"]
        buyer = "0x" + opened[0]["topics"][1][26:]
        _transact(
            client,
            buyer,
            contracts["options_market"],
            encode_call("withdrawCollateral(address,uint256)", tokens["USDC"], 1),
        )
        usdc, perps = tokens["USDC"], contracts["perps_market"]
        _transact(client, DEPLOYER, usdc, encode_call("mint(address,uint256)", DEPLOYER, 10**9))
        _transact(client, DEPLOYER, usdc, encode_call("approve(address,uint256)", perps, 10**9))
        _transact(client, DEPLOYER, perps, encode_call("depositMargin(uint256)", 10**7))
        _transact(client, DEPLOYER, perps, encode_call("withdrawMargin(uint256)", 10**6))
    _cover_a_deficit(state)
    _liquidate_a_call_spread(state)
    seen: dict[str, int] = {}
    for node in state.nodes:
        with RpcClient(node.rpc_url) as client:
            for log in _logs(client):
                event = event_table()[log["topics"][0]]  # KeyError: an event no ABI declares
                _decode(event, log)
                seen[event.signature] = seen.get(event.signature, 0) + 1
    missing = sorted({e.signature for e in event_table().values()} - set(seen))
    assert missing == [], f"never emitted: {missing}"


def _liquidate_a_call_spread(state: DevnetState) -> None:
    """Liquidate a BTC bull call spread after BTC doubles: the short leg breaks maintenance
    while the long leg is worth more, so the account is credited (``CollateralCredited``)."""
    home = state.nodes[0]
    contracts, tokens = state.contracts[str(home.chain_id)], state.tokens[str(home.chain_id)]
    market, usdc = contracts["options_market"], tokens["USDC"]
    user = "0x00000000000000000000000000000000000C0FFE"
    with RpcClient(home.rpc_url) as client:
        table = event_table()
        btc_calls = [
            (hex_to_int(log["topics"][1]), _decode(table[log["topics"][0]], log))
            for log in _logs(client)
            if table[log["topics"][0]].name == "SeriesCreated"
        ]
        btc_calls = [
            (series, fields)
            for series, fields in btc_calls
            if fields[1].rstrip(b"\0") == b"BTC" and fields[4]
        ]
        latest_expiry = max(fields[2] for _, fields in btc_calls)
        by_strike = sorted((f[3], s) for s, f in btc_calls if f[2] == latest_expiry)
        (low_strike, low), (high_strike, high) = by_strike[0], by_strike[-1]
        collateral = high_strike // 10**12 // 4  # USDC units: a quarter of the high strike
        _transact(client, DEPLOYER, usdc, encode_call("mint(address,uint256)", user, collateral))
        _transact(client, user, usdc, encode_call("approve(address,uint256)", market, collateral))
        _transact(
            client,
            user,
            market,
            encode_call("depositCollateral(address,uint256)", usdc, collateral),
        )
        for series, size in ((low, 10**18), (high, -(10**18))):
            _transact(
                client, user, market, encode_call("trade(uint256,int256,uint256)", series, size, 0)
            )
    assert low_strike < high_strike
    chain = ChainContracts(home.chain_id, home.rpc_url, contracts, tokens)
    crash([chain], asset="BTC", move=1.0, blocks=1)


def _cover_a_deficit(state: DevnetState) -> None:
    """Pay one unit of a reserve deficit the crash left, as the backstop will."""
    table = event_table()
    for node in state.nodes:
        contracts = state.contracts[str(node.chain_id)]
        with RpcClient(node.rpc_url) as client:
            created = [
                log for log in _logs(client) if table[log["topics"][0]].name == "DeficitCreated"
            ]
            if not created:
                continue
            asset = "0x" + created[0]["topics"][2][26:]
            pool = contracts["lending_pool"]
            _transact(
                client, DEPLOYER, asset, encode_call("mint(address,uint256)", DEPLOYER, 10**30)
            )
            _transact(
                client, DEPLOYER, asset, encode_call("approve(address,uint256)", pool, 10**30)
            )
            _transact(
                client,
                DEPLOYER,
                pool,
                encode_call("eliminateReserveDeficit(address,uint256)", asset, 1),
            )
            return
    pytest.fail("the crash left no lending deficit on any chain")


def test_insurance_fund_pays_a_claim_once(devnet: tuple[DevnetState, list[AnvilNode]]) -> None:
    state, _ = devnet
    node = state.nodes[1]
    fund = state.contracts[str(node.chain_id)]["insurance_fund"]
    pay = encode_call("payClaim(bytes32,address,uint256)", b"claim-42", DEPLOYER, 5 * 10**6)
    with RpcClient(node.rpc_url) as client:
        _transact(client, DEPLOYER, fund, pay)
        with pytest.raises(ExecutionRevertedError) as excinfo:
            client.call("eth_call", [{"from": DEPLOYER, "to": fund, "data": pay}, "latest"])
        paid = client.call(
            "eth_call",
            [{"to": fund, "data": encode_call("isClaimPaid(bytes32)", b"claim-42")}, "latest"],
        )
    assert excinfo.value.reason == "claim already paid"
    assert hex_to_int(paid) == 1


def _event_fingerprint(state: DevnetState) -> dict[int, list[tuple[Any, ...]]]:
    out = {}
    for node in state.nodes:
        with RpcClient(node.rpc_url) as client:
            out[node.chain_id] = [
                (
                    log["blockNumber"],
                    log["logIndex"],
                    log["transactionHash"],
                    log["address"],
                    tuple(log["topics"]),
                    log["data"],
                )
                for log in _logs(client)
            ]
    return out


def test_same_seed_same_events(tmp_path: Path) -> None:
    fingerprints = []
    for run in range(2):
        state, nodes = up(
            DevnetOptions(chains=2, users=60, seed=3, block_time_s=0, state_dir=tmp_path / str(run))
        )
        try:
            fingerprints.append(_event_fingerprint(state))
        finally:
            for node in nodes:
                node.stop()
    assert fingerprints[0] == fingerprints[1]
    assert sum(len(v) for v in fingerprints[0].values()) > 500
    other, nodes = up(
        DevnetOptions(chains=2, users=60, seed=4, block_time_s=0, state_dir=tmp_path / "other")
    )
    try:
        assert _event_fingerprint(other) != fingerprints[0]
    finally:
        for node in nodes:
            node.stop()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead, only not yet reaped by init


def test_detached_devnet_down_leaves_no_anvil(tmp_path: Path) -> None:
    env = {**os.environ, "RTRM_HOME": str(tmp_path)}
    rtrm = [sys.executable, "-m", "rtrm"]
    up_run = subprocess.run(
        [*rtrm, "devnet", "up", "--users", "20", "--chains", "2", "--detach", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up_run.returncode == 0, up_run.stderr
    pids = [node.pid for node in load_state(tmp_path).nodes]
    assert all(_alive(pid) for pid in pids)
    status = subprocess.run(
        [*rtrm, "devnet", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert '"head_block"' in status.stdout
    down_run = subprocess.run(
        [*rtrm, "devnet", "down"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert down_run.returncode == 0, down_run.stderr
    assert not any(_alive(pid) for pid in pids)
    assert not (tmp_path / "devnet.json").exists()
    with pytest.raises(DevnetError, match="no devnet is running"):
        down(tmp_path)


def test_port_in_use_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(DevnetError, match=f"{port}.*in use"):
            up(DevnetOptions(chains=1, users=5, state_dir=tmp_path, base_port=port))
    assert not (tmp_path / "devnet.json").exists()


def test_bad_options_are_rejected() -> None:
    with pytest.raises(DevnetError, match="--chains must be between 1 and 8"):
        DevnetOptions(chains=9)
    with pytest.raises(DevnetError, match="whole number of seconds"):
        DevnetOptions(block_time_s=0.5)
