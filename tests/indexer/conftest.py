"""Fixtures for store tests: the same test runs on SQLite and on PostgreSQL.

``store_url`` is parametrised: a fresh SQLite file per test, and a fresh PostgreSQL
schema per test on the server at ``127.0.0.1:5432`` (user ``postgres``, database
``test``; override with ``RTRM_TEST_POSTGRES_URL``), dropped afterwards. When no server
answers, the PostgreSQL variants are skipped — except under ``CI=true``, where they fail.
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


# ---------------------------------------------------------------- devnets and truth


@pytest.fixture(scope="module")
def small_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One seeded chain (60 users) after an ETH crash: liquidations and bad debt included."""
    from chains.devnet import DevnetOptions, up
    from chains.keeper import ChainContracts, crash

    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=1, users=60, seed=5, block_time_s=0, state_dir=home))
    try:
        node = state.nodes[0]
        chain = ChainContracts(
            node.chain_id,
            node.rpc_url,
            state.contracts[str(node.chain_id)],
            state.tokens[str(node.chain_id)],
        )
        crash([chain], asset="ETH", move=-0.45, blocks=2)
        yield state
    finally:
        for n in nodes:
            n.stop()
