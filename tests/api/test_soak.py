"""Soak: ``rtrm serve`` on 3 chains with 1 s blocks, random reorgs and an ETH crash.

A client polls a few users' ``/v1/users/{address}/risk`` and ``/v1/status`` the whole
time, while on random chains: reorgs of depth 1-3, oracle nudges and lending withdrawals
by the polled users; halfway, ETH falls 35 % over 3 blocks with keepers liquidating. The
service must answer every request (no connection error, no 5xx, nothing but 200). Then
one last oracle round on every chain: once the indexers caught up, each user's answer
reflects it and equals the library's ``user_risk_report`` on a fresh ``load_snapshot`` at
the watermark the answer carries. Finally SIGTERM stops the service with exit code 0.

The service is a subprocess on a free loopback port (rate limit off, full recompute every
5 s). The short form runs with ``make test``; the long one is marked ``slow``. Two more
tests pin the API's cold-report path (the whole book's
:class:`aggregation.report_basis.ReportBasis`), which the soak exercises: it equals the
library for every user and grid, with the shared option revaluation table and without.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from rtrm_testing import serve_process

import aggregation.report_basis as report_basis_module
from aggregation.loader import load_snapshot
from aggregation.report_basis import ReportBasis, TailBasis
from aggregation.snapshot import Snapshot
from aggregation.user_report import ReportParams, report_from_basis, user_risk_report
from api.encoding import dumps
from api.handlers_users import GRIDS, encode_report, scenario_grid
from chains.abi import encode_call
from chains.deploy import DEPLOYER
from chains.keeper import ChainContracts, crash
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int, to_hex
from chains.world import feed_name
from indexer.store import open_store

pytestmark = pytest.mark.chain

POLLED_USERS = 6
T = TypeVar("T")


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Any]:
    from chains.devnet import DevnetOptions, up

    state, nodes = up(
        DevnetOptions(chains=3, users=60, seed=9, block_time_s=1, state_dir=tmp_path / "devnet")
    )
    try:
        yield state
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def served(devnet: Any, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {"RTRM_API_RATE_LIMIT": "0"}
    log = tmp_path / "serve.log"
    with serve_process(devnet.config_path, log, "--full-recompute", "5", env=env) as served:
        yield served


def _wait_for(what: str, predicate: Callable[[], T | None], timeout_s: float = 60.0) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.1)


def _get(base: str, path: str) -> Any:
    response = requests.get(base + path, timeout=30)
    response.raise_for_status()
    return response.json()


@dataclass
class Poller:
    """A client asking for ``users``' risk and the status in a loop, from a thread."""

    base: str
    users: list[str]
    answers: int = 0
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> Poller:
        self.thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)

    def _run(self) -> None:
        paths = [f"/v1/users/{user}/risk" for user in self.users] + ["/v1/status"]
        with requests.Session() as session:
            while not self.stop.is_set():
                for path in paths:
                    started = time.monotonic()
                    try:
                        response = session.get(self.base + path, timeout=10)
                    except requests.RequestException as exc:
                        self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
                        continue
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    if response.status_code != 200:
                        self.failures.append(f"{path}: {response.status_code} {response.text}")
                    elif "watermark" not in response.json():
                        self.failures.append(f"{path}: no watermark in {response.text[:200]}")
                    else:
                        self.answers += 1
                self.stop.wait(0.05)  # pacing: ~100 requests/s, not a wait for anything


