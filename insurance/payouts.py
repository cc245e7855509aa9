"""The payout table's state machine: reads, approvals and recorded transitions.

States of a payout (one on-chain claim)::

    planned ─────────────────────────┐
    approval_required ── approve ── approved ── send ── sent ── receipt ── confirmed
                                     ▲                    │
                    failed ◄─────────┴── revert / dropped ┘   (failed is retried)
    any unsent state ── source event reorged out after another layer was paid ── cancelled

Every transition is one short write transaction, so the state in the store is never
ahead of the chain: ``sent`` is committed with the transaction hash right after the
transaction is handed to the node and before waiting for it; ``confirmed`` carries the
block of the ``ClaimPaid`` event. A deficit is ``settled`` once all of its payouts are
confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, exists, select, update
from sqlalchemy.sql import and_

from insurance.exceptions import PayoutError, UnknownClaimError
from insurance.models import DEFICITS, PAYOUTS

__all__ = [
    "SENDABLE_STATES",
    "PayoutView",
    "approve",
    "load_payout",
    "load_payouts",
    "mark_confirmed",
    "mark_failed",
    "mark_sent",
]

SENDABLE_STATES = ("planned", "approved", "failed")
_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class PayoutView:
    """One payout as stored (amount in the fund asset's smallest unit)."""

    claim_id: str
    deficit_id: str
    epoch: int
    chain_id: int
    fund: str
    recipient: str
    amount: int
    tranche: str
    state: str
    tx_hash: str | None
    block_number: int | None
    approved_by: str | None
    error: str | None


def _view(row: Row[Any]) -> PayoutView:
    return PayoutView(
        claim_id=str(row.claim_id),
        deficit_id=str(row.deficit_id),
        epoch=int(row.epoch),
        chain_id=int(row.chain_id),
        fund=str(row.fund),
        recipient=str(row.recipient),
        amount=int(row.amount),
        tranche=str(row.tranche),
        state=str(row.state),
        tx_hash=row.tx_hash,
        block_number=None if row.block_number is None else int(row.block_number),
        approved_by=row.approved_by,
        error=row.error,
    )


def load_payouts(
    conn: Connection, states: Sequence[str] | None = None, *, epoch: int | None = None
) -> list[PayoutView]:
    """Payouts (in ``states`` / of ``epoch``, if given) by epoch, chain and claim id."""
    query = select(PAYOUTS)
    if states is not None:
        query = query.where(PAYOUTS.c.state.in_(states))
    if epoch is not None:
        query = query.where(PAYOUTS.c.epoch == epoch)
    query = query.order_by(PAYOUTS.c.epoch, PAYOUTS.c.chain_id, PAYOUTS.c.claim_id)
    return [_view(row) for row in conn.execute(query)]


def load_payout(conn: Connection, claim: str) -> PayoutView:
    """The payout of ``claim`` (0x hex, any case)."""
    row = conn.execute(select(PAYOUTS).where(PAYOUTS.c.claim_id == claim.lower())).first()
    if row is None:
        raise UnknownClaimError(
            f"no payout with claim id {claim}; list them with `rtrm insurance status --json`"
        )
    return _view(row)


def approve(conn: Connection, claim: str, *, by: str) -> PayoutView:
    """Approve a payout waiting for approval; the next trigger sends it."""
    payout = load_payout(conn, claim)
    if payout.state == "approved":
        return payout
    if payout.state != "approval_required":
        raise PayoutError(
            f"claim {payout.claim_id} is {payout.state}; only payouts in approval_required "
            "can be approved"
        )
    conn.execute(
        update(PAYOUTS)
        .where(PAYOUTS.c.claim_id == payout.claim_id)
        .values(state="approved", approved_by=by[:64])
    )
    return load_payout(conn, payout.claim_id)


def mark_sent(conn: Connection, claim: str, tx_hash: str) -> None:
    conn.execute(
        update(PAYOUTS)
        .where(PAYOUTS.c.claim_id == claim)
        .values(state="sent", tx_hash=tx_hash, error=None)
    )


def mark_failed(conn: Connection, claim: str, error: str) -> None:
    conn.execute(
        update(PAYOUTS)
        .where(PAYOUTS.c.claim_id == claim)
        .values(state="failed", error=error[:_ERROR_CHARS])
    )


def mark_confirmed(
    conn: Connection, claim: str, tx_hash: str | None, block_number: int | None
) -> None:
    """Record the claim as paid on chain, and settle its deficit if nothing else is owed."""
    conn.execute(
        update(PAYOUTS)
        .where(PAYOUTS.c.claim_id == claim)
        .values(state="confirmed", tx_hash=tx_hash, block_number=block_number, error=None)
    )
    deficit = conn.execute(
        select(PAYOUTS.c.deficit_id).where(PAYOUTS.c.claim_id == claim)
    ).scalar_one()
    unpaid = exists().where(and_(PAYOUTS.c.deficit_id == deficit, PAYOUTS.c.state != "confirmed"))
    conn.execute(
        update(DEFICITS)
        .where(DEFICITS.c.deficit_id == deficit, DEFICITS.c.status == "allocated", ~unpaid)
        .values(status="settled")
    )
