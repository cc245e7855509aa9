"""``rtrm config check --online``: every RPC endpoint is asked for its chain id and block 0,
on real anvil nodes; exit 0 when all serve their chain, 1 when one does not, 2 for a bad
``rtrm.toml``. Two nodes started with the same genesis timestamp serve the same genesis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chains.anvil import AnvilNode, free_port
from chains.registry import write_registry
from chains.rpc import RpcClient
from chains.spec import ChainSpec, Registry
from chains.types import ChainId
from rtrm.cli import main

CHAIN = 913379
OTHER_CHAIN = 913380
GENESIS_TIME = 1_700_000_000


def _node(anvil_factory: Callable[..., AnvilNode], chain_id: int, timestamp: int) -> str:
    return anvil_factory(chain_id=chain_id, genesis_timestamp=timestamp).url


def _genesis(url: str) -> str:
    with RpcClient(url) as client:
        return str(client.call("eth_getBlockByNumber", ["0x0", False])["hash"])


def _check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *chains: ChainSpec
) -> tuple[int, list[str]]:
    """Exit code and stdout lines of ``rtrm config check --online`` for ``chains``."""
    path = tmp_path / "rtrm.toml"
    write_registry(Registry(chains=chains, database_url="sqlite:///unused.db"), path)
    code = main(["--config", str(path), "config", "check", "--online"])
    captured = capsys.readouterr()
    assert captured.err == ""
    return code, captured.out.splitlines()


def _chain(urls: tuple[str, ...], genesis_hash: str | None = None) -> ChainSpec:
    return ChainSpec(ChainId(CHAIN), "audit", urls, 0, 1.0, genesis_hash=genesis_hash)


@pytest.mark.chain
def test_every_endpoint_serving_its_chain_exits_0(
    anvil_factory: Callable[..., AnvilNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (_node(anvil_factory, CHAIN, GENESIS_TIME) for _ in range(2))
    other = _node(anvil_factory, OTHER_CHAIN, GENESIS_TIME)
    genesis = _genesis(first)
    code, lines = _check(
        tmp_path,
        capsys,
        _chain((first, second), genesis),
        ChainSpec(ChainId(OTHER_CHAIN), "other", (other,), 0, 1.0),  # no genesis_hash
    )
    assert code == 0, lines
    assert lines[0].startswith("ok: ")
    found = f"chain id {CHAIN}, genesis {genesis}"
    assert lines[1] == f"ok      chain {CHAIN} (audit) rpc_urls[0] {first}: {found}"
    assert lines[2].startswith(f"ok      chain {CHAIN} (audit) rpc_urls[1] {second}: ")
    assert lines[3].startswith(f"ok      chain {OTHER_CHAIN} (other) rpc_urls[0] {other}: ")
    assert lines[4] == "online: all 3 endpoints serve their chain"


@pytest.mark.chain
def test_a_configured_genesis_hash_no_endpoint_serves(
    anvil_factory: Callable[..., AnvilNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _node(anvil_factory, CHAIN, GENESIS_TIME)
    typo = "0x" + "11" * 32
    code, lines = _check(tmp_path, capsys, _chain((url,), typo))
    assert code == 1
    failed = lines[1]
    assert failed.startswith(f"FAILED  chain {CHAIN} (audit) rpc_urls[0] {url}: ")
    assert f"serves genesis {_genesis(url)}" in failed
    assert f"genesis_hash of [chains.{CHAIN}] is {typo}" in failed
    assert f"fix rpc_urls[0] in [chains.{CHAIN}] of rtrm.toml, or genesis_hash" in failed
    assert lines[2] == "online: 1 of 1 endpoints failed the check (above)"


@pytest.mark.chain
def test_an_endpoint_of_another_chain_id(
    anvil_factory: Callable[..., AnvilNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _node(anvil_factory, CHAIN, GENESIS_TIME)
    other = _node(anvil_factory, OTHER_CHAIN, GENESIS_TIME)
    code, lines = _check(tmp_path, capsys, _chain((good, other)))
    assert code == 1
    assert lines[1].startswith(f"ok      chain {CHAIN} (audit) rpc_urls[0] {good}: ")
    failed = lines[2]
    assert failed.startswith(f"FAILED  chain {CHAIN} (audit) rpc_urls[1] {other}: ")
    assert f"answers eth_chainId {OTHER_CHAIN}, but it is configured for chain {CHAIN}" in failed
    assert f"(or move it to [chains.{OTHER_CHAIN}])" in failed
    assert lines[3] == "online: 1 of 2 endpoints failed the check (above)"


@pytest.mark.chain
def test_an_unreachable_endpoint_is_named_without_its_credentials(
    anvil_factory: Callable[..., AnvilNode],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = _node(anvil_factory, CHAIN, GENESIS_TIME)
    port = free_port()  # nothing listens there
    dead = f"http://me:hunter2@127.0.0.1:{port}/v2/AbCdEf0123456789xyzKEY?apikey=sEcReT"
    monkeypatch.setenv(f"RTRM_CHAIN_{CHAIN}_RPC_URLS", f"{good},{dead}")
    code, lines = _check(tmp_path, capsys, _chain((good,)))
    assert code == 1
    out = "\n".join(lines)
    for secret in ("hunter2", "AbCdEf0123456789xyzKEY", "sEcReT"):
        assert secret not in out
    shown = f"http://me:***@127.0.0.1:{port}/v2/***?apikey=***"
    failed = lines[2]
    assert failed.startswith(f"FAILED  chain {CHAIN} (audit) rpc_urls[1] {shown}: did not answer")
    assert "connection refused" in failed
    assert "is the node running?" in failed
    assert lines[3] == "online: 1 of 2 endpoints failed the check (above)"


@pytest.mark.chain
def test_endpoints_that_disagree_on_genesis(
    anvil_factory: Callable[..., AnvilNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (_node(anvil_factory, CHAIN, GENESIS_TIME) for _ in range(2))
    reset = _node(anvil_factory, CHAIN, GENESIS_TIME + 1)  # same chain id, another genesis
    code, lines = _check(tmp_path, capsys, _chain((first, reset, second)))
    assert code == 1
    assert [line.split()[0] for line in lines[1:4]] == ["ok", "FAILED", "ok"]
    assert f"serves genesis {_genesis(reset)}, unlike the chain's other endpoints" in lines[2]
    assert f"rpc_urls[0] serves {_genesis(first)}" in lines[2]
    assert f"set genesis_hash in [chains.{CHAIN}]" in lines[2]

    code, lines = _check(tmp_path, capsys, _chain((first, reset)))  # a tie: both at fault
    assert code == 1
    assert [line.split()[0] for line in lines[1:3]] == ["FAILED", "FAILED"]
    assert "no genesis is the majority" in lines[1]
    assert lines[3] == "online: 2 of 2 endpoints failed the check (above)"


def test_a_bad_config_exits_2_before_asking_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rtrm.toml"
    path.write_text('[chains.1]\nname = "ethereum"\n')
    assert main(["--config", str(path), "config", "check", "--online"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {path}: chains.1")


@pytest.mark.parametrize("online", [False, True])
def test_a_websocket_url_exits_2_naming_its_key_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], online: bool
) -> None:
    """RTRM's clients speak HTTP(S) only: a ws(s) URL is bad configuration, found before
    anything is asked (it would otherwise fail the indexer later)."""
    path = tmp_path / "rtrm.toml"
    key = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7"
    path.write_text(
        '[chains.42161]\nname = "arbitrum"\nfinality_depth = 0\nblock_time_s = 0.25\n'
        f'rpc_urls = ["http://127.0.0.1:9", "wss://arb-mainnet.g.alchemy.com/v2/{key}"]\n'
    )
    args = ["--config", str(path), "config", "check", *(["--online"] if online else [])]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"error: {path}: chains.42161.rpc_urls[1]: 'wss://arb-mainnet.g.alchemy.com/v2/***' is "
        "a WebSocket URL, but RTRM speaks JSON-RPC over HTTP(S) only; use the node's https:// "
        "endpoint instead, often the same address ('https://arb-mainnet.g.alchemy.com/v2/***'"
    )
    assert key not in captured.err
