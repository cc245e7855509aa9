"""Fixtures for the loader tests: a small seeded devnet and stores of both kinds.

- ``store_url`` and ``postgres_url`` (both databases) come from ``tests/conftest.py``;
- ``loader_devnet`` is two seeded chains (40 users) shared by a test module; tests that
  move it (oracle rounds, trades) must not rely on its state beyond their own reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def loader_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two seeded chains, 40 users, a block per transaction; stopped after the module."""
    from chains.devnet import DevnetOptions, up

    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=2, users=40, seed=11, block_time_s=0, state_dir=home))
    try:
        yield state
    finally:
        for node in nodes:
            node.stop()
