"""The local multi-chain devnet: anvil nodes with the protocols deployed and a world seeded.

``up`` starts one anvil node per chain on free loopback ports (automatic mining off, genesis
at :data:`~chains.world.GENESIS_TIMESTAMP`), deploys and seeds every chain in parallel,
then turns on live mining (a block every ``block_time_s``, or one per transaction when 0)
and writes two files into the state directory (``.rtrm/`` by default):

- ``devnet.json``: the processes (pid, port, log) and what was deployed, read by
  ``status``, ``down``, ``crash`` and ``liquidate``;
- ``rtrm.toml``: the registry (chains, RPC URLs, contracts, asset map) that every other
  command finds without flags.

Invariants: ``up`` either returns a fully seeded devnet or stops every node it started
(also on Ctrl-C); in the foreground the nodes die with this process even on ``kill -9``
(``PR_SET_PDEATHSIG``); ``down`` only ever signals processes that are anvil nodes on the
recorded ports.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chains.anvil import AnvilConfig, AnvilNode, port_is_free, stop_pid
from chains.deploy import ChainDeployment, deploy_world
from chains.exceptions import DevnetError, RPCError
from chains.registry import write_registry
from chains.rpc import RpcClient, hex_to_int
from chains.scenario import ChainScenario, build_scenario
from chains.seed import PricePath, Progress, seed_chain, seed_vault
from chains.sender import TxSender
from chains.spec import AssetSpec, ChainSpec, ContractSpec, Registry, TokenSpec
from chains.types import AssetId, ChainId
from chains.world import ASSETS, DEVNET_CHAINS, GENESIS_TIMESTAMP, ChainPlan

__all__ = [
    "DevnetOptions",
    "DevnetState",
    "NodeRecord",
    "chain_status",
    "down",
    "load_state",
    "state_dir_default",
    "up",
]

log = logging.getLogger(__name__)

STATE_FILE = "devnet.json"
CONFIG_FILE = "rtrm.toml"
BLOCK_GAS_LIMIT = 1_000_000_000_000
MAX_CHAINS = len(DEVNET_CHAINS)
T = TypeVar("T")


def state_dir_default() -> Path:
    """``$RTRM_HOME`` or ``./.rtrm``."""
    return Path(os.environ.get("RTRM_HOME", ".rtrm"))


@dataclass(frozen=True, slots=True)
class DevnetOptions:
    chains: int = 3
    users: int = 200
    seed: int = 1
    block_time_s: float = 2.0
    state_dir: Path = field(default_factory=state_dir_default)
    detach: bool = False
    base_port: int | None = None  # ports base_port, base_port + 1, ...; None = free ports
    # Keep only this many recent block states in anvil's memory (eth_call further back
    # fails). anvil otherwise keeps a copy per block: a 100k-user world needs > 8 GB.
    keep_states: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.chains <= MAX_CHAINS:
            raise DevnetError(f"--chains must be between 1 and {MAX_CHAINS}, got {self.chains}")
        if self.users < 1:
            raise DevnetError(f"--users must be at least 1, got {self.users}")
        if self.block_time_s < 0 or (
            self.block_time_s and self.block_time_s != int(self.block_time_s)
        ):
            raise DevnetError(
                f"--block-time must be a whole number of seconds (0 = a block per transaction), "
                f"got {self.block_time_s}"
            )


@dataclass(frozen=True, slots=True)
class NodeRecord:
    chain_id: int
    name: str
    pid: int
    port: int
    rpc_url: str
    log_path: str


@dataclass(frozen=True, slots=True)
class DevnetState:
    """What ``devnet.json`` records about a running devnet."""

    nodes: tuple[NodeRecord, ...]
    users: int
    seed: int
    block_time_s: float
    detached: bool
    config_path: str
    contracts: dict[str, dict[str, str]]  # str(chain id) -> name -> address
    tokens: dict[str, dict[str, str]]  # str(chain id) -> symbol -> address
    summary: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DevnetState:
        raw = json.loads(text)
        raw["nodes"] = tuple(NodeRecord(**node) for node in raw["nodes"])
        return cls(**raw)


def load_state(state_dir: Path) -> DevnetState:
    """The running devnet's state; :class:`DevnetError` if there is none."""
    path = state_dir / STATE_FILE
    try:
        return DevnetState.from_json(path.read_text())
    except FileNotFoundError:
        raise DevnetError(
            f"no devnet is running here ({path} not found); start one with `rtrm devnet up`"
        ) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise DevnetError(
            f"{path} is corrupt ({exc}); run `rtrm devnet down` to clean up"
        ) from None


def _parallel(fn: Callable[[ChainPlan], T], plans: list[ChainPlan]) -> list[T]:
    with ThreadPoolExecutor(max_workers=len(plans), thread_name_prefix="devnet") as pool:
        return list(pool.map(fn, plans))


