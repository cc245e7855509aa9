"""Alembic environment for RTRM's store (SQLite or PostgreSQL).

The URL comes from, in order: a connection handed over by :func:`indexer.store.upgrade`
(``config.attributes["connection"]``, what ``rtrm index`` uses, with the URL from
``rtrm.toml``), ``alembic -x url=…``, ``RTRM_DATABASE_URL``, and finally the default
``sqlite:///.rtrm/rtrm.db``.
Only the models and the store's engine set-up are imported here, so the migrations never
depend on the pipeline.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

import insurance.models  # noqa: F401 - registers the insurance tables in the shared metadata
from indexer import models
from indexer.store import open_store

target_metadata = models.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or os.environ.get("RTRM_DATABASE_URL") or "sqlite:///.rtrm/rtrm.db"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER on SQLite
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # The store's own engine: one transaction for the whole upgrade, on SQLite too (whose
    # Python driver would commit each CREATE on its own).
    store = open_store(_url(), migrate=False)
    try:
        with store.transaction() as conn:
            _run(conn)
    finally:
        store.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
