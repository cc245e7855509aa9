"""Payouts on a real anvil devnet: exactly once, crash recovery, dry run, approvals, keys."""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once
from sqlalchemy import text

from chains.abi import event_topic
from chains.deploy import DEPLOYER
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from indexer.store import open_store
from insurance.attestation import verify_proof
from insurance.exceptions import OperatorError, PayoutError
from insurance.executor import (
    KEY_ENV,
    ChainPayoutExecutor,
    Operator,
    TxOutcome,
    operator_from,
)
from insurance.payouts import PayoutView, approve, load_payouts
from insurance.planning import epoch_tree
from insurance.status import insurance_status
from insurance.trigger import run_trigger

pytestmark = pytest.mark.chain

USDC = 10**6
ANVIL_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # DEPLOYER's
CLAIM_PAID = event_topic("ClaimPaid(bytes32,address,uint256,address)")


class CrashAfterSendError(RuntimeError):
    """The process 'dies' between handing the transaction to the node and recording it."""


class CrashingExecutor(ChainPayoutExecutor):
    sent: tuple[int, str] | None = None  # (chain id, tx hash) of the send before the crash

    def send_claim(self, payout: PayoutView) -> str:
        self.sent = (payout.chain_id, super().send_claim(payout))
        raise CrashAfterSendError(payout.claim_id)


class CrashBeforeReceiptExecutor(ChainPayoutExecutor):
    def wait(self, chain_id: int, tx_hash: str, timeout_s: float) -> TxOutcome:
        raise CrashAfterSendError(tx_hash)


def _claim_paid_logs(backstop: Any) -> list[dict[str, Any]]:
    with RpcClient(backstop.rpc_url) as client:
        query = {"address": backstop.fund, "topics": [CLAIM_PAID], "fromBlock": "0x0"}
        logs: list[dict[str, Any]] = client.call("eth_getLogs", [query])
    return logs


def _head(backstop: Any) -> int:
    with RpcClient(backstop.rpc_url) as client:
        return hex_to_int(client.call("eth_blockNumber"))


def test_each_deficit_is_paid_exactly_once_and_a_second_trigger_pays_nothing(
    backstop: Any,
) -> None:
    config = replace(backstop.config, isolated_cap=Decimal(1_000))  # the 5,063 USDC one spills
    before = backstop.fund_balance()
    executor = backstop.executor()
    try:
        report = run_trigger(backstop.store, backstop.registry, config, executor)
        again = run_trigger(backstop.store, backstop.registry, config, executor)
    finally:
        executor.close()
    assert report.epoch == 1
    assert len(report.deficits.added) == 3
    assert {p.state for p in report.payouts} == {"confirmed"}
    assert {p.tranche for p in report.payouts} == {"isolated", "shared"}
    assert all(p.amount <= 1_000 * USDC for p in report.payouts if p.tranche == "isolated")
    paid = sum(p.amount for p in report.payouts)
    assert report.paid_amount == paid > 5_000 * USDC
    assert backstop.fund_balance() == before - paid  # the fund fell by exactly what was paid
    assert report.attestation_root is not None
    assert report.liabilities == paid  # no IOU: the fund covered everything
    assert (again.epoch, again.paid_amount, again.payouts) == (None, 0, ())
    assert not again.deficits.changed
    assert backstop.fund_balance() == before - paid
    logs = _claim_paid_logs(backstop)
    assert sorted(entry["topics"][1] for entry in logs) == sorted(
        p.claim_id for p in report.payouts
    )

    backstop.index()  # the indexed ClaimPaid events agree with the payout table
    with backstop.store.engine.connect() as conn:
        status = insurance_status(conn, backstop.registry, config)
        deficits = conn.execute(text("SELECT status FROM deficit")).scalars().all()
    assert set(deficits) == {"settled"}
    with backstop.store.engine.connect() as conn:  # the published root can be rebuilt
        tree = epoch_tree(conn, 1)
    assert "0x" + tree.root.hex() == report.attestation_root
    assert tree.total == report.liabilities
    for leaf in tree.leaves:
        assert verify_proof(tree.root, tree.total, *tree.proof(leaf.address))
    assert status.paid_amount == paid
    assert status.pools[0].claims_paid == paid
    assert status.pools[0].claims_paid_count == len(report.payouts)
    assert status.pool_total == status.pools[0].assets == before - paid