@dataclass
class Chaos:
    """Random reorgs, oracle nudges and withdrawals on the devnet's chains.

    Oracle rounds are sent with explicit nonces, each mined before the next step: after a
    reorg anvil may hand out a stale pending nonce, and a transaction with a gap before it
    would never be mined. Reorgs carry no transactions for the same reason (the blocks
    they drop may hold rounds and withdrawals: the new chain differs).
    """

    state: Any
    suppliers: dict[int, list[tuple[str, dict[str, Any]]]]  # chain -> (user, supply)
    rng: random.Random

    def nudge(self, node: Any, move: float) -> int:
        """Move ETH's oracle by ``move`` (a fraction) on ``node``; the block it is mined in."""
        feed = str(self.state.contracts[str(node.chain_id)][feed_name("ETH")])
        with RpcClient(node.rpc_url) as client:
            raw = client.call(
                "eth_call", [{"to": feed, "data": encode_call("latestRoundData()")}, "latest"]
            )
            answer = int.from_bytes(bytes.fromhex(raw[2:])[32:64], "big", signed=True)
            data = encode_call("updateAnswer(int256)", max(1, round(answer * (1.0 + move))))
            nonce = client.call("eth_getTransactionCount", [DEPLOYER, "latest"])
            tx = {"from": DEPLOYER, "to": feed, "data": data, "gas": to_hex(200_000)}
            tx_hash = client.call(
                "eth_sendTransaction", [{**tx, "gasPrice": "0x0", "nonce": nonce}]
            )

            def receipt() -> dict[str, Any] | None:
                found: dict[str, Any] | None = client.call("eth_getTransactionReceipt", [tx_hash])
                return found

            mined = _wait_for(f"chain {node.chain_id} mining an oracle round", receipt, 30)
            return hex_to_int(mined["blockNumber"])

    def settled(self) -> bool:
        """Whether anvil's pending nonce of the deployer is its mined one on every chain (the
        keepers of ``crash`` count on it)."""
        for node in self.state.nodes:
            with RpcClient(node.rpc_url) as client:
                mined, pending = (
                    client.call("eth_getTransactionCount", [DEPLOYER, tag])
                    for tag in ("latest", "pending")
                )
                if mined != pending:
                    return False
        return True

    def step(self) -> None:
        node = self.rng.choice(self.state.nodes)
        action = self.rng.random()
        if action < 0.35:
            with RpcClient(node.rpc_url) as client:
                client.call("anvil_reorg", [self.rng.randint(1, 3), []])
        elif action < 0.7 and self.suppliers.get(node.chain_id):
            user, supply = self.rng.choice(self.suppliers[node.chain_id])
            data = encode_call(
                "withdraw(address,uint256,address)", supply["token"], supply["amount"] // 200, user
            )
            tx = {"from": user, "to": supply["protocol_address"], "data": data, "gas": "0x7a120"}
            with RpcClient(node.rpc_url) as client:
                client.call("eth_sendTransaction", [{**tx, "gasPrice": "0x0"}])
        else:
            self.nudge(node, self.rng.uniform(-0.01, 0.01))


def _suppliers(base: str, users: list[str]) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """Per chain: the users with a lending supply there and no debt there, and the supply."""
    found: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for user in users:
        for chain in _get(base, f"/v1/users/{user}/positions")["chains"]:
            balances = chain["balances"]
            if any(b["kind"] == "debt" and b["amount"] for b in balances):
                continue
            supply = [b for b in balances if b["protocol_kind"] == "lending" and b["amount"] >= 200]
            if supply:
                found.setdefault(chain["chain_id"], []).append((user, supply[0]))
    return found


def _caught_up(base: str, blocks: dict[int, int]) -> bool:
    chains = _get(base, "/v1/status")["chains"]
    return all(c["lag_blocks"] == 0 and c["indexed_block"] >= blocks[c["chain_id"]] for c in chains)


def _risk_at(base: str, user: str, blocks: dict[int, int]) -> dict[str, Any]:
    """``user``'s risk once its watermark includes ``blocks`` on every chain."""

    def answer() -> dict[str, Any] | None:
        risk: dict[str, Any] = _get(base, f"/v1/users/{user}/risk")
        return risk if all(risk["watermark"][str(c)] >= b for c, b in blocks.items()) else None

    return _wait_for(f"{user}'s risk at the last round", answer, timeout_s=60)


