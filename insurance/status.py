"""The backstop at a glance: pools, requirement, coverage, deficits, payouts, attestation.

Read-only over the store (no RPC): pool assets per chain come from the indexed
``insurance_event`` facts (deposits - withdrawals - claims paid), so they lag the chain by
what is not indexed yet and ignore plain token transfers to the fund. The requirement is
the latest published :class:`~insurance.models.CapitalRequirement` (``rtrm insurance
size``); coverage = pool / requirement, with the alert levels of ``[insurance.alerts]``.
Amounts are in the fund asset's smallest unit; ``decimals`` says how to display them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, func, select, text

from chains.spec import Registry
from indexer.status import watermark
from insurance.config import InsuranceConfig
from insurance.deficits import fund_info, funded_chains
from insurance.models import (
    ATTESTATIONS,
    DEFICIT_STATUSES,
    DEFICITS,
    LEDGER,
    PAYOUT_STATES,
    PAYOUTS,
    REQUIREMENTS,
)
from insurance.planning import fund_decimals

__all__ = ["AttestationInfo", "InsuranceStatus", "PoolStatus", "insurance_status", "pool_assets"]

_SIGN = {"deposit": 1, "withdrawal": -1, "claim_paid": -1}


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """One chain's fund as indexed."""

    chain_id: int
    fund: str
    token: str
    assets: int
    deposits: int
    withdrawals: int
    claims_paid: int
    claims_paid_count: int


@dataclass(frozen=True, slots=True)
class AttestationInfo:
    epoch: int
    root: str
    liabilities: int
    assets: int
    leaf_count: int


@dataclass(frozen=True, slots=True)
class InsuranceStatus:
    """Everything ``rtrm insurance status`` shows; ``coverage_ratio`` and ``alert`` are
    None until a requirement has been published."""

    watermark: dict[int, int]
    decimals: int
    pools: tuple[PoolStatus, ...]
    pool_total: int
    required: int | None
    coverage_ratio: float | None
    alert: str | None
    deficits: dict[str, int]
    open_deficit_amount: int
    payouts: dict[str, int]
    paid_claims: int
    paid_amount: int
    iou_total: int
    attestation: AttestationInfo | None


def pool_assets(conn: Connection, chain_id: int, fund: str, token: str) -> PoolStatus:
    """The fund's assets as its indexed events say."""
    rows = conn.execute(
        text(
            "SELECT kind, amount FROM insurance_event WHERE chain_id = :c AND fund = :f "
            "ORDER BY block_number, log_index"
        ),
        {"c": chain_id, "f": fund},
    )
    totals = {"deposit": 0, "withdrawal": 0, "claim_paid": 0}
    claims = 0
    for kind, amount in rows:
        if kind in totals:
            totals[kind] += int(amount)
            claims += kind == "claim_paid"
    assets = sum(_SIGN[k] * v for k, v in totals.items())
    return PoolStatus(
        chain_id,
        fund,
        token,
        assets,
        totals["deposit"],
        totals["withdrawal"],
        totals["claim_paid"],
        claims,
    )


def _counts(conn: Connection, column: Column[Any], values: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(values, 0)
    for value, count in conn.execute(select(column, func.count()).group_by(column)):
        counts[str(value)] = int(count)
    return counts


def insurance_status(
    conn: Connection, registry: Registry, config: InsuranceConfig
) -> InsuranceStatus:
    """The backstop's state as of the store (module docstring)."""
    pools = []
    for chain in funded_chains(registry):
        info = fund_info(chain)
        pools.append(pool_assets(conn, int(chain.chain_id), info.fund.address, info.token.symbol))
    total = sum(p.assets for p in pools)
    latest = conn.execute(select(REQUIREMENTS).order_by(REQUIREMENTS.c.id.desc()).limit(1)).first()
    required = None if latest is None else int(latest.required)
    coverage = None if required is None else (total / required if required else float("inf"))
    open_amount = sum(
        int(v)
        for (v,) in conn.execute(select(DEFICITS.c.fund_amount).where(DEFICITS.c.status == "open"))
    )
    paid = [
        int(v)
        for (v,) in conn.execute(select(PAYOUTS.c.amount).where(PAYOUTS.c.state == "confirmed"))
    ]
    iou = sum(
        int(v) for (v,) in conn.execute(select(LEDGER.c.amount).where(LEDGER.c.layer == "residual"))
    )
    last = conn.execute(select(ATTESTATIONS).order_by(ATTESTATIONS.c.epoch.desc()).limit(1)).first()
    attestation = (
        None
        if last is None
        else AttestationInfo(
            int(last.epoch), str(last.root), int(last.total), int(last.assets), int(last.leaf_count)
        )
    )
    return InsuranceStatus(
        watermark=watermark(conn),
        decimals=fund_decimals(registry),
        pools=tuple(pools),
        pool_total=total,
        required=required,
        coverage_ratio=coverage,
        alert=None if coverage is None else config.alerts.level(coverage),
        deficits=_counts(conn, DEFICITS.c.status, DEFICIT_STATUSES),
        open_deficit_amount=open_amount,
        payouts=_counts(conn, PAYOUTS.c.state, PAYOUT_STATES),
        paid_claims=len(paid),
        paid_amount=sum(paid),
        iou_total=iou,
        attestation=attestation,
    )