def test_a_crash_between_send_and_record_is_recovered_without_paying_twice(
    backstop: Any,
) -> None:
    before = backstop.fund_balance()
    crashing = CrashingExecutor(backstop.registry, Operator(DEPLOYER))
    try:
        with pytest.raises(CrashAfterSendError):
            run_trigger(backstop.store, backstop.registry, backstop.config, crashing)
        assert crashing.sent is not None
        crashing.wait(*crashing.sent, timeout_s=10.0)  # anvil's automine seals it a bit later
    finally:
        crashing.close()
    with backstop.store.engine.connect() as conn:
        payouts = load_payouts(conn)
    first = payouts[0]
    assert [p.state for p in payouts] == ["planned"] * len(payouts)  # the send was not recorded
    assert backstop.fund_balance() == before - first.amount  # but it happened on chain

    executor = backstop.executor()
    try:
        report = run_trigger(backstop.store, backstop.registry, backstop.config, executor)
    finally:
        executor.close()
    assert report.execution is not None
    assert report.execution.recovered == (first.claim_id,)  # found paid, not sent again
    total = sum(p.amount for p in payouts)
    assert backstop.fund_balance() == before - total
    assert len(_claim_paid_logs(backstop)) == len(payouts)
    recovered = next(p for p in report.payouts if p.claim_id == first.claim_id)
    assert recovered.state == "confirmed"
    assert recovered.tx_hash is not None
    assert recovered.block_number is not None


def test_a_crash_after_recording_sent_is_reconciled_from_the_receipt(backstop: Any) -> None:
    before = backstop.fund_balance()
    crashing = CrashBeforeReceiptExecutor(backstop.registry, Operator(DEPLOYER))
    try:
        with pytest.raises(CrashAfterSendError):
            run_trigger(backstop.store, backstop.registry, backstop.config, crashing)
    finally:
        crashing.close()
    with backstop.store.engine.connect() as conn:
        sent = load_payouts(conn, ("sent",))
        payouts = load_payouts(conn)
    # every payout was sent and recorded before the first wait for a receipt
    assert len(sent) == len(payouts) == 3
    assert len({p.tx_hash for p in sent}) == 3
    assert None not in {p.tx_hash for p in sent}
    executor = backstop.executor()
    try:
        report = run_trigger(backstop.store, backstop.registry, backstop.config, executor)
    finally:
        executor.close()
    assert report.execution is not None
    assert sorted(report.execution.confirmed) == sorted(p.claim_id for p in sent)
    assert {p.state for p in report.payouts} == {"confirmed"}
    assert backstop.fund_balance() == before - sum(p.amount for p in report.payouts)
    assert {p.claim_id: p.tx_hash for p in report.payouts} == {p.claim_id: p.tx_hash for p in sent}
    assert len(_claim_paid_logs(backstop)) == 3  # each claim paid once, by its first send


def test_dry_run_computes_and_sends_nothing(backstop: Any) -> None:
    before, head = backstop.fund_balance(), _head(backstop)
    executor = backstop.executor()
    try:
        report = run_trigger(
            backstop.store, backstop.registry, backstop.config, executor, dry_run=True
        )
    finally:
        executor.close()
    assert report.dry_run
    assert report.epoch == 1
    assert len(report.payouts) == 3
    assert {p.state for p in report.payouts} == {"planned"}
    assert report.paid_amount == 0
    assert (backstop.fund_balance(), _head(backstop)) == (before, head)
    with backstop.store.engine.connect() as conn:
        counts = [
            conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("deficit", "payout", "ledger", "attestation")
        ]
    assert counts == [0, 0, 0, 0]


