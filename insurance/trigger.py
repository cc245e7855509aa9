"""One backstop round: detect deficits, allocate an epoch, pay its claims on chain.

:func:`run_trigger` is what ``rtrm insurance trigger`` (and the scheduler) runs:

1. read every fund's balance live (``totalAssets()``) through the executor;
2. in one write transaction: sync the ``deficit`` table with the indexed bad debt
   (:func:`insurance.deficits.sync_deficits`), then plan a new epoch over the open
   deficits (:func:`insurance.planning.plan_epoch`: waterfall, ledger, payouts,
   attestation);
3. send the sendable payouts and reconcile the sent ones
   (:func:`insurance.executor.execute_payouts`), each transition committed on its own.

``dry_run`` does steps 1-2 in a transaction that is rolled back and sends nothing: the
report shows what would be allocated and paid. Running the trigger again after a
complete run pays nothing: deficits are allocated once, claim ids are paid once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chains.exceptions import ChainError
from chains.spec import Registry
from indexer.status import watermark
from indexer.store import Store
from insurance.config import InsuranceConfig
from insurance.deficits import DeficitSync, fund_info, funded_chains, sync_deficits
from insurance.executor import ExecutionReport, PayoutExecutor, execute_payouts
from insurance.payouts import SENDABLE_STATES, PayoutView, load_payouts
from insurance.planning import EpochPlan, plan_epoch

__all__ = ["TriggerReport", "fund_balances", "run_trigger"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TriggerReport:
    """What a trigger found, planned and paid (amounts in fund-asset smallest units).

    ``payouts``: every payout this run planned or touched, as stored at the end (in a
    dry run: as they would be before sending). ``paid_amount``: what the funds paid in
    this run (0 in a dry run).
    """

    dry_run: bool
    watermark: dict[int, int]
    balances: dict[int, int]
    deficits: DeficitSync
    epoch: int | None
    waiting_for_finality: tuple[str, ...]
    unreachable_chains: tuple[int, ...]
    attestation_root: str | None
    liabilities: int
    payouts: tuple[PayoutView, ...]
    execution: ExecutionReport | None
    paid_amount: int


class _DryRunRollbackError(Exception):
    """Raised inside a dry run's transaction so that nothing it wrote is kept."""


def fund_balances(registry: Registry, executor: PayoutExecutor) -> dict[int, int]:
    """Every funded chain's fund balance, read live; a chain that cannot be reached is left
    out (its deficits wait for the next trigger) so that it never blocks the others."""
    balances = {}
    for chain in funded_chains(registry):
        info = fund_info(chain)
        try:
            balances[int(chain.chain_id)] = executor.fund_balance(chain.chain_id, info.fund.address)
        except ChainError as exc:
            log.warning(
                "chain %s: fund balance unreadable, skipped this round: %s", chain.label, exc
            )
    return balances


def run_trigger(
    store: Store,
    registry: Registry,
    config: InsuranceConfig,
    executor: PayoutExecutor,
    *,
    dry_run: bool = False,
) -> TriggerReport:
    """Detect, allocate and pay (module docstring)."""
    balances = fund_balances(registry, executor)
    touched: list[PayoutView] = []
    try:
        with store.transaction() as conn:
            cut = watermark(conn)
            sync = sync_deficits(conn, registry)
            plan: EpochPlan = plan_epoch(conn, registry, config, balances, watermark=cut)
            if dry_run:
                touched = load_payouts(conn, (*SENDABLE_STATES, "sent", "approval_required"))
                raise _DryRunRollbackError
    except _DryRunRollbackError:
        pass
    if dry_run:
        return TriggerReport(
            True,
            cut,
            balances,
            sync,
            plan.epoch,
            plan.waiting_for_finality,
            plan.unreachable_chains,
            plan.root,
            plan.liabilities,
            tuple(touched),
            None,
            0,
        )
    execution = execute_payouts(store, executor, timeout_s=config.confirm_timeout_s)
    claims = set(plan.claim_ids)
    for group in (
        execution.confirmed,
        execution.recovered,
        execution.pending,
        execution.failed,
        execution.awaiting_approval,
    ):
        claims.update(group)
    with store.engine.connect() as conn:
        touched = [p for p in load_payouts(conn) if p.claim_id in claims]
    return TriggerReport(
        False,
        cut,
        balances,
        sync,
        plan.epoch,
        plan.waiting_for_finality,
        plan.unreachable_chains,
        plan.root,
        plan.liabilities,
        tuple(touched),
        execution,
        execution.paid_amount,
    )
