"""The unified store's schema: SQLModel tables shared by SQLite and PostgreSQL.

Three kinds of table:

- **bookkeeping** — :class:`Chain` (one row per indexed chain: genesis hash, pause
  reason, counters), :class:`Cursor` (the last fully indexed block and its hash),
  :class:`Block` (the block ledger: number, hash and, when the header was fetched,
  parent hash) and :class:`Reorg` (every rollback, with its depth);
- **facts** — :class:`RawEvent` (every log, keyed by ``(chain_id, block_number,
  log_index)`` and unique on ``(chain_id, tx_hash, log_index)``)
  and append-only tables of decoded events (:class:`OraclePrice`, :class:`VolUpdate`,
  :class:`FundingUpdate`, :class:`OptionSeries`, :class:`SeriesSettlement`,
  :class:`Liquidation`, :class:`BadDebt`, :class:`InsuranceEvent`,
  :class:`ProtocolParam`), each carrying the ``block_number`` it happened in;
- **derived state, versioned by block range** — :class:`AccountBalance` (collateral,
  debt, margin per user/protocol/asset), :class:`OptionPosition` and
  :class:`PerpPosition`. A version is valid for blocks ``valid_from <= b < valid_to``
  (``valid_to`` NULL while current), so "as of block N" is one indexed predicate.

Invariants: token amounts and WAD-scaled values are exact integers (:class:`Int256`,
NUMERIC(78, 0) on PostgreSQL, decimal text on SQLite); addresses are EIP-55 checksummed;
``row_id`` of a versioned table is allocated per chain by its single writer. Rolling a
chain back to block ``B`` is, per table, ``DELETE … WHERE block_number > B`` for facts and
``DELETE … WHERE valid_from > B`` plus ``UPDATE … SET valid_to = NULL WHERE valid_to > B``
for versioned state (see :mod:`indexer.store`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Dialect, Index, Integer, LargeBinary, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import Field, SQLModel

__all__ = [
    "APPEND_ONLY_TABLES",
    "DEFERRABLE_INDEXES",
    "VERSIONED_TABLES",
    "AccountBalance",
    "BadDebt",
    "Block",
    "Chain",
    "Cursor",
    "FundingUpdate",
    "InsuranceEvent",
    "Int256",
    "Liquidation",
    "OptionPosition",
    "OptionSeries",
    "OraclePrice",
    "PerpPosition",
    "ProtocolParam",
    "RawEvent",
    "Reorg",
    "SeriesSettlement",
    "VolUpdate",
    "metadata",
]

metadata = SQLModel.metadata

# SQLite assigns ids only to an INTEGER PRIMARY KEY (a rowid alias), never to BIGINT.
_SERIAL = BigInteger().with_variant(Integer(), "sqlite")
_ADDRESS = 42
_HASH = 66


class Int256(TypeDecorator[int]):
    """An exact signed integer of up to 78 decimal digits (any uint256 or int256).

    PostgreSQL stores it as ``NUMERIC(78, 0)``; SQLite, whose integers stop at 2**63, as
    decimal text. Either way Python sees an ``int``.
    """

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(78, 0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


def _address(**kw: Any) -> Any:
    return Field(sa_type=String(_ADDRESS), **kw)


def _hash(**kw: Any) -> Any:
    return Field(sa_type=String(_HASH), **kw)


def _int256(**kw: Any) -> Any:
    return Field(sa_type=Int256, **kw)


def _block(**kw: Any) -> Any:
    return Field(sa_type=BigInteger, **kw)


# ---------------------------------------------------------------- bookkeeping


class Chain(SQLModel, table=True):
    """One indexed chain: identity, health and lifetime counters."""

    __tablename__ = "chain"

    chain_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    name: str = Field(sa_type=String(64))
    genesis_hash: str = _hash()
    finality_depth: int
    paused_reason: str | None = Field(default=None, sa_type=String(1000))
    events: int = Field(default=0, sa_type=BigInteger)
    reorgs: int = Field(default=0)
    head_block: int = _block(default=0)
    finalized_block: int = _block(default=0)
    updated_at: float = Field(default=0.0)  # wall clock of the last write (status only)


class Cursor(SQLModel, table=True):
    """The highest block whose events are all in the store, and its hash."""

    __tablename__ = "cursor"

    chain_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    block_number: int = _block()
    block_hash: str = _hash()


class Block(SQLModel, table=True):
    """Block ledger: every block that holds an indexed log, every batch end and every
    block followed at the head. ``parent_hash`` is NULL when only a log's block hash was
    seen (backfill of a final range needs no header)."""

    __tablename__ = "block"

    chain_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    number: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    hash: str = _hash()
    parent_hash: str | None = _hash(default=None)
    timestamp: int | None = _block(default=None)


class Reorg(SQLModel, table=True):
    """One rollback: the store went back to ``ancestor`` from ``indexed`` blocks."""

    __tablename__ = "reorg"

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    chain_id: int = Field(sa_type=BigInteger, index=True)
    ancestor: int = _block()
    indexed: int = _block()
    depth: int
    old_hash: str = _hash()
    new_hash: str = _hash()
    detected_at: float


class RawEvent(SQLModel, table=True):
    """Every indexed log, exactly once, as the node sent it, compactly.

    The key is where the log stands, ``(chain_id, block_number, log_index)``: rows arrive in
    key order, so a backfill appends (no surrogate id, no second index on the block).
    Hashes, topics and data are bytes, half the size of 0x-hex text; ``topics`` is topic0..N
    concatenated, 32 bytes each. The block hash is the ledger's (:class:`Block` holds every
    block with a log); the event's name is ``chains.artifacts.event_table()[topic0]``.
    """

    __tablename__ = "raw_event"
    __table_args__ = (Index("uq_raw_event", "chain_id", "tx_hash", "log_index", unique=True),)

    chain_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    block_number: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    log_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    tx_hash: bytes = Field(sa_type=LargeBinary(32))
    tx_index: int
    address: bytes = Field(sa_type=LargeBinary(20))
    topics: bytes = Field(sa_type=LargeBinary(128))
    data: bytes = Field(sa_type=LargeBinary)


# ---------------------------------------------------------------- append-only facts


class _Fact(SQLModel):
    """Columns every decoded-event table has: where the event happened."""

    chain_id: int = Field(sa_type=BigInteger)
    block_number: int = _block()
    tx_hash: str = _hash()
    log_index: int


class OraclePrice(_Fact, table=True):
    """One Chainlink-style round: ``answer`` scaled by the feed's decimals."""

    __tablename__ = "oracle_price"
    __table_args__ = (Index("ix_oracle_price_feed", "chain_id", "feed", "block_number"),)

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    feed: str = _address()
    round_id: int = _int256()
    answer: int = _int256()
    updated_at: int = _block()


