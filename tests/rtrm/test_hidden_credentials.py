"""No RTRM output or log line quotes an RPC URL's credentials.

Each endpoint here carries a password, an API key as a path segment and one as a query
value, as providers hand them out; one is dead, one answers (through a fault proxy, which
serves any path as providers do) for another chain than it is configured for. ``rtrm
status`` (table and ``--json``) and ``rtrm index --once`` (its log, ``-v``) must name them
with the credentials hidden, while still connecting to them as configured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from chains.anvil import AnvilNode, free_port
from chains.faultproxy import FaultProxy
from chains.registry import write_registry
from chains.spec import ChainSpec, Registry
from chains.types import ChainId
from indexer.store import open_store
from rtrm.cli import main

pytestmark = pytest.mark.chain

CHAIN = 913381
KEY = "AbCdEf0123456789xyzKEY"
SECRETS = ("hunter2", KEY, "sEcReT")


def _with_credentials(port: int) -> str:
    return f"http://me:hunter2@127.0.0.1:{port}/v2/{KEY}?apikey=sEcReT"


def _shown(port: int) -> str:
    return f"http://me:***@127.0.0.1:{port}/v2/***?apikey=***"


@pytest.fixture
def wrong_chain_port(anvil_factory: Callable[..., AnvilNode]) -> Iterator[int]:
    """The port of a proxy in front of a node of chain ``CHAIN + 1``."""
    with FaultProxy.start(anvil_factory(CHAIN + 1).url) as proxy:
        yield int(proxy.url.rpartition(":")[2])


def _write(tmp_path: Path, urls: tuple[str, ...]) -> tuple[Path, str]:
    database_url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    path = tmp_path / "rtrm.toml"
    chain = ChainSpec(ChainId(CHAIN), "audit", urls, 0, 1.0)
    write_registry(Registry(chains=(chain,), database_url=database_url), path)
    return path, database_url


def _assert_hidden(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output


def test_rtrm_status(
    wrong_chain_port: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = free_port()
    urls = (_with_credentials(dead), _with_credentials(wrong_chain_port))
    config, database_url = _write(tmp_path, urls)
    store = open_store(database_url)
    try:  # a pause whose reason quotes an endpoint (as the indexer's genesis check writes)
        with store.transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO chain (chain_id, name, genesis_hash, finality_depth, "
                    "paused_reason, events, reorgs, head_block, finalized_block, updated_at) "
                    "VALUES (:c, 'audit', :g, 0, :p, 0, 0, 5, 0, :t)"
                ),
                {
                    "c": CHAIN,
                    "g": "0x" + "ab" * 32,
                    "p": f"no RPC endpoint serves the configured genesis_hash ({urls[1]} serves "
                    "0x12)",
                    "t": time.time(),
                },
            )
    finally:
        store.dispose()

    assert main(["--config", str(config), "status", "--json"]) == 1
    captured = capsys.readouterr()
    _assert_hidden(captured.out + captured.err)
    (row,) = json.loads(captured.out)
    assert row["paused_reason"].startswith(
        f"no RPC endpoint serves the configured genesis_hash ({_shown(wrong_chain_port)} serves"
    )
    detail = row["detail"]
    assert f"rpc_urls[0] did not answer: cannot connect to {_shown(dead)} " in detail
    assert f"rpc_urls[1] ({_shown(wrong_chain_port)}) answers eth_chainId {CHAIN + 1}" in detail

    monkeypatch.setenv("COLUMNS", "1000")
    assert main(["--config", str(config), "status"]) == 1
    captured = capsys.readouterr()
    _assert_hidden(captured.out + captured.err)
    assert _shown(dead) in captured.out


def test_rtrm_index_log(
    wrong_chain_port: int,
    anvil_factory: Callable[..., AnvilNode],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = free_port()
    good = anvil_factory(CHAIN).url
    urls = (_with_credentials(wrong_chain_port), _with_credentials(dead), good)
    config, _ = _write(tmp_path, urls)
    argv = ["-v", "--config", str(config), "index", "--once", "--no-progress", "--json"]
    assert main(argv) == 0  # the good node serves the chain
    captured = capsys.readouterr()
    _assert_hidden(captured.out + captured.err)
    log = captured.err
    assert f"RPC endpoint {_shown(wrong_chain_port)} benched" in log
    assert f"answers eth_chainId {CHAIN + 1}, but it is configured for chain {CHAIN}" in log
    assert f"failed on {_shown(dead)} (connection); retrying" in log
