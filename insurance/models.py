"""The insurance backstop's tables, in the store's shared metadata (``indexer.models.metadata``).

- :class:`Deficit` — one uncovered loss found in the indexed ``bad_debt`` facts, keyed by a
  stable id (keccak of chain id, protocol, account, block and asset), so replaying blocks
  never adds a second row. ``amount`` is in the debt asset's smallest units as indexed;
  ``fund_amount`` is its value in the insurance fund's asset (smallest units) at the
  oracle prices of the deficit's block. ``status``: ``open`` → ``allocated`` →
  ``settled``, or ``orphaned`` when a reorg removed the source event after a payout went
  out (never un-paid; see :mod:`insurance.deficits`).
- :class:`LedgerEntry` — how the waterfall split a deficit: one row per non-zero layer
  (``proceeds``, ``deductible``, ``isolated``, ``shared``, ``residual``); the amounts of a
  deficit add up to its ``fund_amount`` exactly.
- :class:`Payout` — one on-chain claim per (deficit, paying layer): ``claim_id`` (bytes32,
  derived from the deficit id and the layer) is what ``InsuranceFund.payClaim`` records,
  so a claim is paid at most once whatever happens off-chain. ``state``: ``planned``,
  ``approval_required`` → ``approved``, ``sent`` (tx hash recorded before waiting),
  ``confirmed`` (block recorded), ``failed`` (retried on the next trigger), ``cancelled``.
- :class:`Attestation` — per epoch, the Merkle-sum root and total of the fund's
  liabilities, the leaf count and the fund's assets when published.
- :class:`CapitalRequirement` — every published capital requirement (smoothed) and the
  raw one it came from, so the next update can limit its step.

Invariants: money is exact (:class:`~indexer.models.Int256`); addresses are EIP-55;
hashes and claim ids are ``0x`` + 64 lowercase hex digits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

from indexer.models import Int256, metadata

__all__ = [
    "ATTESTATIONS",
    "DEFICITS",
    "DEFICIT_STATUSES",
    "LAYERS",
    "LEDGER",
    "PAYOUTS",
    "PAYOUT_STATES",
    "REQUIREMENTS",
    "Attestation",
    "CapitalRequirement",
    "Deficit",
    "LedgerEntry",
    "Payout",
]

_SERIAL = BigInteger().with_variant(Integer(), "sqlite")
_ADDRESS = 42
_HASH = 66

DEFICIT_STATUSES = ("open", "allocated", "settled", "orphaned")
PAYOUT_STATES = (
    "planned",
    "approval_required",
    "approved",
    "sent",
    "confirmed",
    "failed",
    "cancelled",
)
LAYERS = ("proceeds", "deductible", "isolated", "shared", "residual")


def _address(**kw: Any) -> Any:
    return Field(sa_type=String(_ADDRESS), **kw)


def _hash(**kw: Any) -> Any:
    return Field(sa_type=String(_HASH), **kw)


def _int256(**kw: Any) -> Any:
    return Field(sa_type=Int256, **kw)


def _big(**kw: Any) -> Any:
    return Field(sa_type=BigInteger, **kw)


class Deficit(SQLModel, table=True):
    """Debt a liquidation left uncovered, as the backstop tracks it."""

    __tablename__ = "deficit"
    __table_args__ = (
        Index("ix_deficit_chain_block", "chain_id", "block_number"),
        Index("ix_deficit_status", "status"),
    )

    deficit_id: str = Field(sa_type=String(_HASH), primary_key=True)
    chain_id: int = _big()
    block_number: int = _big()
    tx_hash: str = _hash()
    protocol: str = _address()
    protocol_kind: str = Field(sa_type=String(16))
    account: str = _address()
    asset: str = _address()
    amount: int = _int256()
    fund_amount: int = _int256()
    status: str = Field(sa_type=String(16))
    epoch: int | None = _big(default=None)


class LedgerEntry(SQLModel, table=True):
    """One layer's share of one deficit (fund-asset units)."""

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("deficit_id", "layer", name="uq_ledger_layer"),
        Index("ix_ledger_epoch", "epoch"),
    )

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    epoch: int = _big()
    deficit_id: str = _hash()
    layer: str = Field(sa_type=String(16))
    tranche: str = Field(sa_type=String(32))
    amount: int = _int256()


class Payout(SQLModel, table=True):
    """One claim paid (or to be paid) by an insurance fund contract."""

    __tablename__ = "payout"
    __table_args__ = (
        Index("ix_payout_state", "state"),
        Index("ix_payout_deficit", "deficit_id"),
    )

    claim_id: str = Field(sa_type=String(_HASH), primary_key=True)
    deficit_id: str = _hash()
    epoch: int = _big()
    chain_id: int = _big()
    fund: str = _address()
    recipient: str = _address()
    amount: int = _int256()
    tranche: str = Field(sa_type=String(32))
    state: str = Field(sa_type=String(24))
    tx_hash: str | None = _hash(default=None)
    block_number: int | None = _big(default=None)
    approved_by: str | None = Field(default=None, sa_type=String(64))
    error: str | None = Field(default=None, sa_type=String(500))


class Attestation(SQLModel, table=True):
    """The published Merkle-sum root of one epoch's liabilities."""

    __tablename__ = "attestation"

    epoch: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    root: str = _hash()
    total: int = _int256()
    assets: int = _int256()
    leaf_count: int
    watermark: str = Field(sa_type=String(1000))  # JSON {chain_id: block}


class CapitalRequirement(SQLModel, table=True):
    """One capital-requirement update (fund-asset units); the latest row is in force."""

    __tablename__ = "capital_requirement"

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    watermark: str = Field(sa_type=String(1000))  # JSON {chain_id: block}
    raw_required: int = _int256()
    required: int = _int256()
    paths: int
    seed: int = _big()


# Core tables, for the bulk statements of the insurance modules (typed, unlike __table__).
DEFICITS: Table = metadata.tables["deficit"]
LEDGER: Table = metadata.tables["ledger"]
PAYOUTS: Table = metadata.tables["payout"]
ATTESTATIONS: Table = metadata.tables["attestation"]
REQUIREMENTS: Table = metadata.tables["capital_requirement"]
