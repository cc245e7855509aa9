"""``rtrm status``: every configured chain is listed, the store is only ever read, and the
exit code is a health check (0 healthy, 1 a chain paused or no node serving it, 2 bad input).

The chains' nodes are dead URLs here (nothing listens on port 9), so the heads are the
stored ones and each row says why, except in the health tests, which start anvil nodes
(some of another chain id than the one they are configured for); the store is a migrated
one with rows written by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from rtrm_testing import seed_chain_row
from sqlalchemy import create_engine, inspect, text

from chains.anvil import AnvilNode
from chains.registry import write_registry
from chains.spec import ChainSpec, Registry
from chains.types import ChainId
from indexer.store import HEAD_REVISION, open_store
from rtrm.cli import main

DEAD = ("http://127.0.0.1:9",)
GENESIS = "0x" + "ab" * 32
TIP = "0x" + "cd" * 32


def _config(
    tmp_path: Path, database_url: str, urls: Mapping[int, tuple[str, ...]] | None = None
) -> Path:
    """Chains 1 and 10, whose nodes are dead unless ``urls`` names live ones."""
    urls = urls or {}
    registry = Registry(
        chains=(
            ChainSpec(ChainId(1), "ethereum", urls.get(1, DEAD), 32, 12.0),
            ChainSpec(ChainId(10), "optimism", urls.get(10, DEAD), 0, 2.0),
        ),
        database_url=database_url,
    )
    path = tmp_path / "rtrm.toml"
    write_registry(registry, path)
    return path


def _index_chain_1(url: str, *, paused: str | None = None) -> None:
    """What `rtrm index` leaves for chain 1 after indexing blocks up to 120 of 130."""
    store = open_store(url)
    try:
        with store.transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO chain (chain_id, name, genesis_hash, finality_depth, "
                    "paused_reason, events, reorgs, head_block, finalized_block, updated_at) "
                    "VALUES (1, 'ethereum', :g, 32, :p, 7, 1, 130, 98, :t)"
                ),
                {"g": GENESIS, "p": paused, "t": time.time()},
            )
            conn.execute(
                text("INSERT INTO cursor (chain_id, block_number, block_hash) VALUES (1, 120, :h)"),
                {"h": TIP},
            )
    finally:
        store.dispose()


def _status_json(
    config: Path, capsys: pytest.CaptureFixture[str], *, code: int
) -> dict[int, dict[str, object]]:
    """``rtrm status --json`` by chain id, once its exit code was checked to be ``code``."""
    assert main(["--config", str(config), "status", "--json"]) == code
    return {row["chain_id"]: row for row in json.loads(capsys.readouterr().out)}


def _pause(url: str, chain_id: int, reason: str | None) -> None:
    store = open_store(url, migrate=False)
    try:
        with store.transaction() as conn:
            conn.execute(
                text("UPDATE chain SET paused_reason = :r WHERE chain_id = :c"),
                {"c": chain_id, "r": reason},
            )
    finally:
        store.dispose()


def test_every_configured_chain_is_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    _index_chain_1(url)
    rows = _status_json(_config(tmp_path, url), capsys, code=1)  # no node answered
    assert sorted(rows) == [1, 10]
    indexed = rows[1]
    assert indexed["state"] == "ok"
    assert (indexed["head"], indexed["head_live"], indexed["indexed_block"]) == (130, False, 120)
    assert (indexed["indexed_block_hash"], indexed["genesis_hash"]) == (TIP, GENESIS)
    assert (indexed["finalized_block"], indexed["events"], indexed["reorgs"]) == (98, 7, 1)
    assert indexed["lag_blocks"] == 10
    assert str(indexed["detail"]).startswith(
        "head as stored at the last write; no live head: rpc_urls[0] did not answer: "
        "cannot connect to http://127.0.0.1:9 "
    )
    never = rows[10]
    assert never["state"] == "not indexed yet"
    assert never["name"] == "optimism"
    for key in ("head", "indexed_block", "indexed_block_hash", "finalized_block", "lag_blocks"):
        assert never[key] is None, key
    assert (never["events"], never["reorgs"], never["head_live"]) == (0, 0, False)
    detail = str(never["detail"])
    assert detail.startswith("run `rtrm index`; no live head: rpc_urls[0] did not answer: ")
    assert "127.0.0.1:9" in detail


def test_paused_and_unconfigured_chains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # the table on one line per chain
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    _index_chain_1(url, paused="the node is syncing")
    registry = Registry(
        chains=(ChainSpec(ChainId(10), "optimism", DEAD, 0, 2.0),), database_url=url
    )
    config = tmp_path / "only10.toml"
    write_registry(registry, config)
    rows = _status_json(config, capsys, code=1)  # chain 10's nodes do not answer
    assert rows[1]["state"] == "not configured"
    assert rows[1]["paused_reason"] == "the node is syncing"
    assert rows[10]["state"] == "not indexed yet"

    _config(tmp_path, url)
    assert main(["--config", str(tmp_path / "rtrm.toml"), "status"]) == 1
    table = capsys.readouterr().out
    assert "paused: the node is syncing" in table
    assert "not indexed yet" in table


@pytest.mark.chain
def test_the_exit_code_is_a_health_check(
    anvil_factory: Callable[..., AnvilNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    _index_chain_1(url)
    live = {1: (anvil_factory(1).url,), 10: (anvil_factory(10).url,)}
    config = _config(tmp_path, url, live)
    rows = _status_json(config, capsys, code=0)  # chain 10 not indexed yet: healthy
    assert (rows[1]["state"], rows[1]["head_live"], rows[1]["detail"]) == ("ok", True, None)
    assert (rows[10]["state"], rows[10]["head_live"]) == ("not indexed yet", True)

    _pause(url, 1, "the node is syncing")
    assert _status_json(config, capsys, code=1)[1]["state"] == "paused"
    _pause(url, 1, None)
    assert _status_json(config, capsys, code=0)[1]["state"] == "ok"

    silent = _config(tmp_path, url, {1: live[1]})  # chain 10's node is dead
    rows = _status_json(silent, capsys, code=1)
    assert (rows[1]["head_live"], rows[10]["head_live"]) == (True, False)
    assert "no live head: rpc_urls[0] did not answer" in str(rows[10]["detail"])
    failover = _config(tmp_path, url, {1: (*DEAD, *live[1]), 10: live[10]})
    row = _status_json(failover, capsys, code=0)[1]  # one node answers
    assert row["head_live"] is True
    assert str(row["detail"]).startswith(
        "live head from a later endpoint; rpc_urls[0] did not answer: cannot connect to "
    )

    # A paused chain the configuration no longer lists is not judged.
    only_10 = tmp_path / "only10.toml"
    write_registry(
        Registry(chains=(ChainSpec(ChainId(10), "optimism", live[10], 0, 2.0),), database_url=url),
        only_10,
    )
    _pause(url, 1, "the node is syncing")
    assert _status_json(only_10, capsys, code=0)[1]["state"] == "not configured"


@pytest.mark.chain
def test_a_node_of_another_chain_gives_no_live_head(
    anvil_factory: Callable[..., AnvilNode],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The head comes with the node's ``eth_chainId`` (one batch): a node serving another
    chain is no node of this one, however well it answers."""
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    _index_chain_1(url)
    right, wrong = anvil_factory(1), anvil_factory(5)  # chain 5 is not chain 1
    config = _config(tmp_path, url, {1: (wrong.url,), 10: (anvil_factory(10).url,)})
    rows = _status_json(config, capsys, code=1)
    row = rows[1]
    assert (row["state"], row["head"], row["head_live"]) == ("ok", 130, False)  # stored head
    assert row["detail"] == (
        "head as stored at the last write; no live head: rpc_urls[0] "
        f"({wrong.url}) answers eth_chainId 5, but it is configured for chain 1: it serves "
        "another network; fix rpc_urls[0] in [chains.1] of rtrm.toml (or move it to "
        "[chains.5]); `rtrm config check --online` checks every endpoint"
    )
    assert rows[10]["head_live"] is True

    monkeypatch.setenv("COLUMNS", "1000")  # the table on one line per chain
    assert main(["--config", str(config), "status"]) == 1  # the table says it too
    assert "answers eth_chainId 5, but it is configured for chain 1" in capsys.readouterr().out

    either = _config(tmp_path, url, {1: (wrong.url, right.url), 10: (anvil_factory(10).url,)})
    row = _status_json(either, capsys, code=0)[1]  # the right node serves it: healthy
    assert (row["head"], row["head_live"]) == (0, True)  # the right node's head, not 130
    assert str(row["detail"]).startswith(
        f"live head from a later endpoint; rpc_urls[0] ({wrong.url}) answers eth_chainId 5"
    )


