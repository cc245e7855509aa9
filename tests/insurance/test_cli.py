"""``rtrm insurance status|size|trigger|approve``: stable --json keys, exit codes, the story."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rtrm_testing import index_once

from chains.abi import encode_call
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from rtrm.cli import main
from rtrm.commands import COMMANDS

pytestmark = pytest.mark.chain

STATUS_KEYS = {
    "alert",
    "attestation",
    "coverage_ratio",
    "decimals",
    "deficits",
    "iou_total",
    "open_deficit_amount",
    "paid_amount",
    "paid_claims",
    "payouts",
    "pool_total",
    "pools",
    "required",
    "watermark",
}
TRIGGER_KEYS = {
    "attestation_root",
    "balances",
    "deficits",
    "dry_run",
    "epoch",
    "execution",
    "liabilities",
    "paid_amount",
    "payouts",
    "unreachable_chains",
    "waiting_for_finality",
    "watermark",
}
PAYOUT_KEYS = {
    "amount",
    "approved_by",
    "block_number",
    "chain_id",
    "claim_id",
    "deficit_id",
    "epoch",
    "error",
    "fund",
    "recipient",
    "state",
    "tranche",
    "tx_hash",
}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip().startswith("{") else out), err


@pytest.fixture
def devnet_config(crashed_devnet: Any) -> str:
    path = Path(crashed_devnet.config_path)
    index_once(str(path), load_registry(path).database_url)
    return str(path)


def _fund_balance(state: Any) -> int:
    node = state.nodes[0]
    fund = state.contracts[str(node.chain_id)]["insurance_fund"]
    with RpcClient(node.rpc_url) as client:
        call = {"to": fund, "data": encode_call("totalAssets()")}
        return hex_to_int(client.call("eth_call", [call, "latest"]))


def test_insurance_is_a_command() -> None:
    assert "insurance" in COMMANDS


def test_the_backstop_story_with_stable_json_keys(
    crashed_devnet: Any, devnet_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sidecar = Path(devnet_config).parent / "insurance.toml"
    sidecar.write_text(
        "[insurance]\n"
        'operator = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"\n'
        "pay_after_finality = false\n"
        'isolated_cap = "1000"\n'
        "[insurance.sizing]\n"
        "paths = 200\n"
        'floor = "1000"\n'
    )
    config = ("--config", devnet_config)
    code, status, _ = _run(capsys, *config, "insurance", "status", "--json")
    assert code == 0
    assert set(status) == STATUS_KEYS
    assert status["deficits"]["open"] == 0  # nothing detected before a trigger
    assert status["required"] is None
    assert status["alert"] is None
    assert status["pool_total"] > 0
    assert set(status["pools"][0]) == {
        "assets",
        "chain_id",
        "claims_paid",
        "claims_paid_count",
        "deposits",
        "fund",
        "token",
        "withdrawals",
    }

    before = _fund_balance(crashed_devnet)
    code, dry, _ = _run(capsys, *config, "insurance", "trigger", "--dry-run", "--json")
    assert code == 0
    assert set(dry) == TRIGGER_KEYS
    assert dry["dry_run"] is True
    assert len(dry["payouts"]) == 4  # three deficits, one spilling into the shared layer
    assert set(dry["payouts"][0]) == PAYOUT_KEYS
    assert _fund_balance(crashed_devnet) == before

    code, paid, _ = _run(capsys, *config, "insurance", "trigger", "--json")
    assert code == 0
    assert paid["dry_run"] is False
    assert {p["state"] for p in paid["payouts"]} == {"confirmed"}
    assert paid["paid_amount"] == sum(p["amount"] for p in dry["payouts"])
    assert _fund_balance(crashed_devnet) == before - paid["paid_amount"]
    code, again, _ = _run(capsys, *config, "insurance", "trigger", "--json")
    assert (code, again["paid_amount"], again["payouts"]) == (0, 0, [])

    code, sized, _ = _run(capsys, *config, "insurance", "size", "--seed", "4", "--json")
    assert code == 0
    assert set(sized) == {"alert", "coverage_ratio", "decimals", "pool_total", "required", "sizing"}
    assert sized["sizing"]["paths"] == 200
    assert sized["sizing"]["binding"] in {"floor", "es", "gearing"}
    assert sized["alert"] in {"ok", "warn", "critical"}
    code, resized, _ = _run(capsys, *config, "insurance", "size", "--seed", "4", "--json")
    assert resized["sizing"]["raw_required"] == sized["sizing"]["raw_required"]  # seeded

    code, status, _ = _run(capsys, *config, "insurance", "status", "--json")
    assert status["deficits"]["settled"] == 3
    assert status["paid_claims"] == 4
    assert status["required"] == sized["required"]
    assert status["attestation"]["epoch"] == 1

    code, table, _ = _run(capsys, *config, "insurance", "status")
    assert code == 0
    assert "coverage ratio" in table

    # screening (published too, after the status checks above)
    assert sized["sizing"]["screen"] is None  # 200 paths <= the default 200 cascades: all run
    code, screened, _ = _run(
        capsys, *config, "insurance", "size", "--seed", "4", "--max-cascades", "50", "--json"
    )
    assert code == 0
    assert screened["sizing"]["screen"]["max_cascades"] == 50
    assert screened["sizing"]["cascades_run"] == 50 + 20  # and a sample of the other 150
    assert screened["sizing"]["screen"]["sampled_above_var"] == 0
    code, table, _ = _run(capsys, *config, "insurance", "size", "--max-cascades", "50")
    assert code == 0
    assert "screened: the 50 paths" in table
    code, _, err = _run(capsys, *config, "insurance", "size", "--max-cascades", "-1")
    assert code == 2
    assert "--max-cascades -1" in err


def test_errors_are_one_line_with_the_fix(
    devnet_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ("--config", devnet_config)
    (Path(devnet_config).parent / "insurance.toml").write_text(
        "[insurance]\npay_after_finality = false\n"
    )
    code, _, err = _run(capsys, *config, "insurance", "trigger")
    assert code == 2
    assert "RTRM_INSURANCE_OPERATOR_KEY" in err
    code, _, err = _run(capsys, *config, "insurance", "approve", "0x" + "00" * 32)
    assert code == 2
    assert "no payout with claim id" in err
    (Path(devnet_config).parent / "insurance.toml").write_text("[insurance]\ngearing = 3\n")
    code, _, err = _run(capsys, *config, "insurance", "status")
    assert code == 2
    assert "unknown key 'gearing'" in err
