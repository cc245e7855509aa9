"""The payout state machine through the PayoutExecutor seam, with an in-memory chain:
short funds fail and are retried, dropped transactions are re-sent, pending ones wait,
an unreachable chain waits for the next round, and nothing is ever paid twice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from chains.exceptions import RPCConnectionError
from chains.spec import AssetSpec, ChainSpec, ContractSpec, Registry, TokenSpec, checksum_address
from chains.types import Address, AssetId, AssetKind, BlockNumber, ChainId, ContractKind
from indexer.state import FACT_COLUMNS
from indexer.store import BulkWriter, Store, open_store
from insurance.config import InsuranceConfig
from insurance.executor import PaidClaim, TxOutcome
from insurance.payouts import PayoutView, load_payouts
from insurance.trigger import run_trigger


def _address(byte: str) -> Address:
    return checksum_address("0x" + byte * 20, key="test")


FUNDS = {1: _address("f1"), 10: _address("f2")}
USDC = {1: _address("aa"), 10: _address("ab")}
PERPS = _address("22")


def _registry() -> Registry:
    chains = tuple(
        ChainSpec(
            ChainId(cid),
            f"chain{cid}",
            ("http://127.0.0.1:1",),
            0,
            2.0,
            (
                ContractSpec(
                    ChainId(cid),
                    "fund",
                    ContractKind.INSURANCE_FUND,
                    FUNDS[cid],
                    BlockNumber(1),
                    AssetId("USDC"),
                ),
            ),
            (TokenSpec(ChainId(cid), "USDC", USDC[cid], 6, AssetId("USDC"), AssetKind.STABLE),),
        )
        for cid in (1, 10)
    )
    return Registry(chains=chains, assets=(AssetSpec(AssetId("USDC"), "USD Coin"),))


@dataclass
class FakeChain:
    """In-memory funds: balances, paid claim ids, and scripted transaction outcomes."""

    balances: dict[int, int]
    paid: dict[str, PaidClaim] = field(default_factory=dict)
    outcomes: list[str] = field(default_factory=list)  # next wait() results, then "success"
    down: set[int] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)
    _pending: dict[str, PayoutView] = field(default_factory=dict)

    def fund_balance(self, chain_id: int, fund: str) -> int:
        if chain_id in self.down:
            raise RPCConnectionError(f"chain {chain_id} is down", url="http://fake")
        return self.balances[chain_id]

    def claim_paid(self, chain_id: int, fund: str, claim_id: str) -> PaidClaim | None:
        return self.paid.get(claim_id)

    def send_claim(self, payout: PayoutView) -> str:
        tx = "0x" + f"{len(self.sent) + 1:064x}"
        self.sent.append(payout.claim_id)
        self._pending[tx] = payout
        return tx

    def wait(self, chain_id: int, tx_hash: str, timeout_s: float) -> TxOutcome:
        outcome = self.outcomes.pop(0) if self.outcomes else "success"
        payout = self._pending[tx_hash]
        if outcome != "success":
            return TxOutcome(outcome)  # type: ignore[arg-type]
        if payout.claim_id in self.paid:  # the contract's guard
            return TxOutcome("reverted", 7, "claim already paid")
        self.paid[payout.claim_id] = PaidClaim(tx_hash, 7, payout.amount)
        self.balances[payout.chain_id] -= payout.amount
        return TxOutcome("success", 7)

    def close(self) -> None:
        return None


@pytest.fixture
def store(tmp_path: object) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/rtrm.db")
    rows = [
        (1, 5, "0x" + "01" * 32, 0, PERPS, "perps", _address("a1"), USDC[1], 3_000_000),
        (10, 8, "0x" + "02" * 32, 0, PERPS, "perps", _address("b1"), USDC[10], 2_000_000),
    ]
    with store.transaction() as conn:
        BulkWriter(conn).insert("bad_debt", FACT_COLUMNS["bad_debt"], rows)
    try:
        yield store
    finally:
        store.dispose()


CONFIG = InsuranceConfig(pay_after_finality=False, isolated_share_bps=10_000)


def test_an_iou_records_what_no_layer_covered(store: Store) -> None:
    chain = FakeChain({1: 1_000_000, 10: 5_000_000})
    report = run_trigger(store, _registry(), CONFIG, chain)
    by_chain = {p.chain_id: p for p in report.payouts}
    # chain 1's tranche holds 1 USDC and there is no shared layer: 2 USDC become an IOU
    assert (by_chain[1].amount, by_chain[1].state) == (1_000_000, "confirmed")
    assert (by_chain[10].amount, by_chain[10].state) == (2_000_000, "confirmed")
    assert report.liabilities == 5_000_000  # payouts + the IOU
    assert chain.balances == {1: 0, 10: 3_000_000}


def test_a_shared_payout_on_a_chain_without_funds_fails_until_topped_up(store: Store) -> None:
    shared_only = InsuranceConfig(pay_after_finality=False, isolated_share_bps=0)
    chain = FakeChain({1: 0, 10: 10_000_000})  # the shared layer's capital sits on chain 10
    report = run_trigger(store, _registry(), shared_only, chain)
    by_chain = {p.chain_id: p for p in report.payouts}
    assert by_chain[10].state == "confirmed"
    assert by_chain[1].state == "failed"
    assert "move capital to it and run trigger again" in (by_chain[1].error or "")
    again = run_trigger(store, _registry(), shared_only, chain)
    assert [p.state for p in again.payouts] == ["failed"]  # retried, still short
    chain.balances[1] = 4_000_000  # capital bridged to chain 1
    last = run_trigger(store, _registry(), shared_only, chain)
    assert [(p.chain_id, p.state) for p in last.payouts] == [(1, "confirmed")]
    assert chain.balances == {1: 1_000_000, 10: 8_000_000}
    assert len(chain.sent) == 2


def test_dropped_and_pending_transactions(store: Store) -> None:
    chain = FakeChain({1: 10**9, 10: 10**9}, outcomes=["unknown", "pending"])
    first = run_trigger(store, _registry(), CONFIG, chain)
    states = sorted(p.state for p in first.payouts)
    assert states == ["failed", "sent"]  # dropped -> failed (re-sent next time); pending waits
    second = run_trigger(store, _registry(), CONFIG, chain)
    assert sorted(p.state for p in second.payouts) == ["confirmed", "confirmed"]
    assert len(chain.paid) == 2
    assert len(chain.sent) == 3  # the dropped one was sent twice, paid once
    total = sum(p.amount for p in second.payouts)
    assert chain.balances == {1: 10**9 - 3_000_000, 10: 10**9 - 2_000_000}
    assert total == 5_000_000


def test_an_unreachable_chain_waits_and_does_not_block_the_others(store: Store) -> None:
    chain = FakeChain({1: 10**9, 10: 10**9}, down={10})
    first = run_trigger(store, _registry(), CONFIG, chain)
    assert first.unreachable_chains == (10,)
    assert [p.chain_id for p in first.payouts] == [1]
    chain.down.clear()
    second = run_trigger(store, _registry(), CONFIG, chain)
    assert second.epoch == 2
    assert [(p.chain_id, p.state) for p in second.payouts] == [(10, "confirmed")]
    with store.engine.connect() as conn:
        assert len(load_payouts(conn, ("confirmed",))) == 2


@dataclass
class RecordingChain(FakeChain):
    """A fake chain that logs every call and, at each send, reads the store: every earlier
    send must already be recorded ``sent`` with its hash (the crash-safety invariant)."""

    store: Store | None = None
    calls: list[str] = field(default_factory=list)

    def claim_paid(self, chain_id: int, fund: str, claim_id: str) -> PaidClaim | None:
        self.calls.append("claim_paid")
        return super().claim_paid(chain_id, fund, claim_id)

    def send_claim(self, payout: PayoutView) -> str:
        assert self.store is not None
        with self.store.engine.connect() as conn:
            recorded = {p.tx_hash for p in load_payouts(conn, ("sent",))}
        assert recorded == set(self._pending), "a send before the previous one was recorded"
        self.calls.append("send")
        return super().send_claim(payout)

    def wait(self, chain_id: int, tx_hash: str, timeout_s: float) -> TxOutcome:
        self.calls.append("wait")
        return super().wait(chain_id, tx_hash, timeout_s)


def test_every_payout_is_sent_and_recorded_before_any_receipt_is_awaited(store: Store) -> None:
    chain = RecordingChain({1: 10**9, 10: 10**9}, store=store)
    report = run_trigger(store, _registry(), CONFIG, chain)
    assert [p.state for p in report.payouts] == ["confirmed", "confirmed"]
    # each claim is checked on chain right before its send; the waits come after all sends
    assert chain.calls == ["claim_paid", "send", "claim_paid", "send", "wait", "wait"]
    again = run_trigger(store, _registry(), CONFIG, chain)
    assert (again.paid_amount, len(chain.sent)) == (0, 2)


@pytest.fixture
def one_chain_store(tmp_path: object) -> Iterator[Store]:
    """Two bad debts on chain 1 (3 and 2 USDC)."""
    store = open_store(f"sqlite:///{tmp_path}/one.db")
    rows = [
        (1, 5, "0x" + "01" * 32, 0, PERPS, "perps", _address("a1"), USDC[1], 3_000_000),
        (1, 6, "0x" + "03" * 32, 0, PERPS, "perps", _address("a2"), USDC[1], 2_000_000),
    ]
    with store.transaction() as conn:
        BulkWriter(conn).insert("bad_debt", FACT_COLUMNS["bad_debt"], rows)
    try:
        yield store
    finally:
        store.dispose()


def test_payouts_in_flight_count_against_the_fund_balance(one_chain_store: Store) -> None:
    # the shared layer (capital on both chains) covers both claims, but chain 1's fund,
    # which pays them, holds 4 USDC: the second must not be sent while the first is
    # in flight (the balance read on chain does not show it yet)
    shared_only = InsuranceConfig(pay_after_finality=False, isolated_share_bps=0)
    chain = FakeChain({1: 4_000_000, 10: 10_000_000})
    report = run_trigger(one_chain_store, _registry(), shared_only, chain)
    states = sorted((p.amount, p.state) for p in report.payouts)
    assert states == [(2_000_000, "failed"), (3_000_000, "confirmed")]
    failed = next(p for p in report.payouts if p.state == "failed")
    assert "on its way out" in (failed.error or "")
    assert chain.balances[1] == 1_000_000  # never negative
    assert len(chain.sent) == 1
