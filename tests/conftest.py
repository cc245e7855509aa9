"""Fixtures for every test.

- nothing from the developer's shell leaks into a test (``RTRM_*`` variables unset);
- ``anvil_factory(chain_id=31337, **config)`` starts a real anvil node per call (any
  :class:`~chains.anvil.AnvilConfig` field as a keyword, plus ``die_with_parent`` and
  ``startup_timeout_s``), logs to the test's tmp dir, and stops every node it started
  when the test ends, pass or fail;
- ``anvil`` is one default node (chain id 31337, automine); ``anvil_rpc`` is an
  :class:`~chains.rpc.RpcClient` connected to it.

Tests using a chain should be marked ``@pytest.mark.chain``.

Databases: ``store_url`` is parametrised — a fresh SQLite file, and a fresh PostgreSQL
schema on ``127.0.0.1:5432`` (user ``postgres``, database ``test``; override with
``RTRM_TEST_POSTGRES_URL``) dropped afterwards; ``postgres_url`` is the PostgreSQL one
alone. Without a server the PostgreSQL variants skip, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from chains.anvil import AnvilConfig, AnvilNode
from chains.rpc import RpcClient
from rtrm.logs import PROJECT_PACKAGES


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``rtrm.cli.main()`` configures logging globally, with handlers on the stream of the
    test that ran it; put it back, so later tests (any package) log nowhere stale."""
    loggers = [logging.getLogger(), *map(logging.getLogger, PROJECT_PACKAGES)]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.fixture(autouse=True)
def _no_rtrm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset RTRM_* variables, so a developer's RTRM_CONFIG cannot change a result."""
    for name in list(os.environ):
        if name.startswith("RTRM_"):
            monkeypatch.delenv(name)


DEFAULT_CHAIN_ID = 31337

AnvilFactory = Callable[..., AnvilNode]


@pytest.fixture
def anvil_factory(tmp_path: Path) -> Iterator[AnvilFactory]:
    """Start anvil nodes on demand; all of them are stopped at teardown."""
    nodes: list[AnvilNode] = []

    def start(
        chain_id: int = DEFAULT_CHAIN_ID,
        *,
        die_with_parent: bool = True,
        startup_timeout_s: float = 15,
        **config: Any,
    ) -> AnvilNode:
        log_path = tmp_path / f"anvil-{chain_id}-{len(nodes)}.log"
        node = AnvilNode.start(
            AnvilConfig(chain_id=chain_id, **config),
            log_path=log_path,
            die_with_parent=die_with_parent,
            startup_timeout_s=startup_timeout_s,
        )
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def anvil(anvil_factory: AnvilFactory) -> AnvilNode:
    """One running node: chain id 31337, automine, auto-impersonation, zero base fee."""
    return anvil_factory()


@pytest.fixture
def anvil_rpc(anvil: AnvilNode) -> Iterator[RpcClient]:
    """A JSON-RPC client connected to ``anvil``."""
    with RpcClient(anvil.url, timeout_s=10) as client:
        yield client


# ---------------------------------------------------------------- databases

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
    """A fresh PostgreSQL schema (the other tests of a chain use SQLite)."""
    yield from _postgres_schema_url()


@pytest.fixture
def other_postgres_url() -> Iterator[str]:
    """A second fresh PostgreSQL schema in the same database (another store)."""
    yield from _postgres_schema_url()