class VolUpdate(_Fact, table=True):
    """One volatility-oracle update: ATM vol and raw SVI parameters, all WAD (1e18)."""

    __tablename__ = "vol_update"
    __table_args__ = (Index("ix_vol_update_key", "chain_id", "underlying", "block_number"),)

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    oracle: str = _address()
    underlying: str = Field(sa_type=String(16))
    expiry: int = _block()
    atm_vol_wad: int = _int256()
    svi_a_wad: int = _int256()
    svi_b_wad: int = _int256()
    svi_rho_wad: int = _int256()
    svi_m_wad: int = _int256()
    svi_sigma_wad: int = _int256()
    updated_at: int = _block()


class FundingUpdate(_Fact, table=True):
    """A perps market's funding index after an update (WAD)."""

    __tablename__ = "funding_update"
    __table_args__ = (Index("ix_funding_update_key", "chain_id", "market", "block_number"),)

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    protocol: str = _address()
    market: str = Field(sa_type=String(16))
    funding_rate_wad: int = _int256()
    funding_index_wad: int = _int256()
    price_wad: int = _int256()


class OptionSeries(_Fact, table=True):
    """A listed option series (European, cash-settled)."""

    __tablename__ = "option_series"
    __table_args__ = (Index("ix_option_series_key", "chain_id", "protocol", "series_id"),)

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    protocol: str = _address()
    series_id: int = _int256()
    underlying: str = Field(sa_type=String(16))
    expiry: int = _block()
    strike_wad: int = _int256()
    is_call: bool


class SeriesSettlement(_Fact, table=True):
    """The settlement price of an expired series (WAD)."""

    __tablename__ = "series_settlement"

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    protocol: str = _address()
    series_id: int = _int256()
    settlement_price_wad: int = _int256()


class Liquidation(_Fact, table=True):
    """A liquidation on any protocol. Amounts are in the named assets' smallest units;
    for options and perps ``debt_asset`` is the quote token and ``debt_repaid`` the
    penalty/fee the liquidator earned."""

    __tablename__ = "liquidation"
    __table_args__ = (Index("ix_liquidation_account", "chain_id", "account"),)

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    protocol: str = _address()
    protocol_kind: str = Field(sa_type=String(16))
    account: str = _address()
    liquidator: str = _address()
    debt_asset: str | None = _address(default=None)
    collateral_asset: str | None = _address(default=None)
    debt_repaid: int = _int256()
    collateral_seized: int = _int256()


