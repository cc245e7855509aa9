"""Planning an epoch: open deficits -> waterfall -> ledger rows, payouts and an attestation.

Concept. An *epoch* is one allocation round: every deficit that is open (and, with
``pay_after_finality``, in a finalized block of its chain) when ``rtrm insurance trigger``
runs is allocated together, so the shared layer is split pro rata among them when it is
short. Epochs are numbered 1, 2, … in the store; a deficit is allocated in exactly one.

Capital of the epoch, per chain ``c`` with fund balance ``B_c`` (read live from the fund
contract by the caller) less its outstanding payouts ``O_c`` (planned, awaiting approval,
approved, sent or failed-to-be-retried): ``A_c = max(0, B_c - O_c)``; the isolated tranche
of ``c`` is ``A_c x isolated_share_bps / 10000`` and the shared layer is the rest of every
chain's ``A_c``. The shared layer is one pool on paper, but each payout is paid by the
fund on the deficit's own chain; if that fund cannot pay its shared share, the payout
fails with a message to move capital there and is retried by the next trigger.

Writes (in the caller's transaction): a ledger row per non-zero layer, one payout per
paying layer (``isolated``, ``shared``) with its deterministic claim id, state ``planned``
or ``approval_required`` above the threshold, and the epoch's attestation: a Merkle-sum
tree over what the fund owes each recipient this epoch (payouts plus IOUs), published
next to the fund's assets.

Units: the fund asset's smallest unit (all funds must pay in tokens with equal decimals,
so the shared layer has one unit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from chains.spec import Registry
from indexer.status import chain_status
from insurance.attestation import Leaf, MerkleSumTree, build_tree
from insurance.config import InsuranceConfig, to_units
from insurance.deficits import FundInfo, claim_id, fund_info, funded_chains
from insurance.exceptions import DeficitError
from insurance.models import ATTESTATIONS, DEFICITS, LEDGER, PAYOUTS
from insurance.waterfall import BPS, Capital, Claim, EpochAllocation, Policy, allocate

__all__ = [
    "OUTSTANDING_STATES",
    "EpochPlan",
    "capital_for",
    "epoch_tree",
    "fund_decimals",
    "plan_epoch",
    "policy_for",
]

log = logging.getLogger(__name__)

OUTSTANDING_STATES = ("planned", "approval_required", "approved", "sent", "failed")
PAYING_LAYERS = ("isolated", "shared")
_TRANCHE_OF_LAYER = {"proceeds": "liquidation", "deductible": "protocol", "shared": "shared"}


@dataclass(frozen=True, slots=True)
class EpochPlan:
    """What one planning pass did: the epoch (None when nothing was open), the waterfall's
    result, the payouts created (claim ids), deficits held back until final, the
    attestation root and total, and the chains whose deficits stayed open because their
    fund balance could not be read (no entry in ``balances``)."""

    epoch: int | None
    allocation: EpochAllocation | None
    claim_ids: tuple[str, ...]
    waiting_for_finality: tuple[str, ...]
    capital: Capital
    root: str | None = None
    liabilities: int = 0
    unreachable_chains: tuple[int, ...] = ()


def fund_decimals(registry: Registry) -> int:
    """The decimals of the funds' payment tokens, which must agree across chains."""
    infos = [fund_info(c) for c in funded_chains(registry)]
    if not infos:
        raise DeficitError(
            "no chain in rtrm.toml has an insurance_fund contract; add one to each chain the "
            'backstop covers (kind = "insurance_fund", asset = "USDC")'
        )
    decimals = {i.token.decimals for i in infos}
    if len(decimals) != 1:
        listed = ", ".join(f"{i.chain_id}: {i.token.symbol} ({i.token.decimals})" for i in infos)
        raise DeficitError(
            f"the insurance funds pay in tokens with different decimals ({listed}); the shared "
            "layer needs one unit: fund every chain with the same stablecoin precision"
        )
    return decimals.pop()


def policy_for(config: InsuranceConfig, decimals: int) -> Policy:
    """The waterfall terms of ``config`` in smallest units."""

    def units(amount: Decimal | None) -> int | None:
        return None if amount is None else to_units(amount, decimals)

    return Policy(
        deductible=to_units(config.deductible, decimals),
        deductible_bps=config.deductible_bps,
        isolated_cap=units(config.isolated_cap),
        shared_cap=units(config.shared_cap),
    )


def capital_for(
    balances: Mapping[int, int], outstanding: Mapping[int, int], isolated_share_bps: int
) -> Capital:
    """Per-chain isolated tranches (keyed by chain id as text) and the shared layer."""
    isolated: dict[str, int] = {}
    shared = 0
    for chain_id, balance in balances.items():
        available = max(0, balance - outstanding.get(chain_id, 0))
        isolated[str(chain_id)] = available * isolated_share_bps // BPS
        shared += available - isolated[str(chain_id)]
    return Capital(isolated=isolated, shared=shared)


def _outstanding(conn: Connection) -> dict[int, int]:
    rows = conn.execute(
        select(PAYOUTS.c.chain_id, PAYOUTS.c.amount).where(PAYOUTS.c.state.in_(OUTSTANDING_STATES))
    )
    totals: dict[int, int] = {}
    for chain_id, amount in rows:
        totals[int(chain_id)] = totals.get(int(chain_id), 0) + int(amount)
    return totals


def _finalized(conn: Connection) -> dict[int, int]:
    return {s.chain_id: s.finalized_block for s in chain_status(conn)}


