"""The node is not what it was: a syncing node pauses the chain; a restarted node (new
genesis) makes the indexer drop the old chain's data instead of mixing it in, or, when
rtrm.toml pins the genesis, pause the chain (more in test_genesis.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import first_chain_status, index_once, store_fingerprint

from chains.faultproxy import FaultProxy
from chains.registry import load_registry, write_registry

pytestmark = pytest.mark.chain


def test_syncing_node_pauses_then_resumes(small_devnet: Any, store_url: str) -> None:
    with FaultProxy.start(small_devnet.nodes[0].rpc_url) as proxy:
        proxy.set_syncing(5)
        outcomes = index_once(small_devnet.config_path, store_url, rpc_urls=(proxy.url,))
        assert outcomes[0].status == "paused"
        assert "syncing" in outcomes[0].detail
        status = first_chain_status(store_url)
        assert status.paused_reason is not None
        assert status.events == 0
        proxy.set_syncing(None)
        outcomes = index_once(small_devnet.config_path, store_url, rpc_urls=(proxy.url,))
    assert outcomes[0].status == "ok"
    status = first_chain_status(store_url)
    assert status.paused_reason is None
    assert status.events > 0


def _unpinned(config_path: str, tmp_path: Path) -> str:
    """The devnet's rtrm.toml without its chains' genesis_hash (nothing pins the chain)."""
    registry = load_registry(Path(config_path))
    chains = tuple(replace(chain, genesis_hash=None) for chain in registry.chains)
    path = tmp_path / "rtrm.toml"
    write_registry(replace(registry, chains=chains), path)
    return str(path)


@pytest.mark.parametrize("pinned", [False, True], ids=["no-genesis-configured", "pinned"])
def test_restarted_node_is_never_mixed_with_old_data(
    small_devnet: Any, anvil_factory: Any, tmp_path: Path, pinned: bool
) -> None:
    """Without a configured genesis_hash, a node that now serves another chain is a
    restarted node: the old chain's rows are dropped and it is indexed afresh. With one
    (the devnet writes it), the chain pauses and nothing indexed is dropped."""
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    config = small_devnet.config_path if pinned else _unpinned(small_devnet.config_path, tmp_path)
    chain_id = small_devnet.nodes[0].chain_id
    with FaultProxy.start(small_devnet.nodes[0].rpc_url) as proxy:
        index_once(config, url, rpc_urls=(proxy.url,))
        old = first_chain_status(url)
        assert old.events > 0
        before = store_fingerprint(url, chain_id)
        other = anvil_factory(chain_id=chain_id, genesis_timestamp=1_800_000_000)
        proxy.repoint(other.url)
        outcomes = index_once(config, url, rpc_urls=(proxy.url,))
    new = first_chain_status(url)
    if pinned:
        assert outcomes[0].status == "paused"
        assert old.genesis_hash in outcomes[0].detail
        assert new.genesis_hash == old.genesis_hash
        assert new.paused_reason is not None
        assert store_fingerprint(url, chain_id) == before
        return
    assert outcomes[0].status == "ok"
    assert new.genesis_hash != old.genesis_hash
    assert new.events == 0  # the contracts do not exist there: nothing of the old chain left
    assert all(rows == [] for rows in store_fingerprint(url, chain_id).values())
