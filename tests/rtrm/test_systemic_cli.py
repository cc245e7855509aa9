"""`rtrm exposure`, `rtrm stress` and `rtrm risk --contagion`: JSON keys, tables, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from rtrm_testing import index_once

from aggregation.loader import load_snapshot
from aggregation.snapshot import Snapshot
from aggregation.systemic import (
    AssetExposureReport,
    ExposureReport,
    LadderLevel,
    NetworkContagion,
    StressReport,
    StressRound,
    UserContagion,
    exposure_report,
    stress_report,
)
from chains.registry import load_registry
from indexer.store import open_store
from rtrm.cli import main
from rtrm.commands import COMMANDS
from rtrm.output import dumps_json


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Snapshot]]:
    """One seeded chain indexed into its config's store: (config path, its snapshot)."""
    from chains.devnet import DevnetOptions, up

    home = tmp_path_factory.mktemp("devnet")
    state, nodes = up(DevnetOptions(chains=1, users=16, seed=4, block_time_s=0, state_dir=home))
    try:
        config = Path(state.config_path)
        registry = load_registry(config)
        index_once(str(config), registry.database_url)
        store = open_store(registry.database_url, migrate=False)
        with store.engine.connect() as conn:
            snapshot = load_snapshot(conn, registry)
        store.dispose()
        yield config, snapshot
    finally:
        for node in nodes:
            node.stop()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _keys(cls: type) -> list[str]:
    return sorted(f.name for f in fields(cls))


def test_commands_follow_risk() -> None:
    at = COMMANDS.index("risk")
    assert COMMANDS[at + 1 : at + 3] == ("exposure", "stress")


def test_scenario_list_needs_no_store(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "stress", "--list", "--json")
    assert code == 0
    names = [s["name"] for s in json.loads(out)]
    assert names[0] == "black-thursday-2020"
    assert len(names) == 6
    code, out, _ = _run(capsys, "stress", "--list")
    assert code == 0
    assert "Historical scenarios" in out
    assert "ust-luna-2022" in out


@pytest.mark.chain
def test_exposure_json_and_table(
    indexed: tuple[Path, Snapshot], capsys: pytest.CaptureFixture[str]
) -> None:
    config, snapshot = indexed
    code, out, err = _run(capsys, "--config", str(config), "exposure", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert list(data) == _keys(ExposureReport)
    assert set(data["watermark"]) == {"1"}
    assets = [a["asset"] for a in data["assets"]]
    assert "ETH" in assets
    eth = data["assets"][assets.index("ETH")]
    assert list(eth) == _keys(AssetExposureReport)
    assert list(eth["ladder"][0]) == _keys(LadderLevel)
    assert len(eth["ladder"]) == 59
    assert set(eth["variants"]) >= {"ETH", "WSTETH"}
    assert out == dumps_json(exposure_report(snapshot)) + "\n"  # nothing rounded on the way
    code, out, _ = _run(
        capsys, "--config", str(config), "exposure", "--asset", "steth", "--top", "3"
    )
    assert code == 0
    for heading in ("ETH exposure at", "Top ETH holders", "ETH liquidation ladder", "-30%",
                    "HHI", "watermark 1@", "lending@1"):  # fmt: skip
        assert heading in out, heading
    assert "BTC exposure" not in out


@pytest.mark.chain
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("exposure", "--asset", "ETHH"), "unknown asset 'ETHH'; did you mean ETH?"),
        (("exposure", "--top", "0"), "expected a whole number >= 1"),
        (("stress",), "give a shock: --shock"),
        (("stress", "--shock", "ETH-0.3"), "expected ASSET=MOVE"),
        (("stress", "--shock", "ETH=abc"), "is not a number"),
        (("stress", "--shock", "ETH=-1.5"), "a move must be > -1"),
        (("stress", "--shock", "ETHH=-0.3"), "did you mean ETH?"),
        (("stress", "--shock", "ETH=-0.3,ETH=-0.2"), "shocked twice"),
        (("stress", "--scenario", "1999-01-01"), "unknown scenario"),
        (("stress", "--shock", "ETH=-0.3", "--scenario", "ftx-2022"), "not allowed with"),
        (("stress", "--shock", "ETH=-0.3", "--depth", "ETH=lots"), "expected ASSET=USD"),
    ],
)
def test_bad_asset_or_shock_exits_2(
    indexed: tuple[Path, Snapshot],
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    config, _ = indexed
    code, out, err = _run(capsys, "--config", str(config), *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


@pytest.mark.chain
def test_stress_json_adds_up(
    indexed: tuple[Path, Snapshot], capsys: pytest.CaptureFixture[str]
) -> None:
    config, snapshot = indexed
    argv = ("--config", str(config), "stress", "--shock", "ETH=+0.5", "--shock", "stETH=-5%")
    code, out, err = _run(capsys, *argv, "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert list(data) == _keys(StressReport)
    assert list(data["rounds"][0]) == _keys(StressRound)
    assert list(data["contagion"]) == _keys(NetworkContagion)
    assert data["moves"] == {"ETH": 0.5, "WSTETH": -0.05}
    assert data["users_affected"] > 0  # this book is short ETH perps: a rally liquidates
    assert data["bad_debt_usd"] > 0
    assert data["bad_debt_usd"] == pytest.approx(sum(v["bad_debt_usd"] for v in data["by_venue"]))
    assert out == dumps_json(stress_report(snapshot, "ETH=0.5,stETH=-0.05")) + "\n"
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    headings = ("Stress: custom", "Rounds", "Per protocol and chain", "bad debt (USD)",
                "Contagion through the protocol network", "DebtRank R", "watermark 1@")  # fmt: skip
    for heading in headings:
        assert heading in out, heading


@pytest.mark.chain
def test_stress_scenario_by_date_with_depth(
    indexed: tuple[Path, Snapshot], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = indexed
    argv = ("--config", str(config), "stress", "--scenario", "2020-03-12", "--depth", "ETH=5e6")
    code, out, err = _run(capsys, *argv, "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["scenario"] == "black-thursday-2020"
    assert data["depth_usd"] == {"ETH": 5e6}
    assert data["moves"]["ETH"] == -0.43
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert "Stress: black-thursday-2020" in out
    assert "2020-03-12" in out


@pytest.mark.chain
def test_risk_contagion_is_opt_in(
    indexed: tuple[Path, Snapshot], capsys: pytest.CaptureFixture[str]
) -> None:
    config, snapshot = indexed
    x = snapshot.inputs
    borrower = x.users[int(x.borrows.user[0])]
    code, out, _ = _run(capsys, "--config", str(config), "risk", borrower, "--json")
    assert code == 0
    assert json.loads(out)["contagion"] is None
    code, out, _ = _run(capsys, "--config", str(config), "risk", borrower, "--json", "--contagion")
    assert code == 0
    contagion = json.loads(out)["contagion"]
    assert list(contagion) == _keys(UserContagion)
    assert [s["scenario"] for s in contagion["scenarios"]] == [
        "black-thursday-2020", "ust-luna-2022", "cascade-2025-10-10",
    ]  # fmt: skip
    assert all(0.0 <= s["liquidated_collateral_share"] <= 1.0 for s in contagion["scenarios"])
    code, out, _ = _run(capsys, "--config", str(config), "risk", borrower, "--contagion")
    assert code == 0
    assert "Share of systemic losses" in out
    assert "collateral in loaded assets" in out