def test_a_chain_paused_before_its_first_range_shows_paused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    seed_chain_row(url, 10, GENESIS)  # the first start wrote its row, then paused
    reason = "the node is syncing (eth_syncing); waiting for it"
    _pause(url, 10, reason)
    row = _status_json(_config(tmp_path, url), capsys, code=1)[10]
    assert (row["state"], row["paused_reason"], row["indexed_block"]) == ("paused", reason, None)
    assert str(row["detail"]).startswith(reason)


def test_a_missing_sqlite_store_is_an_error_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo" / "deeper" / "rtrm.db"
    config = _config(tmp_path, f"sqlite:///{missing}")
    assert main(["--config", str(config), "status"]) == 2
    err = capsys.readouterr().err
    assert "no store at" in err
    assert "run `rtrm index` first" in err
    assert not (tmp_path / "typo").exists()


def test_a_store_behind_the_schema_head_is_not_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'rtrm.db'}"
    _index_chain_1(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    assert main(["--config", str(_config(tmp_path, url)), "status"]) == 2
    err = capsys.readouterr().err
    assert "revision 0003" in err
    assert HEAD_REVISION in err
    assert "alembic upgrade head" in err
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    engine.dispose()


def test_an_empty_postgresql_schema_is_left_empty(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(_config(tmp_path, postgres_url)), "status"]) == 2
    assert "no store at" in capsys.readouterr().err
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []
    finally:
        engine.dispose()