def plan_epoch(
    conn: Connection,
    registry: Registry,
    config: InsuranceConfig,
    balances: Mapping[int, int],
    *,
    watermark: Mapping[int, int] | None = None,
) -> EpochPlan:
    """Allocate every eligible open deficit in one new epoch (module docstring)."""
    decimals = fund_decimals(registry)
    capital = capital_for(balances, _outstanding(conn), config.isolated_share_bps)
    rows = conn.execute(
        select(DEFICITS)
        .where(DEFICITS.c.status == "open")
        .order_by(DEFICITS.c.chain_id, DEFICITS.c.block_number, DEFICITS.c.deficit_id)
    ).all()
    finalized = _finalized(conn)
    ready: list[Row[Any]] = []
    waiting: list[Row[Any]] = []
    unreachable = sorted({int(r.chain_id) for r in rows} - set(balances))
    for row in rows:
        if int(row.chain_id) in unreachable:
            continue
        final = int(row.block_number) <= finalized.get(int(row.chain_id), -1)
        (ready if final or not config.pay_after_finality else waiting).append(row)
    if waiting:
        log.info("%d deficit(s) wait for their blocks to be final", len(waiting))
    pending = tuple(str(r.deficit_id) for r in waiting)
    if not ready:
        return EpochPlan(None, None, (), pending, capital, unreachable_chains=tuple(unreachable))

    # attestations are never deleted, so an epoch number is never reused after a reorg
    last = conn.execute(select(func.coalesce(func.max(ATTESTATIONS.c.epoch), 0))).scalar_one()
    epoch = int(last) + 1
    claims = [
        Claim(key=str(r.deficit_id), tranche=str(r.chain_id), loss=int(r.fund_amount))
        for r in ready
    ]
    result = allocate(claims, policy_for(config, decimals), capital)
    threshold = (
        None if config.approval_threshold is None else to_units(config.approval_threshold, decimals)
    )
    funds: dict[int, FundInfo] = {}
    ledger: list[dict[str, object]] = []
    payouts: list[dict[str, object]] = []
    owed: dict[str, int] = {}
    for row, alloc in zip(ready, result.allocations, strict=True):
        chain_id = int(row.chain_id)
        info = funds.setdefault(chain_id, fund_info(registry.chain(chain_id)))
        for layer, amount in alloc.layers():
            if amount == 0:
                continue
            tranche = str(chain_id) if layer == "isolated" else _TRANCHE_OF_LAYER.get(layer, "iou")
            ledger.append(
                {
                    "epoch": epoch,
                    "deficit_id": alloc.key,
                    "layer": layer,
                    "tranche": tranche,
                    "amount": amount,
                }
            )
            if layer in (*PAYING_LAYERS, "residual"):
                owed[str(row.protocol)] = owed.get(str(row.protocol), 0) + amount
            if layer in PAYING_LAYERS:
                needs_approval = threshold is not None and amount > threshold
                payouts.append(
                    {
                        "claim_id": claim_id(alloc.key, layer),
                        "deficit_id": alloc.key,
                        "epoch": epoch,
                        "chain_id": chain_id,
                        "fund": info.fund.address,
                        "recipient": str(row.protocol),
                        "amount": amount,
                        "tranche": layer,
                        "state": "approval_required" if needs_approval else "planned",
                    }
                )
        conn.execute(
            update(DEFICITS)
            .where(DEFICITS.c.deficit_id == alloc.key)
            .values(status="allocated" if alloc.paid else "settled", epoch=epoch)
        )
    if ledger:
        conn.execute(insert(LEDGER), ledger)
    if payouts:
        conn.execute(insert(PAYOUTS), payouts)
    tree = _liability_tree(owed)
    conn.execute(
        insert(ATTESTATIONS),
        [
            {
                "epoch": epoch,
                "root": "0x" + tree.root.hex(),
                "total": tree.total,
                "assets": sum(balances.values()),
                "leaf_count": len(tree.leaves),
                "watermark": json.dumps({str(k): v for k, v in sorted((watermark or {}).items())}),
            }
        ],
    )
    log.info(
        "epoch %d: %d deficit(s), %d payout(s) planned, %d paid by the fund, %d residual (IOU)",
        epoch,
        len(ready),
        len(payouts),
        result.paid,
        result.residual,
    )
    return EpochPlan(
        epoch,
        result,
        tuple(str(p["claim_id"]) for p in payouts),
        pending,
        capital,
        "0x" + tree.root.hex(),
        tree.total,
        tuple(unreachable),
    )


def _liability_tree(owed: Mapping[str, int]) -> MerkleSumTree:
    return build_tree([Leaf(address, amount) for address, amount in sorted(owed.items())])


def epoch_tree(conn: Connection, epoch: int) -> MerkleSumTree:
    """Rebuild the Merkle-sum tree of ``epoch`` from the ledger (for inclusion proofs)."""
    rows = conn.execute(
        select(DEFICITS.c.protocol, LEDGER.c.amount)
        .join(DEFICITS, DEFICITS.c.deficit_id == LEDGER.c.deficit_id)
        .where(LEDGER.c.epoch == epoch, LEDGER.c.layer.in_((*PAYING_LAYERS, "residual")))
    )
    owed: dict[str, int] = {}
    for protocol, amount in rows:
        owed[str(protocol)] = owed.get(str(protocol), 0) + int(amount)
    return _liability_tree(owed)