def _state_args(keep_states: int | None) -> tuple[str, ...]:
    return () if keep_states is None else ("--prune-history", str(keep_states))


def up(
    options: DevnetOptions, progress: Progress | None = None
) -> tuple[DevnetState, list[AnvilNode]]:
    """Start, deploy, seed and configure a devnet; returns its state and the live nodes."""
    state_dir = options.state_dir
    if (state_dir / STATE_FILE).exists():
        running = [n for n in load_state(state_dir).nodes if _alive(n)]
        if running:
            ids = ", ".join(str(n.chain_id) for n in running)
            raise DevnetError(
                f"a devnet is already running from {state_dir} (chains {ids}); "
                "stop it with `rtrm devnet down`"
            )
    state_dir.mkdir(parents=True, exist_ok=True)
    plans = list(DEVNET_CHAINS[: options.chains])
    ports = _ports(options, len(plans))
    nodes: list[AnvilNode] = []
    try:
        for plan, port in zip(plans, ports, strict=True):
            config = AnvilConfig(
                chain_id=plan.chain_id,
                port=port,
                no_mining=True,
                genesis_timestamp=GENESIS_TIMESTAMP,
                gas_limit=BLOCK_GAS_LIMIT,
                extra_args=_state_args(options.keep_states),
            )
            log_path = state_dir / f"anvil-{plan.chain_id}.log"
            nodes.append(
                AnvilNode.start(config, log_path=log_path, die_with_parent=not options.detach)
            )
        state = _build(options, plans, nodes, progress)
        (state_dir / STATE_FILE).write_text(state.to_json())
        return state, nodes
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def _ports(options: DevnetOptions, count: int) -> list[int | None]:
    if options.base_port is None:
        return [None] * count
    ports = [options.base_port + i for i in range(count)]
    taken = [p for p in ports if not port_is_free(p)]
    if taken:
        raise DevnetError(
            f"port(s) {', '.join(map(str, taken))} on 127.0.0.1 are in use; choose another --port "
            "or stop the process using them"
        )
    return list(ports)


def _build(
    options: DevnetOptions,
    plans: list[ChainPlan],
    nodes: list[AnvilNode],
    progress: Progress | None,
) -> DevnetState:
    started = time.monotonic()
    clients: dict[ChainId, RpcClient] = {}
    try:
        return _build_with(options, plans, nodes, progress, clients, started)
    finally:
        for client in clients.values():
            client.close()


def _build_with(  # noqa: PLR0917 - the pieces _build owns, passed through once
    options: DevnetOptions,
    plans: list[ChainPlan],
    nodes: list[AnvilNode],
    progress: Progress | None,
    clients: dict[ChainId, RpcClient],
    started: float,
) -> DevnetState:
    clients |= {
        plan.chain_id: RpcClient(node.url, timeout_s=120)
        for plan, node in zip(plans, nodes, strict=True)
    }
    senders = {
        plan.chain_id: TxSender(
            clients[plan.chain_id],
            timestamp=GENESIS_TIMESTAMP,
            block_interval_s=plan.seed_block_time_s,
        )
        for plan in plans
    }

    def deploy(plan: ChainPlan) -> ChainDeployment:
        return deploy_world(
            senders[plan.chain_id], plan, home=plan is plans[0], start_time=GENESIS_TIMESTAMP
        )

    deployments = {d.chain_id: d for d in _parallel(deploy, plans)}
    scenarios = build_scenario(
        users=options.users,
        seed=options.seed,
        chains=plans,
        series={cid: d.series for cid, d in deployments.items()},
        start_time=GENESIS_TIMESTAMP,
    )
    home = plans[0].chain_id
    seed_vault(senders[home], deployments[home], scenarios[home], progress)
    path = PricePath.draw(options.seed)

    def seed(plan: ChainPlan) -> None:
        cid = plan.chain_id
        seed_chain(senders[cid], deployments[cid], scenarios[cid], path, progress)

    _parallel(seed, plans)
    for plan in plans:
        _go_live(clients[plan.chain_id], options.block_time_s)
    genesis = {
        plan.chain_id: clients[plan.chain_id].call("eth_getBlockByNumber", ["0x0", False])["hash"]
        for plan in plans
    }
    registry = _registry(plans, nodes, deployments, genesis, options)
    config_path = options.state_dir / CONFIG_FILE
    write_registry(registry, config_path)
    elapsed = time.monotonic() - started
    return DevnetState(
        nodes=tuple(
            NodeRecord(
                p.chain_id,
                p.name,
                n.pid,
                n.port,
                n.url,
                str(options.state_dir / f"anvil-{p.chain_id}.log"),
            )
            for p, n in zip(plans, nodes, strict=True)
        ),
        users=options.users,
        seed=options.seed,
        block_time_s=options.block_time_s,
        detached=options.detach,
        config_path=str(config_path),
        contracts={
            str(cid): {k: v.address for k, v in d.contracts.items()}
            for cid, d in deployments.items()
        },
        tokens={
            str(cid): {s: a for s, (_, a) in d.tokens.items()} for cid, d in deployments.items()
        },
        summary=_summary(plans, senders, scenarios, elapsed),
    )


