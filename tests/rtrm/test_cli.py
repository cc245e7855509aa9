"""The rtrm command line: global options, exit codes, `rtrm config`, JSON output rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import rtrm
from chains.exceptions import RPCConnectionError
from chains.registry import write_registry
from chains.spec import AssetSpec, ChainSpec, Registry, TokenSpec
from chains.types import Address, AssetId, AssetKind, ChainId
from rtrm.cli import main
from rtrm.commands import config as config_command
from rtrm.output import dumps_json, to_json

WETH = "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"
KEY = "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7"  # an API key in an RPC URL's path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    weth = TokenSpec(ChainId(1), "WETH", Address(WETH), 18, AssetId("ETH"), AssetKind.WRAPPED)
    registry = Registry(
        chains=(
            ChainSpec(ChainId(1), "ethereum", ("http://127.0.0.1:8545",), 32, 12.0, tokens=(weth,)),
            ChainSpec(
                ChainId(42161),
                "arbitrum",
                ("https://u:secret@arb.example", f"https://arb-mainnet.g.alchemy.com/v2/{KEY}"),
                20,
                0.25,
            ),
        ),
        assets=(AssetSpec(AssetId("ETH"), "Ether"),),
        database_url="postgresql+psycopg://rtrm:hunter2@db/rtrm",
    )
    path = tmp_path / "rtrm.toml"
    write_registry(registry, path)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"rtrm {rtrm.__version__}\n"


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rtrm", "--version"], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"rtrm {rtrm.__version__}\n")


def test_the_process_flushes_its_output_and_keeps_the_exit_code(config_file: Path) -> None:
    """``rtrm`` ends with ``os._exit`` (no interpreter teardown): what main printed, to a
    pipe (block-buffered), still arrives, and the exit code is main's."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered stdout

    def rtrm_process(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rtrm", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False)

    done = rtrm_process("--version")
    assert (done.returncode, done.stdout) == (0, f"rtrm {rtrm.__version__}\n")
    done = rtrm_process("--config", str(config_file), "config", "show", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["chains"][0]["chain_id"] == 1
    done = rtrm_process("--config", str(config_file), "index", "--chain", "999")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert "999" in done.stderr


def test_config_show_json(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert list(document) == sorted(document)  # stable, sorted keys
    assert [chain["chain_id"] for chain in document["chains"]] == [1, 42161]
    (token,) = document["chains"][0]["tokens"]
    assert token == {
        "address": WETH,
        "asset_id": "ETH",
        "chain_id": 1,
        "decimals": 18,
        "kind": "wrapped",
        "symbol": "WETH",
    }
    assert document["source"] == str(config_file)
    assert document["chains"][1]["rpc_urls"] == [
        "https://u:***@arb.example",
        "https://arb-mainnet.g.alchemy.com/v2/***",
    ]
    assert document["database_url"] == "postgresql+psycopg://rtrm:***@db/rtrm"
    assert "secret" not in out
    assert "hunter2" not in out
    assert KEY not in out


def test_config_show_table(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--config", str(config_file)]) == 0  # options after too
    out = capsys.readouterr().out
    for text in ("Chains", "ethereum", "arbitrum", "WETH", "Assets", "Ether"):
        assert text in out
    for secret in ("hunter2", "secret", KEY):
        assert secret not in out


def test_config_check_ok(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_file), "config", "check"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {config_file}: chains 2, contracts 0")


def test_config_check_broken_file_exits_2(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config_file.read_text().replace("decimals = 18", "decimals = 99")
    config_file.write_text(text)
    assert main(["--config", str(config_file), "config", "check"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: {config_file}: chains.1.tokens.WETH.decimals: 99 is out of range; use 0..36, "
        "the value the token's decimals() returns\n"
    )


def test_discovers_config_in_working_directory(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(config_file.parent)
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out.startswith("ok: rtrm.toml:")


def test_no_config_anywhere_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show"]) == 2
    assert "run `rtrm devnet up`" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
        (["config"], "the following arguments are required: ACTION"),
        (["config", "show", "--yaml"], "unrecognized arguments: --yaml"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_package_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(args: object) -> int:
        raise RPCConnectionError("chain 1: http://127.0.0.1:8545 refused; is the devnet up?")

    monkeypatch.setattr(config_command, "check_config", unreachable)
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert err == "error: chain 1: http://127.0.0.1:8545 refused; is the devnet up?\n"


@pytest.mark.parametrize("verbose", [False, True])
def test_unexpected_errors_exit_1_with_a_hint(
    verbose: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(args: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(config_command, "check_config", broken)
    assert main(["config", "check", *(["-v"] if verbose else [])]) == 1
    err = capsys.readouterr().err
    assert "error: unexpected ZeroDivisionError: division by zero" in err
    assert ("Traceback (most recent call last)" in err) is verbose
    assert ("rerun with -v" in err) is not verbose


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(config_command, "check_config", interrupted)
    assert main(["config", "check"]) == 130


# ---------------------------------------------------------------- JSON output rules


class Colour:
    RED = "red"


@dataclass(frozen=True)
class Row:
    amount_wei: int
    price_usd: Decimal
    path: Path
    kind: AssetKind


def test_to_json_keeps_exact_values() -> None:
    row = Row(10**30 + 1, Decimal("1234.5678901234567890"), Path("/x"), AssetKind.WRAPPED)
    assert to_json(row) == {
        "amount_wei": 10**30 + 1,  # an int, never a float
        "price_usd": "1234.5678901234567890",
        "path": "/x",
        "kind": "wrapped",
    }
    assert to_json({1: float("nan"), 2: float("inf"), 3: 0.5}) == {"1": None, "2": None, "3": 0.5}
    assert to_json({"b": (1, 2), "a": {3, 1}}) == {"b": [1, 2], "a": [1, 3]}
    assert to_json(datetime(2024, 1, 2, tzinfo=UTC)) == "2024-01-02T00:00:00+00:00"
    assert to_json(b"\x01\xff") == "0x01ff"
    assert dumps_json({"b": 1, "a": [None]}) == '{\n  "a": [\n    null\n  ],\n  "b": 1\n}'
    with pytest.raises(TypeError, match="cannot write Colour as JSON"):
        to_json(Colour())