def _soak(devnet: Any, served: Any, seconds: float, seed: int) -> None:
    process, base = served
    rng = random.Random(seed)
    _wait_for("first snapshot", lambda: requests.get(f"{base}/healthz", timeout=30).ok)
    exposure = _get(base, "/v1/assets/exposure?top=100")
    holders = sorted({h["address"] for a in exposure["assets"] for h in a["top_holders"]})
    suppliers = _suppliers(base, holders)
    withdrawing = sorted({user for found in suppliers.values() for user, _ in found})
    assert withdrawing, "no holder supplies without debt on any chain"
    users = rng.sample(withdrawing, min(3, len(withdrawing)))
    users += rng.sample(sorted(set(holders) - set(users)), POLLED_USERS - len(users))
    chaos = Chaos(
        devnet, {c: [(u, b) for u, b in found if u in users] for c, found in suppliers.items()}, rng
    )
    contracts = [
        ChainContracts(
            n.chain_id, n.rpc_url, devnet.contracts[str(n.chain_id)], devnet.tokens[str(n.chain_id)]
        )
        for n in devnet.nodes
    ]
    with Poller(base, users) as poller:
        started = time.monotonic()
        crashed = None
        while time.monotonic() - started < seconds:
            if crashed is None and time.monotonic() - started >= seconds / 2:
                _wait_for("the deployer's nonces settling", chaos.settled, timeout_s=30)
                crashed = crash(contracts, asset="ETH", move=-0.35, blocks=3)
            chaos.step()
            time.sleep(rng.uniform(0.2, 0.6))  # pacing of the chaos, not a wait

        # one last oracle round everywhere: every answer must come to reflect it
        final = {node.chain_id: chaos.nudge(node, 0.002) for node in devnet.nodes}
        _wait_for("the indexers catching up", lambda: _caught_up(base, final), timeout_s=90)
        answers = {user: _risk_at(base, user, final) for user in users}
    assert not poller.failures, poller.failures[:5]
    assert poller.answers > 10 * seconds
    assert crashed is not None
    assert sum(c.lending + c.options + c.perps for c in crashed.values()) > 0
    status = _get(base, "/v1/status")["chains"]
    assert sum(c["reorgs"] for c in status) > 0, "the indexers saw no reorg"

    registry = load_registry(Path(devnet.config_path))
    store = open_store(registry.database_url, migrate=False)
    try:
        for user, answer in answers.items():
            cut = {int(c): b for c, b in answer["watermark"].items()}
            with store.engine.connect() as conn:
                snapshot = load_snapshot(conn, registry, cut)
            assert answer == json.loads(dumps(user_risk_report(snapshot, user))), user
    finally:
        store.dispose()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


def test_soak_short(devnet: Any, served: Any) -> None:
    _soak(devnet, served, seconds=20, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_long(devnet: Any, served: Any) -> None:
    _soak(devnet, served, seconds=300, seed=2)


@pytest.fixture(scope="module")
def snapshot(world: Any) -> Snapshot:
    """The crashed world's snapshot (``conftest.world``)."""
    store = open_store(world.url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return load_snapshot(conn, world.registry)
    finally:
        store.dispose()


def _assert_cold_reports_are_the_library_reports(snapshot: Snapshot, tail: TailBasis) -> None:
    assert tail.shocks is not None  # the world has a history: the tail is simulated
    for name in GRIDS:
        basis = ReportBasis.prepare(tail, scenario_grid(name))
        for user in snapshot.inputs.users:
            fast = report_from_basis(basis, user)
            assert fast is not None
            expected = dumps(user_risk_report(snapshot, user, scenario_grid(name)))
            assert encode_report(fast) == expected, (name, user)
    assert report_from_basis(basis, "0x000000000000000000000000000000000000dEaD") is None


def test_cold_reports_are_the_library_reports(snapshot: Snapshot) -> None:
    """The API's cold path equals ``user_risk_report`` for every user and grid."""
    tail = TailBasis.prepare(snapshot, ReportParams())
    assert tail.change_usd is not None  # the shared option revaluation is in use
    _assert_cold_reports_are_the_library_reports(snapshot, tail)


def test_cold_reports_without_the_contract_table(snapshot: Snapshot) -> None:
    """Books too large for the table revalue each user's options: the same bytes as the
    library's (which uses a table of the user's own options)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_basis_module, "_TABLE_BYTES", 0)
        tail = TailBasis.prepare(snapshot, ReportParams())
    assert tail.change_usd is None
    _assert_cold_reports_are_the_library_reports(snapshot, tail)
