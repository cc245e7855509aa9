"""Deficit detection: stable ids, valuation, idempotence under replay, reorg rollbacks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from chains.rpc import RpcClient
from chains.spec import (
    AssetSpec,
    ChainSpec,
    ContractSpec,
    Registry,
    TokenSpec,
    checksum_address,
)
from chains.types import Address, AssetId, AssetKind, BlockNumber, ChainId, ContractKind
from indexer.state import FACT_COLUMNS
from indexer.store import BulkWriter, Store, open_store, rollback
from insurance.config import InsuranceConfig
from insurance.deficits import claim_id, deficit_id, sync_deficits
from insurance.exceptions import DeficitError
from insurance.models import DEFICITS, LEDGER, PAYOUTS
from insurance.payouts import load_payouts, mark_confirmed
from insurance.planning import plan_epoch

CHAIN = ChainId(1)


def _address(byte: str) -> Address:
    return checksum_address("0x" + byte * 20, key="test")


FUND, ETH_FEED, USDC_FEED = _address("f1"), _address("e1"), _address("c1")
USDC, WETH = _address("aa"), _address("bb")
LENDING, PERPS = _address("11"), _address("22")
ALICE, BOB = _address("a1"), _address("b0")


def _registry() -> Registry:
    contracts = (
        ContractSpec(CHAIN, "insurance_fund", ContractKind.INSURANCE_FUND, FUND, BlockNumber(1),
                     AssetId("USDC")),
        ContractSpec(CHAIN, "feed_eth_usd", ContractKind.PRICE_FEED, ETH_FEED, BlockNumber(1),
                     AssetId("ETH")),
        ContractSpec(CHAIN, "feed_usdc_usd", ContractKind.PRICE_FEED, USDC_FEED, BlockNumber(1),
                     AssetId("USDC")),
    )  # fmt: skip
    tokens = (
        TokenSpec(CHAIN, "USDC", USDC, 6, AssetId("USDC"), AssetKind.STABLE),
        TokenSpec(CHAIN, "WETH", WETH, 18, AssetId("ETH"), AssetKind.WRAPPED),
    )
    chain = ChainSpec(CHAIN, "ethereum", ("http://127.0.0.1:1",), 0, 12.0, contracts, tokens)
    assets = (AssetSpec(AssetId("ETH"), "Ether"), AssetSpec(AssetId("USDC"), "USD Coin"))
    return Registry(chains=(chain,), assets=assets)


def _tx(n: int) -> str:
    return "0x" + f"{n:064x}"


def _write(store: Store, table: str, rows: list[tuple[Any, ...]]) -> None:
    with store.transaction() as conn:
        BulkWriter(conn).insert(table, FACT_COLUMNS[table], rows)


def _bad_debt(at: tuple[int, int], protocol: str, account: str, asset: str, amount: int) -> Any:
    block, log = at
    return (1, block, _tx(block * 100 + log), log, protocol, "lending", account, asset, amount)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = open_store(store_url)
    _write(
        store,
        "oracle_price",
        [
            (1, 5, _tx(5), 0, ETH_FEED, 1, 3_000 * 10**8, 0),
            (1, 5, _tx(5), 1, USDC_FEED, 1, 10**8, 0),
            (1, 9, _tx(9), 0, ETH_FEED, 2, 1_650 * 10**8, 0),
        ],
    )
    try:
        yield store
    finally:
        store.dispose()


def _deficits(store: Store) -> dict[str, tuple[int, int, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(DEFICITS.c.deficit_id, DEFICITS.c.amount,
                                   DEFICITS.c.fund_amount, DEFICITS.c.status))  # fmt: skip
        return {str(d): (int(a), int(f), str(s)) for d, a, f, s in rows}


def test_ids_are_stable_and_amounts_valued_in_the_fund_asset(store: Store) -> None:
    _write(
        store,
        "bad_debt",
        [
            _bad_debt((10, 0), LENDING, ALICE, WETH, 2 * 10**18),  # 2 ETH at 1,650
            _bad_debt((10, 1), PERPS, BOB, USDC, 1_234_567),
            _bad_debt((10, 2), PERPS, BOB, USDC, 1),  # same key: adds up
            _bad_debt((12, 0), PERPS, BOB, USDC, 2**200),  # exact beyond 64 bits
        ],
    )
    registry = _registry()
    with store.transaction() as conn:
        sync = sync_deficits(conn, registry)
    alice = deficit_id(1, LENDING, ALICE, 10, WETH)
    bob = deficit_id(1, PERPS.lower(), BOB, 10, USDC.lower())  # address case does not matter
    assert set(sync.added) == {alice, bob, deficit_id(1, PERPS, BOB, 12, USDC)}
    got = _deficits(store)
    assert got[alice] == (2 * 10**18, 3_300 * 10**6, "open")
    assert got[bob] == (1_234_568, 1_234_568, "open")
    assert got[deficit_id(1, PERPS, BOB, 12, USDC)][1] == 2**200
    assert claim_id(alice, "isolated") != claim_id(alice, "shared")
    assert len(claim_id(alice, "shared")) == 66


def test_running_detection_again_changes_nothing(store: Store) -> None:
    _write(store, "bad_debt", [_bad_debt((10, 0), PERPS, BOB, USDC, 500)])
    registry = _registry()
    with store.transaction() as conn:
        first = sync_deficits(conn, registry)
    for _ in range(2):
        with store.transaction() as conn:
            again = sync_deficits(conn, registry)
        assert not again.changed
    assert len(first.added) == 1
    assert len(_deficits(store)) == 1


def test_a_rollback_removes_unpaid_deficits_and_a_replay_restores_the_same_ids(
    store: Store,
) -> None:
    rows = [_bad_debt((10, 0), PERPS, BOB, USDC, 500), _bad_debt((12, 0), PERPS, ALICE, USDC, 700)]
    _write(store, "bad_debt", rows)
    registry = _registry()
    with store.transaction() as conn:
        sync_deficits(conn, registry)
    before = _deficits(store)
    with store.transaction() as conn:
        rollback(conn, 1, 11)
        removed = sync_deficits(conn, registry)
    assert removed.removed == (deficit_id(1, PERPS, ALICE, 12, USDC),)
    _write(store, "bad_debt", rows[1:])  # the same block indexed again
    with store.transaction() as conn:
        back = sync_deficits(conn, registry)
    assert back.added == removed.removed
    assert _deficits(store) == before


def test_a_reorged_out_deficit_that_was_paid_is_orphaned_never_unpaid(store: Store) -> None:
    _write(store, "bad_debt", [_bad_debt((12, 0), PERPS, ALICE, USDC, 700)])
    registry = _registry()
    config = InsuranceConfig(pay_after_finality=False, isolated_share_bps=5_000)
    with store.transaction() as conn:
        sync_deficits(conn, registry)
        plan = plan_epoch(conn, registry, config, {1: 1_000})  # 500 isolated + 500 shared
    assert len(plan.claim_ids) == 2
    isolated = claim_id(deficit_id(1, PERPS, ALICE, 12, USDC), "isolated")
    with store.transaction() as conn:
        mark_confirmed(conn, isolated, _tx(77), 13)
        rollback(conn, 1, 11)
        sync = sync_deficits(conn, registry)
    assert sync.orphaned == (deficit_id(1, PERPS, ALICE, 12, USDC),)
    assert next(iter(_deficits(store).values()))[2] == "orphaned"
    with store.engine.connect() as conn:
        states = {p.tranche: p.state for p in load_payouts(conn)}
        ledger = conn.execute(select(LEDGER.c.layer)).all()
    assert states == {"isolated": "confirmed", "shared": "cancelled"}
    assert ledger  # the allocation stays on record
    with store.transaction() as conn:  # and stays orphaned on later passes
        assert not sync_deficits(conn, registry).changed


def test_an_unpaid_allocation_is_reopened_when_the_amount_changes(store: Store) -> None:
    _write(store, "bad_debt", [_bad_debt((12, 0), PERPS, ALICE, USDC, 700)])
    registry = _registry()
    config = InsuranceConfig(pay_after_finality=False)
    with store.transaction() as conn:
        sync_deficits(conn, registry)
        plan_epoch(conn, registry, config, {1: 10_000})
        rollback(conn, 1, 11)
    _write(store, "bad_debt", [_bad_debt((12, 0), PERPS, ALICE, USDC, 900)])
    with store.transaction() as conn:
        sync = sync_deficits(conn, registry)
        payouts = conn.execute(select(PAYOUTS.c.claim_id)).all()
    assert sync.reopened == (deficit_id(1, PERPS, ALICE, 12, USDC),)
    assert payouts == []
    assert next(iter(_deficits(store).values())) == (900, 900, "open")


def test_a_deficit_without_a_price_names_the_feed_to_add(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(text("DELETE FROM oracle_price"))
    _write(store, "bad_debt", [_bad_debt((10, 0), LENDING, ALICE, WETH, 10**18)])
    with (
        pytest.raises(DeficitError, match="no positive ETH price at or below block 10"),
        store.transaction() as conn,
    ):
        sync_deficits(conn, _registry())


@pytest.mark.chain
def test_replaying_indexed_blocks_never_adds_a_deficit(backstop: Any) -> None:
    with backstop.store.transaction() as conn:
        first = sync_deficits(conn, backstop.registry)
    assert len(first.added) == 3  # one lending deficit, two perps bad debts
    with RpcClient(backstop.rpc_url) as client:
        block_hash = client.call("eth_getBlockByNumber", ["0x1e", False])["hash"]
    with backstop.store.transaction() as conn:  # replay: roll the chain back and re-index
        conn.execute(
            text("UPDATE cursor SET block_number = 30, block_hash = :h"), {"h": block_hash}
        )
        rollback(conn, backstop.chain_id, 30)
    backstop.index()
    with backstop.store.transaction() as conn:
        again = sync_deficits(conn, backstop.registry)
        count = conn.execute(text("SELECT COUNT(*) FROM deficit")).scalar_one()
    assert not again.changed
    assert count == 3
