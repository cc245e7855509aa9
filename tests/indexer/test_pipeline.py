"""End to end on a real anvil: index a seeded, crashed chain and compare with the chain.

The differential check reads every user's positions, collateral and debt from the
contracts' view functions at the indexed block and expects the store to hold exactly
the same, on SQLite and on PostgreSQL. Then the upper half of the events is indexed
again (the store rolled back below it, as after a reorg, and read in other range
splits): the store must not change, no event stored twice.
"""

from __future__ import annotations

from typing import Any

import pytest
from rtrm_testing import chain_truth, index_once, store_fingerprint, stored_state
from sqlalchemy import text

from chains.rpc import RpcClient
from chains.scenario import user_addresses
from chains.spec import checksum_address
from indexer.pipeline import IndexerOptions
from indexer.store import open_store, rollback

pytestmark = pytest.mark.chain


def test_store_equals_the_contracts_at_the_indexed_block(small_devnet: Any, store_url: str) -> None:
    outcomes = index_once(small_devnet.config_path, store_url)
    assert [o.status for o in outcomes] == ["ok"]
    chain_id, block = outcomes[0].chain_id, outcomes[0].indexed_block
    stored = stored_state(store_url, chain_id)
    accounts = {checksum_address(u, key="user") for u in user_addresses(small_devnet.seed, 60)}
    accounts |= {key[1] for key in stored["balances"]} | {key[1] for key in stored["options"]}
    truth = chain_truth(small_devnet, block, accounts)
    assert stored["options"] == truth["options"]
    assert stored["perps"] == truth["perps"]
    assert stored["balances"] == truth["balances"]
    assert stored["raw"], "nothing was indexed"
    assert_reindexing_changes_nothing(small_devnet, store_url, chain_id, block, stored)


def assert_reindexing_changes_nothing(
    devnet: Any, store_url: str, chain_id: int, block: int, stored: dict[str, Any]
) -> None:
    """Index the upper half of the events again: the store rolled back below them (as a
    reorg would, the cursor on the node's hash there), then read in other range splits.
    Nothing is mined meanwhile (the devnet automines), so without the rollback the second
    run would find the cursor at the head and read nothing."""
    fingerprint = store_fingerprint(store_url, chain_id)
    raw_blocks = sorted({number for number, _, _ in stored["raw"]})
    ancestor = raw_blocks[len(raw_blocks) // 2] - 1
    with RpcClient(devnet.nodes[0].rpc_url) as client:
        ancestor_hash = client.call("eth_getBlockByNumber", [hex(ancestor), False])["hash"]
    store = open_store(store_url, migrate=False)
    try:
        with store.transaction() as conn:
            removed = rollback(conn, chain_id, ancestor)
            conn.execute(
                text("UPDATE cursor SET block_number = :b, block_hash = :h WHERE chain_id = :c"),
                {"c": chain_id, "b": ancestor, "h": ancestor_hash},
            )
            conn.execute(
                text("UPDATE chain SET events = events - :e WHERE chain_id = :c"),
                {"c": chain_id, "e": removed},
            )
    finally:
        store.dispose()
    assert 0 < removed < len(stored["raw"])
    assert store_fingerprint(store_url, chain_id) != fingerprint  # really rolled back

    again = index_once(store_url=store_url, config_path=devnet.config_path,
                       options=IndexerOptions(max_span=3))  # fmt: skip
    assert [(o.status, o.indexed_block, o.events) for o in again] == [("ok", block, removed)]
    assert store_fingerprint(store_url, chain_id) == fingerprint
    assert stored_state(store_url, chain_id) == stored  # raw events in order: none twice
    store = open_store(store_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            params = {"c": chain_id}
            events, distinct = conn.execute(
                text(
                    "SELECT COUNT(*), COUNT(DISTINCT block_number * 100000 + log_index) "
                    "FROM raw_event WHERE chain_id = :c"
                ),
                params,
            ).one()
            counted = conn.execute(
                text("SELECT events FROM chain WHERE chain_id = :c"), params
            ).scalar_one()
    finally:
        store.dispose()
    assert events == distinct == counted == len(stored["raw"])
