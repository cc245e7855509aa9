"""End to end on a real anvil: index a seeded, crashed chain and compare with the chain.

The differential check reads every user's positions, collateral and debt from the
contracts' view functions at the indexed block and expects the store to hold exactly
the same, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from rtrm_testing import chain_truth, index_once, stored_state

from chains.scenario import user_addresses
from chains.spec import checksum_address

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
    # indexing the same chain again changes nothing
    again = index_once(small_devnet.config_path, store_url)
    assert again[0].indexed_block >= block
    assert stored_state(store_url, chain_id, block) == {**stored, "raw": stored["raw"]}
