"""Fixtures for the loader tests: a small seeded devnet and stores of both kinds.

- ``store_url`` is parametrised like the indexer's: a fresh SQLite file, and a fresh
  PostgreSQL schema on ``RTRM_TEST_POSTGRES_URL`` (default ``postgres@127.0.0.1:5432/test``),
  skipped when no server answers (failed under ``CI=true``);
- ``postgres_url`` is one such schema, for tests that compare the two databases;
- ``loader_devnet`` is two seeded chains (40 users) shared by a test module; tests that
  move it (oracle rounds, trades) must not rely on its state beyond their own reads.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

POSTGRES_URL = os.environ.get(
    "RTRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_schema_url() -> Iterator[str]:
    schema = f"rtrm_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as exc:
        engine.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {exc.orig}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rtrm.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty PostgreSQL schema."""
    yield from _postgres_schema_url()


@pytest.fixture(scope="module")
def loader_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two seeded chains, 40 users, a block per transaction; stopped after the module."""
    from chains.devnet import DevnetOptions, up

    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=2, users=40, seed=11, block_time_s=0, state_dir=home))
    try:
        yield state
    finally:
        for node in nodes:
            node.stop()
