"""Fixtures for indexer tests: a small seeded, crashed devnet shared by a module, and a
smaller one of a test's own, for tests that mine blocks or reorganise the chain.

``store_url`` (SQLite and PostgreSQL) comes from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# ---------------------------------------------------------------- devnets and truth


@pytest.fixture(scope="module")
def small_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One seeded chain (60 users) after an ETH crash: liquidations and bad debt included."""
    from chains.devnet import DevnetOptions, up
    from chains.keeper import ChainContracts, crash

    home = tmp_path_factory.mktemp("devnet")
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


@pytest.fixture
def devnet(tmp_path: Any) -> Iterator[Any]:
    """A small chain of the test's own (8 users), for tests that mine blocks."""
    from chains.devnet import DevnetOptions, up

    state, nodes = up(
        DevnetOptions(chains=1, users=8, seed=11, block_time_s=0, state_dir=tmp_path / "net")
    )
    try:
        yield state
    finally:
        for node in nodes:
            node.stop()