def test_payouts_above_the_threshold_wait_for_approval(backstop: Any) -> None:
    config = replace(backstop.config, approval_threshold=Decimal(1_000))
    before = backstop.fund_balance()
    executor = backstop.executor()
    try:
        first = run_trigger(backstop.store, backstop.registry, config, executor)
        waiting = [p for p in first.payouts if p.state == "approval_required"]
        assert [p.amount > 1_000 * USDC for p in waiting] == [True]
        paid_first = sum(p.amount for p in first.payouts if p.state == "confirmed")
        assert backstop.fund_balance() == before - paid_first
        second = run_trigger(backstop.store, backstop.registry, config, executor)
        assert second.paid_amount == 0  # still waiting
        assert second.execution is not None
        assert second.execution.awaiting_approval == (waiting[0].claim_id,)
        with backstop.store.transaction() as conn:
            approved = approve(conn, waiting[0].claim_id, by="risk-officer")
            with pytest.raises(PayoutError, match="only payouts in approval_required"):
                approve(conn, first.payouts[0].claim_id if first.payouts[0].state == "confirmed"
                        else first.payouts[1].claim_id, by="x")  # fmt: skip
        assert (approved.state, approved.approved_by) == ("approved", "risk-officer")
        third = run_trigger(backstop.store, backstop.registry, config, executor)
    finally:
        executor.close()
    assert third.paid_amount == waiting[0].amount
    assert backstop.fund_balance() == before - paid_first - waiting[0].amount


def test_a_private_key_signs_locally_and_is_never_shown(
    backstop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    operator = operator_from(backstop.config, {KEY_ENV: ANVIL_KEY_0})
    assert operator is not None
    assert operator.address == DEPLOYER
    assert ANVIL_KEY_0[2:] not in repr(operator)
    before = backstop.fund_balance()
    executor = backstop.executor(operator)
    try:
        report = run_trigger(backstop.store, backstop.registry, backstop.config, executor)
    finally:
        executor.close()
    assert {p.state for p in report.payouts} == {"confirmed"}
    assert backstop.fund_balance() == before - report.paid_amount
    assert ANVIL_KEY_0[2:] not in caplog.text
    with pytest.raises(OperatorError, match="is not a private key") as info:
        operator_from(backstop.config, {KEY_ENV: "0x1234"})
    assert "1234" not in str(info.value)
    other = replace(backstop.config, operator="0x" + "12" * 20)
    with pytest.raises(OperatorError, match="make them agree"):
        operator_from(other, {KEY_ENV: ANVIL_KEY_0})


def test_an_address_that_is_not_an_operator_is_refused_before_sending(backstop: Any) -> None:
    stranger = Operator("0x" + "5a" * 20)
    before = backstop.fund_balance()
    executor = backstop.executor(stranger)
    try:
        with pytest.raises(OperatorError, match="is not an operator of the insurance fund"):
            run_trigger(backstop.store, backstop.registry, backstop.config, executor)
    finally:
        executor.close()
    assert backstop.fund_balance() == before
    executor = backstop.executor(None)
    try:
        with pytest.raises(OperatorError, match="RTRM_INSURANCE_OPERATOR_KEY"):
            run_trigger(backstop.store, backstop.registry, backstop.config, executor)
    finally:
        executor.close()


def test_end_to_end_on_postgresql_too(crashed_devnet: Any, postgres_url: str) -> None:
    store_url = postgres_url
    index_once(crashed_devnet.config_path, store_url)
    registry = replace(load_registry(Path(crashed_devnet.config_path)), database_url=store_url)
    store = open_store(store_url)
    executor = ChainPayoutExecutor(registry, Operator(DEPLOYER))
    from insurance.config import InsuranceConfig

    config = InsuranceConfig(pay_after_finality=False, isolated_cap=Decimal(100))
    try:
        report = run_trigger(store, registry, config, executor)
        again = run_trigger(store, registry, config, executor)
    finally:
        executor.close()
        store.dispose()
    assert {p.state for p in report.payouts} == {"confirmed"}
    assert report.paid_amount == sum(p.amount for p in report.payouts) > 0
    assert again.paid_amount == 0
