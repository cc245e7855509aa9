"""The insurance backstop: detect bad debt, allocate it through a waterfall, pay it on
chain exactly once, size the capital it needs, and attest to the fund's liabilities.

Flow (one ``rtrm insurance trigger``): indexed ``bad_debt`` facts -> :mod:`deficits`
(stable ids, reorg-aware) -> :mod:`planning` (an epoch through the pure
:mod:`waterfall`: proceeds, deductible, isolated tranche, shared layer, IOU; ledger,
payouts with deterministic claim ids, a Merkle-sum :mod:`attestation`) ->
:mod:`executor` (``payClaim`` on the fund contract behind the ``PayoutExecutor`` seam,
recovering from crashes by reading the chain). :mod:`sizing` turns Monte Carlo bad
debt from ``aggregation.cascade`` into a capital requirement and a coverage ratio;
:mod:`status` summarises it all. Configuration: :mod:`config` (``[insurance]``). Tables:
:mod:`models` (own Alembic revision ``0002``).

Money is exact: integers in the fund asset's smallest unit everywhere except inside the
sizing math (USD floats), whose published result is rounded up to an integer.

May import ``aggregation``, ``indexer`` and ``chains``. Public names are imported lazily
(PEP 562), so importing ``insurance.exceptions`` (as every ``rtrm`` command does) does
not load numpy, scipy or the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from insurance.attestation import Leaf, MerkleSumTree, ProofStep, build_tree, verify_proof
    from insurance.config import InsuranceConfig, load_insurance_config
    from insurance.deficits import DeficitSync, claim_id, deficit_id, sync_deficits
    from insurance.executor import (
        ChainPayoutExecutor,
        ExecutionReport,
        Operator,
        PayoutExecutor,
        execute_payouts,
        operator_from,
    )
    from insurance.payouts import PayoutView, approve
    from insurance.planning import EpochPlan, plan_epoch
    from insurance.sizing import SizingResult, size_capital, smooth
    from insurance.status import InsuranceStatus, insurance_status
    from insurance.trigger import TriggerReport, run_trigger
    from insurance.waterfall import Allocation, Capital, Claim, Policy, allocate

_EXPORTS: dict[str, str] = {
    "Allocation": "insurance.waterfall",
    "Capital": "insurance.waterfall",
    "ChainPayoutExecutor": "insurance.executor",
    "Claim": "insurance.waterfall",
    "DeficitSync": "insurance.deficits",
    "EpochPlan": "insurance.planning",
    "ExecutionReport": "insurance.executor",
    "InsuranceConfig": "insurance.config",
    "InsuranceStatus": "insurance.status",
    "Leaf": "insurance.attestation",
    "MerkleSumTree": "insurance.attestation",
    "Operator": "insurance.executor",
    "PayoutExecutor": "insurance.executor",
    "PayoutView": "insurance.payouts",
    "Policy": "insurance.waterfall",
    "ProofStep": "insurance.attestation",
    "SizingResult": "insurance.sizing",
    "TriggerReport": "insurance.trigger",
    "allocate": "insurance.waterfall",
    "approve": "insurance.payouts",
    "build_tree": "insurance.attestation",
    "claim_id": "insurance.deficits",
    "deficit_id": "insurance.deficits",
    "execute_payouts": "insurance.executor",
    "insurance_status": "insurance.status",
    "load_insurance_config": "insurance.config",
    "operator_from": "insurance.executor",
    "plan_epoch": "insurance.planning",
    "run_trigger": "insurance.trigger",
    "size_capital": "insurance.sizing",
    "smooth": "insurance.sizing",
    "sync_deficits": "insurance.deficits",
    "verify_proof": "insurance.attestation",
}

__all__ = [
    "Allocation",
    "Capital",
    "ChainPayoutExecutor",
    "Claim",
    "DeficitSync",
    "EpochPlan",
    "ExecutionReport",
    "InsuranceConfig",
    "InsuranceStatus",
    "Leaf",
    "MerkleSumTree",
    "Operator",
    "PayoutExecutor",
    "PayoutView",
    "Policy",
    "ProofStep",
    "SizingResult",
    "TriggerReport",
    "allocate",
    "approve",
    "build_tree",
    "claim_id",
    "deficit_id",
    "execute_payouts",
    "insurance_status",
    "load_insurance_config",
    "operator_from",
    "plan_epoch",
    "run_trigger",
    "size_capital",
    "smooth",
    "sync_deficits",
    "verify_proof",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'insurance' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
