"""The store's schema through Alembic: migrate to head, compare with the models.

Loaded only when there is work for Alembic (:func:`indexer.store.upgrade` recognises a
store at head by its ``alembic_version`` alone) and by the tests that compare models and
migrations.
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from indexer.models import metadata
from indexer.store import ROOT, Store

__all__ = ["alembic_config", "head_revision", "schema_differences", "upgrade"]


def alembic_config() -> Config:
    """The project's Alembic configuration (``alembic.ini``, ``migrations/``)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return config


def head_revision(config: Config | None = None) -> str | None:
    """The newest migration's revision, as Alembic reads ``migrations/``."""
    return ScriptDirectory.from_config(config or alembic_config()).get_current_head()


def upgrade(store: Store) -> None:
    """Run the pending migrations on ``store`` in one transaction (on SQLite too)."""
    config = alembic_config()
    with store.transaction() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head_revision(config):
            return  # another process migrated meanwhile
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def schema_differences(store: Store) -> list[Any]:
    """What differs between the models and the migrated database (empty when they agree)."""
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))