def _go_live(client: RpcClient, block_time_s: float) -> None:
    if block_time_s > 0:
        client.call("evm_setIntervalMining", [int(block_time_s)])
    else:
        client.call("evm_setAutomine", [True])


def _registry(
    plans: list[ChainPlan],
    nodes: list[AnvilNode],
    deployments: dict[ChainId, ChainDeployment],
    genesis: dict[ChainId, str],
    options: DevnetOptions,
) -> Registry:
    chains = []
    for plan, node in zip(plans, nodes, strict=True):
        d = deployments[plan.chain_id]
        contracts = tuple(
            ContractSpec(plan.chain_id, c.name, c.kind, c.address, d.deployed_block, c.asset_id)
            for c in d.contracts.values()
        )
        tokens = tuple(
            TokenSpec(
                plan.chain_id, symbol, address, token.decimals, AssetId(token.asset_id), token.kind
            )
            for symbol, (token, address) in d.tokens.items()
        )
        chains.append(
            ChainSpec(
                chain_id=plan.chain_id,
                name=plan.name,
                rpc_urls=(node.url,),
                finality_depth=plan.finality_depth,
                block_time_s=float(options.block_time_s or 1),
                contracts=contracts,
                tokens=tokens,
                genesis_hash=genesis[plan.chain_id],
            )
        )
    assets = tuple(
        AssetSpec(AssetId(a.asset_id), a.name, AssetId(a.underlying), a.peg) for a in ASSETS
    )
    database = (options.state_dir / "rtrm.db").resolve()
    return Registry(chains=tuple(chains), assets=assets, database_url=f"sqlite:///{database}")


def _summary(
    plans: list[ChainPlan],
    senders: dict[ChainId, TxSender],
    scenarios: dict[ChainId, ChainScenario],
    elapsed: float,
) -> dict[str, Any]:
    per_chain = []
    for plan in plans:
        s, stats = scenarios[plan.chain_id], senders[plan.chain_id].stats
        per_chain.append(
            {
                "chain_id": plan.chain_id,
                "name": plan.name,
                "users": len(s.users),
                "borrowers": sum(1 for p in s.lending if p.borrow is not None),
                "suppliers": len(s.lending),
                "option_buyers": sum(1 for a in s.options if a.trades[0].size_wad > 0),
                "option_writers": sum(1 for a in s.options if a.trades[0].size_wad < 0),
                "perp_traders": len(s.perps),
                "underwriters": len(s.underwriters),
                "vault_depositors": len(s.vault),
                "bridged_in": len(s.bridged_in),
                "blocks": stats.last_block or 0,
                "transactions": stats.transactions,
                "events": stats.events,
            }
        )
    return {"seconds": round(elapsed, 2), "chains": per_chain}


def _alive(node: NodeRecord) -> bool:
    try:
        with RpcClient(node.rpc_url, timeout_s=2) as client:
            return hex_to_int(client.call("eth_chainId")) == node.chain_id
    except RPCError:
        return False


def chain_status(state_dir: Path) -> list[dict[str, Any]]:
    """Per chain: id, name, RPC URL, pid, whether it answers, head block, contract addresses."""
    state = load_state(state_dir)
    rows = []
    for node in state.nodes:
        head: int | None = None
        try:
            with RpcClient(node.rpc_url, timeout_s=3) as client:
                head = hex_to_int(client.call("eth_blockNumber"))
        except RPCError:
            head = None
        rows.append(
            {
                "chain_id": node.chain_id,
                "name": node.name,
                "rpc_url": node.rpc_url,
                "pid": node.pid,
                "running": head is not None,
                "head_block": head,
                "contracts": state.contracts[str(node.chain_id)],
                "tokens": state.tokens[str(node.chain_id)],
            }
        )
    return rows


def down(state_dir: Path) -> int:
    """Stop every node the devnet started; returns how many were running. Removes the state
    and the devnet's rtrm.toml (its RPC URLs die with the nodes)."""
    state = load_state(state_dir)
    stopped = sum(1 for node in state.nodes if stop_pid(node.pid, expect_port=node.port))
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    Path(state.config_path).unlink(missing_ok=True)
    return stopped
