"""Fixtures for insurance tests: stores of both kinds and a crashed one-chain devnet.

- ``store_url`` and ``postgres_url`` (both databases) come from ``tests/conftest.py``;
- ``crashed_devnet`` is a *fresh* one-chain devnet per test (60 users, seed 5, automine)
  after an ETH crash of -45 %: one lending deficit and two perps bad debts on chain 1,
  all in USDC, and a USDC insurance fund of ~1.75M. Tests pay from its fund, so each
  gets its own (about a second to build);
- ``Backstop`` bundles it with a SQLite store indexed once and an insurance config whose
  operator is the devnet's deployer (impersonated by anvil).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once

from chains.abi import encode_call
from chains.deploy import DEPLOYER
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from chains.spec import Registry
from indexer.store import Store, open_store
from insurance.config import InsuranceConfig
from insurance.executor import ChainPayoutExecutor, Operator

DEPLOYER_OPERATOR = Operator(DEPLOYER)  # anvil impersonates it; it owns the devnet's funds


@pytest.fixture
def crashed_devnet(tmp_path: Path) -> Iterator[Any]:
    """A fresh one-chain devnet after an ETH crash (module docstring)."""
    from chains.devnet import DevnetOptions, up
    from chains.keeper import ChainContracts, crash

    home = tmp_path / "devnet"
    state, nodes = up(DevnetOptions(chains=1, users=60, seed=5, block_time_s=0, state_dir=home))
    try:
        node = state.nodes[0]
        chain = ChainContracts(
            node.chain_id,
            node.rpc_url,
            state.contracts[str(node.chain_id)],
            state.tokens[str(node.chain_id)],
        )
        crash([chain], asset="ETH", move=-0.45, blocks=2)
        yield state
    finally:
        for n in nodes:
            n.stop()


@dataclass
class Backstop:
    """A crashed devnet, its registry, an indexed store and a payable config."""

    state: Any
    registry: Registry
    store: Store
    url: str
    config: InsuranceConfig

    @property
    def chain_id(self) -> int:
        return int(self.state.nodes[0].chain_id)

    @property
    def rpc_url(self) -> str:
        return str(self.state.nodes[0].rpc_url)

    @property
    def fund(self) -> str:
        return str(self.state.contracts[str(self.chain_id)]["insurance_fund"])

    def executor(self, operator: Operator | None = DEPLOYER_OPERATOR) -> ChainPayoutExecutor:
        return ChainPayoutExecutor(self.registry, operator)

    def fund_balance(self) -> int:
        with RpcClient(self.rpc_url) as client:
            data = encode_call("totalAssets()")
            return hex_to_int(client.call("eth_call", [{"to": self.fund, "data": data}, "latest"]))

    def index(self) -> None:
        index_once(self.state.config_path, self.url)


@pytest.fixture
def backstop(crashed_devnet: Any, tmp_path: Path) -> Iterator[Backstop]:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    registry = replace(load_registry(Path(crashed_devnet.config_path)), database_url=url)
    index_once(crashed_devnet.config_path, url)
    store = open_store(url)
    config = InsuranceConfig(operator=DEPLOYER, pay_after_finality=False, confirm_timeout_s=10.0)
    try:
        yield Backstop(crashed_devnet, registry, store, url, config)
    finally:
        store.dispose()