class BadDebt(_Fact, table=True):
    """Debt a liquidation could not cover: a deficit the insurance backstop may pay."""

    __tablename__ = "bad_debt"
    __table_args__ = (Index("ix_bad_debt_account", "chain_id", "account"),)

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    protocol: str = _address()
    protocol_kind: str = Field(sa_type=String(16))
    account: str = _address()
    asset: str = _address()
    amount: int = _int256()


class InsuranceEvent(_Fact, table=True):
    """Insurance fund activity: deposit, withdrawal request, withdrawal, claim paid."""

    __tablename__ = "insurance_event"

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    fund: str = _address()
    kind: str = Field(sa_type=String(24))
    account: str = _address()
    claim_id: str | None = _hash(default=None)
    amount: int = _int256()
    shares: int = _int256()


class ProtocolParam(_Fact, table=True):
    """A risk parameter a protocol published (LTV, liquidation threshold, haircut, …),
    in basis points unless the name says otherwise; the latest row per key wins."""

    __tablename__ = "protocol_param"
    __table_args__ = (Index("ix_protocol_param_key", "chain_id", "protocol", "subject"),)

    id: int | None = Field(default=None, sa_type=_SERIAL, primary_key=True)
    protocol: str = _address()
    subject: str = Field(sa_type=String(66))  # asset address, market or underlying id
    name: str = Field(sa_type=String(32))
    value: str = Field(sa_type=String(80))


# ---------------------------------------------------------------- versioned state


class _Versioned(SQLModel):
    """A state row valid for blocks ``valid_from <= b < valid_to`` (NULL: still current)."""

    chain_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    row_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    protocol: str = _address()
    account: str = _address()
    valid_from: int = _block()
    valid_to: int | None = _block(default=None)


class AccountBalance(_Versioned, table=True):
    """Collateral, debt or margin of ``account`` in ``asset`` at ``protocol``.

    ``kind`` is ``collateral`` (options collateral, lending supply), ``debt`` (lending
    borrow) or ``margin`` (perps margin, signed); ``amount`` in the token's smallest unit.
    """

    __tablename__ = "account_balance"
    __table_args__ = (
        Index("ix_account_balance_account", "account", "valid_to"),
        Index("ix_account_balance_chain", "chain_id", "valid_from"),
        Index("ix_account_balance_to", "chain_id", "valid_to"),
    )

    protocol_kind: str = Field(sa_type=String(16))
    kind: str = Field(sa_type=String(16))
    asset: str = _address()
    amount: int = _int256()


class OptionPosition(_Versioned, table=True):
    """Signed size (WAD, long > 0) of ``account`` in one option series."""

    __tablename__ = "option_position"
    __table_args__ = (
        Index("ix_option_position_account", "account", "valid_to"),
        Index("ix_option_position_chain", "chain_id", "valid_from"),
        Index("ix_option_position_to", "chain_id", "valid_to"),
    )

    series_id: int = _int256()
    size_wad: int = _int256()


class PerpPosition(_Versioned, table=True):
    """A perp position: signed size, open notional and entry funding index (all WAD)."""

    __tablename__ = "perp_position"
    __table_args__ = (
        Index("ix_perp_position_account", "account", "valid_to"),
        Index("ix_perp_position_chain", "chain_id", "valid_from"),
        Index("ix_perp_position_to", "chain_id", "valid_to"),
    )

    market: str = Field(sa_type=String(16))
    size_wad: int = _int256()
    open_notional_wad: int = _int256()
    entry_funding_index_wad: int = _int256()


APPEND_ONLY_TABLES: tuple[type[SQLModel], ...] = (
    OraclePrice,
    VolUpdate,
    FundingUpdate,
    OptionSeries,
    SeriesSettlement,
    Liquidation,
    BadDebt,
    InsuranceEvent,
    ProtocolParam,
)
VERSIONED_TABLES: tuple[type[SQLModel], ...] = (AccountBalance, OptionPosition, PerpPosition)

# Indexes on random keys (a transaction hash, an account): each insert lands on its own
# page, so keeping them up to date dominates a backfill's write cost. A large backfill
# drops them and builds them once at its end (``indexer.store.Store.defer_indexes``);
# exactly-once never depends on them (the cursor moves in the data's transaction), the
# unique index re-checks it when built.
DEFERRABLE_INDEXES: tuple[str, ...] = (
    "uq_raw_event",
    "ix_account_balance_account",
    "ix_option_position_account",
    "ix_perp_position_account",
)
