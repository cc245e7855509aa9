"""raw_event: keyed by (chain_id, block_number, log_index), hashes and data as bytes

A backfill appends every log to ``raw_event``; its row was ~700 bytes of 0x-hex text with a
surrogate id and a second index on the block, and writing it was most of a PostgreSQL
backfill's server time. The row becomes the log itself in bytes (``tx_hash``, ``address``,
``topics`` concatenated, ``data``), keyed by where it stands in the chain, so rows append
to the table's own B-tree: no id, no ``ix_raw_event_block``. ``block_hash`` is the ledger's
(``block`` holds every block with a log), and ``contract``/``event`` follow from topic0.
Existing rows are converted in place, in SQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNIQUE = ["chain_id", "tx_hash", "log_index"]


def _unhex_sql() -> str:
    """The SQL function that turns 0x-less hex text into bytes on this connection."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        return "decode({}, 'hex')"
    # SQLite gained unhex() only in 3.41: register one on this connection.
    bind.connection.dbapi_connection.create_function(  # type: ignore[union-attr]
        "rtrm_unhex", 1, lambda text: None if text is None else bytes.fromhex(text)
    )
    return "rtrm_unhex({})"


def upgrade() -> None:
    unhex = _unhex_sql()
    op.create_table(
        "raw_event_new",
        sa.Column("chain_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("block_number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("log_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("address", sa.LargeBinary(length=20), nullable=False),
        sa.Column("topics", sa.LargeBinary(length=128), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "block_number", "log_index"),
    )
    columns = "chain_id, block_number, log_index, tx_hash, tx_index, address, topics, data"
    tx_hash, address, data = (
        unhex.format(f"substr({c}, 3)") for c in ("tx_hash", "address", "data")
    )
    topics = unhex.format("replace(replace(topics, '0x', ''), ',', '')")
    op.execute(
        f"INSERT INTO raw_event_new ({columns}) SELECT chain_id, block_number, log_index, "
        f"{tx_hash}, tx_index, {address}, {topics}, {data} FROM raw_event"
    )
    op.drop_table("raw_event")
    op.rename_table("raw_event_new", "raw_event")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE raw_event RENAME CONSTRAINT raw_event_new_pkey TO raw_event_pkey")
    op.create_index("uq_raw_event", "raw_event", _UNIQUE, unique=True)


def downgrade() -> None:
    bind = op.get_bind()
    hexed = "encode({}, 'hex')" if bind.dialect.name == "postgresql" else "lower(hex({}))"
    op.create_table(
        "raw_event_old",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("tx_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("contract", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=48), nullable=False),
        sa.Column("topics", sa.String(length=280), nullable=False),
        sa.Column("data", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Topics go back one by one (up to four 32-byte words, comma-separated); the block
    # hash comes from the ledger; contract and event names are not known here.
    topic = "'0x' || " + hexed.format("substr(r.topics, {}, 32)")
    topics = " || ".join(
        f"CASE WHEN length(r.topics) >= {32 * i + 32} THEN "
        + ("" if i == 0 else "',' || ")
        + f"{topic.format(32 * i + 1)} ELSE '' END"
        for i in range(4)
    )
    op.execute(
        "INSERT INTO raw_event_old (chain_id, block_number, block_hash, tx_hash, tx_index, "
        "log_index, address, contract, event, topics, data) SELECT r.chain_id, "
        "r.block_number, COALESCE(b.hash, ''), '0x' || "
        f"{hexed.format('r.tx_hash')}, r.tx_index, r.log_index, "
        f"'0x' || {hexed.format('r.address')}, '', '', {topics}, "
        f"'0x' || {hexed.format('r.data')} FROM raw_event r LEFT JOIN block b "
        "ON b.chain_id = r.chain_id AND b.number = r.block_number "
        "ORDER BY r.chain_id, r.block_number, r.log_index"
    )
    op.drop_table("raw_event")
    op.rename_table("raw_event_old", "raw_event")
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE raw_event RENAME CONSTRAINT raw_event_old_pkey TO raw_event_pkey")
        op.execute("ALTER SEQUENCE raw_event_old_id_seq RENAME TO raw_event_id_seq")
    op.create_index("ix_raw_event_block", "raw_event", ["chain_id", "block_number"])
    op.create_index("uq_raw_event", "raw_event", _UNIQUE, unique=True)
