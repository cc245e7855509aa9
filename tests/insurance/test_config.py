"""The [insurance] table: defaults, where it is read from, and errors that name the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from insurance.config import (
    SIDECAR_FILE,
    InsuranceConfig,
    load_insurance_config,
    parse_insurance_config,
    to_units,
)
from insurance.exceptions import InsuranceConfigError


def test_defaults_without_a_table() -> None:
    config = parse_insurance_config({})
    assert config == InsuranceConfig()
    assert config.pay_after_finality
    assert config.alerts.level(1.3) == "ok"
    assert config.alerts.level(1.0) == "warn"
    assert config.alerts.level(0.99) == "critical"


def test_a_full_table_parses_exactly() -> None:
    config = parse_insurance_config(
        {
            "operator": "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
            "deductible": "1000.5",
            "deductible_bps": 25,
            "isolated_cap": 250_000,
            "approval_threshold": "100000",
            "pay_after_finality": False,
            "sizing": {"floor": "5000", "gearing": 4.8, "paths": 500, "seed": 7},
            "alerts": {"ok": 1.5, "warn": 1.1},
        }
    )
    assert config.operator == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert config.deductible == Decimal("1000.5")
    assert to_units(config.deductible, 6) == 1_000_500_000
    assert config.isolated_cap == Decimal(250_000)
    assert config.shared_cap is None
    assert (config.sizing.paths, config.sizing.seed) == (500, 7)
    assert config.alerts.level(1.2) == "warn"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"deductable": 1}, "unknown key 'deductable'; did you mean 'deductible'"),
        ({"sizing": {"gearing": "x"}}, "insurance.sizing.gearing: 'x' must be a number"),
        ({"deductible": 1.5}, "insurance.deductible: 1.5 must be a whole number or a quoted"),
        ({"deductible": "-3"}, "insurance.deductible: '-3' must be an amount >= 0"),
        ({"deductible_bps": 10_001}, "insurance.deductible_bps: 10001 must be in 0..10000"),
        ({"pay_after_finality": "yes"}, "pay_after_finality: 'yes' must be true or false"),
        ({"operator": "0x12"}, "insurance.operator: '0x12' is not an address"),
        ({"alerts": {"ok": 0.9, "warn": 1.0}}, "ok must be >= warn"),
        ({"sizing": {"confidence": 1.0}}, "insurance.sizing.confidence: 1.0 must be a number"),
        ({"sizing": 3}, "insurance.sizing: must be a table"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(table: dict[str, object], message: str) -> None:
    with pytest.raises(InsuranceConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_insurance_config(table)


def test_too_many_decimals_for_the_fund_asset() -> None:
    with pytest.raises(InsuranceConfigError, match="more than 6 decimals"):
        to_units(Decimal("0.0000001"), 6)


def test_read_from_the_registry_file_or_the_sidecar(tmp_path: Path) -> None:
    registry = tmp_path / "rtrm.toml"
    registry.write_text('[chains.1]\nname = "x"\n')
    assert load_insurance_config(registry) == InsuranceConfig()
    (tmp_path / SIDECAR_FILE).write_text('[insurance]\ndeductible = "7"\n')
    config = load_insurance_config(registry)
    assert config.deductible == Decimal(7)
    assert config.source == tmp_path / SIDECAR_FILE
    registry.write_text('[chains.1]\nname = "x"\n\n[insurance]\ndeductible = "9"\n')
    assert load_insurance_config(registry).deductible == Decimal(9)


def test_errors_name_the_file(tmp_path: Path) -> None:
    registry = tmp_path / "rtrm.toml"
    registry.write_text("")
    sidecar = tmp_path / SIDECAR_FILE
    sidecar.write_text("[insurance]\nshared_cap = -1\n")
    with pytest.raises(InsuranceConfigError, match=f"{sidecar}: insurance.shared_cap"):
        load_insurance_config(registry)
    sidecar.write_text("[insurance]\n[chains]\n")
    with pytest.raises(InsuranceConfigError, match="only the \\[insurance\\] table"):
        load_insurance_config(registry)
