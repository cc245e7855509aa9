"""The node is not what it was: a syncing node pauses the chain, a restarted node (new
genesis) makes the indexer drop the old chain's data instead of mixing it in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once, store_fingerprint

from chains.faultproxy import FaultProxy
from indexer.status import chain_status
from indexer.store import open_store

pytestmark = pytest.mark.chain


def _status(url: str) -> Any:
    store = open_store(url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return chain_status(conn)[0]
    finally:
        store.dispose()


def test_syncing_node_pauses_then_resumes(small_devnet: Any, store_url: str) -> None:
    with FaultProxy.start(small_devnet.nodes[0].rpc_url) as proxy:
        proxy.set_syncing(5)
        outcomes = index_once(small_devnet.config_path, store_url, rpc_urls=(proxy.url,))
        assert outcomes[0].status == "paused"
        assert "syncing" in outcomes[0].detail
        status = _status(store_url)
        assert status.paused_reason is not None
        assert status.events == 0
        proxy.set_syncing(None)
        outcomes = index_once(small_devnet.config_path, store_url, rpc_urls=(proxy.url,))
    assert outcomes[0].status == "ok"
    status = _status(store_url)
    assert status.paused_reason is None
    assert status.events > 0


def test_restarted_node_is_never_mixed_with_old_data(
    small_devnet: Any, anvil_factory: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    chain_id = small_devnet.nodes[0].chain_id
    with FaultProxy.start(small_devnet.nodes[0].rpc_url) as proxy:
        index_once(small_devnet.config_path, url, rpc_urls=(proxy.url,))
        old = _status(url)
        assert old.events > 0
        other = anvil_factory(chain_id=chain_id, genesis_timestamp=1_800_000_000)
        proxy.repoint(other.url)
        outcomes = index_once(small_devnet.config_path, url, rpc_urls=(proxy.url,))
    assert outcomes[0].status == "ok"
    new = _status(url)
    assert new.genesis_hash != old.genesis_hash
    assert new.events == 0  # the contracts do not exist there: nothing of the old chain left
    assert all(rows == [] for rows in store_fingerprint(url, chain_id).values())
