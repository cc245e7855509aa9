"""`rtrm risk ADDRESS`: JSON keys and values, the tables, grids and address errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once

from aggregation.loader import load_snapshot
from aggregation.user_report import RiskReport, TailEstimate, UnderlyingGreeks, user_risk_report
from chains.registry import load_registry
from indexer.store import open_store
from rtrm.cli import main
from rtrm.commands import COMMANDS
from rtrm.output import dumps_json


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One seeded chain indexed into its config's store: (config path, a borrower)."""
    from chains.devnet import DevnetOptions, up

    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=1, users=16, seed=4, block_time_s=0, state_dir=home))
    try:
        config = Path(state.config_path)
        registry = load_registry(config)
        index_once(str(config), registry.database_url)
        store = open_store(registry.database_url, migrate=False)
        with store.engine.connect() as conn:
            inputs = load_snapshot(conn, registry).inputs
        store.dispose()
        yield config, inputs.users[int(inputs.borrows.user[0])]
    finally:
        for node in nodes:
            node.stop()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_risk_is_a_command() -> None:
    assert COMMANDS.index("risk") == COMMANDS.index("status") + 1


@pytest.mark.chain
def test_json_has_stable_keys_and_full_floats(
    indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, borrower = indexed
    code, out, err = _run(capsys, "--config", str(config), "risk", borrower.lower(), "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert list(data) == sorted(f.name for f in fields(RiskReport))
    assert data["address"] == borrower
    assert data["grid"] == "derive-pmrm"
    assert data["has_positions"] is True
    assert set(data["watermark"]) == {"1"}
    assert isinstance(data["health_factor"], float)
    assert data["debt_usd"] > 0
    for greeks in data["greeks"].values():
        assert list(greeks) == sorted(f.name for f in fields(UnderlyingGreeks))
    assert set(data["greeks"]) == set(data["hedge"]) == set(data["distance_to_liquidation"])
    assert list(data["tail"]) == sorted(f.name for f in fields(TailEstimate))
    assert set(data["by_protocol"]) == {"options@1", "lending@1", "perps@1"}
    # exactly what the library computes at the same watermark: nothing rounded on the way
    registry = load_registry(config)
    store = open_store(registry.database_url, migrate=False)
    with store.engine.connect() as conn:
        snapshot = load_snapshot(conn, registry, users=[borrower])
    store.dispose()
    assert out == dumps_json(user_risk_report(snapshot, borrower)) + "\n"


@pytest.mark.chain
def test_table_and_grids(indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    config, borrower = indexed
    code, out, _ = _run(capsys, "--config", str(config), "risk", borrower)
    assert code == 0
    for heading in ("Risk of", "health factor", "Greeks per underlying", "Distance to liquidation",
                    "Where (USD)", "lending@1", "watermark 1@"):  # fmt: skip
        assert heading in out, heading
    code, out, _ = _run(
        capsys, "--config", str(config), "risk", borrower, "--json", "--grid", "span"
    )
    assert code == 0
    assert json.loads(out)["grid"] == "span-16"
    code, _, err = _run(capsys, "--config", str(config), "risk", borrower, "--grid", "cme")
    assert code == 2
    assert "invalid choice" in err


@pytest.mark.chain
def test_unknown_address_is_all_zero(
    indexed: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = indexed
    nobody = "0x" + "5a" * 20
    code, out, _ = _run(capsys, "--config", str(config), "risk", nobody, "--json")
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert data["has_positions"] is False
    assert data["equity_usd"] == data["debt_usd"] == data["initial_margin_usd"] == 0.0
    assert data["health_factor"] is None  # infinite: no debt


def test_bad_checksum_exits_2_with_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
    typo = good[:3] + good[3].swapcase() + good[4:]
    code, out, err = _run(capsys, "--config", "/nonexistent/rtrm.toml", "risk", typo)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert "checksum" in err
    assert "all-lowercase" in err
    code, _, err = _run(capsys, "risk", "0x1234")
    assert code == 2
    assert "40 hex digits" in err
