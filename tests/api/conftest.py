"""Fixtures for the API tests: a crashed two-chain devnet, indexed, and a live API on it.

- ``world`` (one per session of this folder): a devnet of 2 chains and 60 users (seed 5,
  automine) after an ETH crash of -45 %, indexed into SQLite, with one insurance trigger
  run whose approval threshold (1 USDC) leaves every payout awaiting approval: deficits,
  payouts and attestation epoch 1 exist. Tests must not change it, except through the
  API they test (``test_approve`` approves one payout);
- ``api`` is the API on that store, listening on a free loopback port in a thread of its
  own (a real aiohttp server: requests go through sockets), rate limit off, token
  :data:`TOKEN`; ``ApiServer`` starts others (e.g. with a tight rate limit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from rtrm_testing import index_once

from api.app import create_app, start_site
from api.context import ApiContext, ApiSettings
from chains.deploy import DEPLOYER
from chains.registry import load_registry
from chains.spec import Registry
from indexer.store import Store, open_store
from insurance.config import InsuranceConfig
from insurance.executor import ChainPayoutExecutor, Operator

TOKEN = "test-token-0123456789abcdef"
INSURANCE = InsuranceConfig(
    operator=DEPLOYER,
    pay_after_finality=False,
    confirm_timeout_s=10.0,
    approval_threshold=Decimal(1),
)


@dataclass
class World:
    """The crashed, indexed devnet (module docstring)."""

    state: Any
    registry: Registry
    url: str

    @property
    def config_path(self) -> Path:
        return Path(self.state.config_path)

    def rpc_url(self, chain_id: int) -> str:
        return str(next(n.rpc_url for n in self.state.nodes if n.chain_id == chain_id))


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from chains.devnet import DevnetOptions, up
    from chains.keeper import ChainContracts, crash
    from insurance.trigger import run_trigger

    home = tmp_path_factory.mktemp("api-devnet")
    state, nodes = up(DevnetOptions(chains=2, users=60, seed=5, block_time_s=0, state_dir=home))
    try:
        chains = [
            ChainContracts(
                n.chain_id,
                n.rpc_url,
                state.contracts[str(n.chain_id)],
                state.tokens[str(n.chain_id)],
            )
            for n in state.nodes
        ]
        crash(chains, asset="ETH", move=-0.45, blocks=2)
        registry = load_registry(Path(state.config_path))
        index_once(state.config_path, registry.database_url)
        store = open_store(registry.database_url, migrate=False)
        executor = ChainPayoutExecutor(registry, Operator(DEPLOYER))
        try:
            run_trigger(store, registry, INSURANCE, executor)
        finally:
            executor.close()
            store.dispose()
        yield World(state, registry, registry.database_url)
    finally:
        for node in nodes:
            node.stop()


class ApiServer:
    """The API on a store, served from a thread with its own event loop."""

    def __init__(self, registry: Registry, settings: ApiSettings, *, live: bool = False) -> None:
        self.registry = registry
        self.settings = settings
        self.live = live
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api", daemon=True)
        self.store: Store | None = None
        self.context: ApiContext | None = None
        self.runner: Any = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coroutine: Any, timeout_s: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.store = open_store(self.registry.database_url, migrate=False)
        self.context = ApiContext.build(
            self.store, self.registry, insurance=INSURANCE, settings=self.settings, live=self.live
        )
        self.runner, self.port = await start_site(create_app(self.context), "127.0.0.1", 0)

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        if self.store is not None:
            self.store.dispose()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.base + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.base + path, timeout=30, **kwargs)


SETTINGS = ApiSettings(token=TOKEN, rate_limit_per_s=0.0, port=0)


@pytest.fixture
def token() -> str:
    """The bearer token of the ``api`` fixture."""
    return TOKEN


@pytest.fixture(scope="session")
def api(world: World) -> Iterator[ApiServer]:
    with ApiServer(world.registry, SETTINGS) as server:
        yield server


@pytest.fixture
def limited_api(world: World) -> Iterator[ApiServer]:
    """The API with 2 requests/s and bursts of 3 per client."""
    settings = replace(SETTINGS, rate_limit_per_s=2.0, rate_limit_burst=3)
    with ApiServer(world.registry, settings) as server:
        yield server
