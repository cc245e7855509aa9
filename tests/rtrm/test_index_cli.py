"""Bad input to ``rtrm index`` / ``rtrm status`` is a clear error and exit 2, before any
data is touched: database URLs RTRM cannot use, a metrics port already taken."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from rtrm_testing import seed_chain_row
from sqlalchemy import text

from chains.registry import write_registry
from chains.spec import ChainSpec, Registry
from chains.types import ChainId
from indexer.exceptions import StoreError
from indexer.store import open_store
from rtrm.cli import main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    registry = Registry(
        chains=(ChainSpec(ChainId(1), "ethereum", ("http://127.0.0.1:9",), 0, 1.0),),
        database_url=f"sqlite:///{tmp_path / 'rtrm.db'}",
    )
    path = tmp_path / "rtrm.toml"
    write_registry(registry, path)
    return path


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg2://u@127.0.0.1:5432/db", "through the psycopg driver, not psycopg2"),
        ("postgresql+asyncpg://u@127.0.0.1:5432/db", "write the URL as postgresql+psycopg://"),
        ("postgresql+psycopg://u@127.0.0.1:notaport/db", "the port is a number"),
        ("mysql://u@127.0.0.1/db", "unsupported database 'mysql'"),
        ("sqlite+pysqlcipher:///x.db", "through the pysqlite driver"),
    ],
)
@pytest.mark.parametrize("command", ["index", "status"])
def test_unusable_database_urls_exit_2(  # noqa: PLR0917 - parameters and fixtures
    command: str,
    url: str,
    expected: str,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RTRM_DATABASE_URL", url)
    once = ["--once"] if command == "index" else []
    assert main(["--config", str(config), command, *once]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: database_url"), err
    assert expected in err
    assert "a bug in rtrm" not in err


def test_a_postgresql_url_without_a_driver_means_psycopg() -> None:
    store = open_store("postgresql://u@127.0.0.1:1/db", migrate=False)  # connects lazily
    assert store.engine.dialect.driver == "psycopg"
    store.dispose()
    with pytest.raises(StoreError, match="not a SQLAlchemy URL"):
        open_store("not a url", migrate=False)


def _chain_rows(url: str) -> int:
    store = open_store(url)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM chain")).scalar_one())
    finally:
        store.dispose()


def test_a_metrics_port_in_use_fails_before_reset_chain_deletes_anything(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    seed_chain_row(url, 1, "0x" + "ab" * 32)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--config", str(config), "index", "--once", "--reset-chain", "1"]
        assert main([*argv, "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} is in use; pick another with --metrics-port" in err
    assert _chain_rows(url) == 1
