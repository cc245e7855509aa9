"""raw_event: uniqueness as a unique index (droppable during a backfill)

``uq_raw_event`` (chain_id, tx_hash, log_index) was a table constraint; SQLite cannot drop
one without rebuilding the table, so it becomes a unique index of the same name and
columns. A large backfill drops it and builds it again at its end
(``indexer.models.DEFERRABLE_INDEXES``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 17:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ["chain_id", "tx_hash", "log_index"]


def upgrade() -> None:
    with op.batch_alter_table("raw_event", recreate="auto") as batch_op:
        batch_op.drop_constraint("uq_raw_event", type_="unique")
    op.create_index("uq_raw_event", "raw_event", _COLUMNS, unique=True)


def downgrade() -> None:
    op.drop_index("uq_raw_event", table_name="raw_event")
    with op.batch_alter_table("raw_event", recreate="auto") as batch_op:
        batch_op.create_unique_constraint("uq_raw_event", _COLUMNS)
