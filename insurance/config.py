"""The ``[insurance]`` table: waterfall terms, operator, approvals, sizing and alerts.

Where it is read from, first found wins:

1. an ``[insurance]`` table in the registry file itself (``Registry.source``);
2. ``insurance.toml`` next to the registry file, holding the same ``[insurance]`` table
   (use this while ``chains.registry`` rejects unknown top-level keys of ``rtrm.toml``);
3. nothing: every key takes its default.

Example (amounts in whole units of the fund's asset, e.g. USDC; an integer or a quoted
decimal string, never a float, so they convert exactly)::

    [insurance]
    operator = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # or RTRM_INSURANCE_OPERATOR_KEY
    deductible = "1000"  # the protocol's offset per event ...
    deductible_bps = 0  # ... plus this share of each loss
    isolated_share_bps = 5000  # share of each chain's fund that is its isolated tranche
    isolated_cap = "250000"  # per-event cap of the isolated tranche (omit: no cap)
    shared_cap = "1000000"  # per-event cap of the shared layer (omit: no cap)
    approval_threshold = "100000"  # payouts above it wait for `rtrm insurance approve`
    pay_after_finality = true  # pay only deficits in finalized blocks
    confirm_timeout_s = 30.0

    [insurance.sizing]
    floor = "100000"  # the requirement never goes below this
    gearing = 4.8  # exposure / gearing is a lower bound (Nexus MCR)
    confidence = 0.995  # ES level (Solvency II)
    max_step_bps = 100  # the published requirement moves <= 1 % per update
    paths = 2000  # Monte Carlo paths (`rtrm insurance size --paths`)
    seed = 0
    horizon_days = 1.0
    tail_dof = 4.0  # Student-t degrees of freedom of the shocks
    tail_quantile = 0.9  # GPD threshold: exceedances over this quantile

    [insurance.alerts]
    ok = 1.2  # coverage >= ok: ok; >= warn: warn; below: critical
    warn = 1.0

Unknown keys and bad values raise :class:`~insurance.exceptions.InsuranceConfigError`
naming the key path (``insurance.sizing.gearing``) and showing a valid value.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from chains.exceptions import ConfigError
from chains.spec import checksum_address, closest_match
from insurance.exceptions import InsuranceConfigError

__all__ = [
    "SIDECAR_FILE",
    "AlertLevels",
    "InsuranceConfig",
    "SizingConfig",
    "load_insurance_config",
    "parse_insurance_config",
    "to_units",
]

SIDECAR_FILE = "insurance.toml"

_EXAMPLES: dict[str, str] = {
    "operator": 'operator = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"',
    "deductible": 'deductible = "1000"',
    "deductible_bps": "deductible_bps = 50",
    "isolated_share_bps": "isolated_share_bps = 5000",
    "isolated_cap": 'isolated_cap = "250000"',
    "shared_cap": 'shared_cap = "1000000"',
    "approval_threshold": 'approval_threshold = "100000"',
    "pay_after_finality": "pay_after_finality = true",
    "confirm_timeout_s": "confirm_timeout_s = 30.0",
    "floor": 'floor = "100000"',
    "gearing": "gearing = 4.8",
    "confidence": "confidence = 0.995",
    "max_step_bps": "max_step_bps = 100",
    "paths": "paths = 2000",
    "seed": "seed = 0",
    "horizon_days": "horizon_days = 1.0",
    "tail_dof": "tail_dof = 4.0",
    "tail_quantile": "tail_quantile = 0.9",
    "ok": "ok = 1.2",
    "warn": "warn = 1.0",
}
_TOP = (
    "operator",
    "deductible",
    "deductible_bps",
    "isolated_share_bps",
    "isolated_cap",
    "shared_cap",
    "approval_threshold",
    "pay_after_finality",
    "confirm_timeout_s",
    "sizing",
    "alerts",
)
_SIZING = (
    "floor",
    "gearing",
    "confidence",
    "max_step_bps",
    "paths",
    "seed",
    "horizon_days",
    "tail_dof",
    "tail_quantile",
)
_ALERTS = ("ok", "warn")
_BPS = 10_000


@dataclass(frozen=True, slots=True)
class SizingConfig:
    """Capital sizing parameters (see :mod:`insurance.sizing`)."""

    floor: Decimal = Decimal(0)
    gearing: float = 4.8
    confidence: float = 0.995
    max_step_bps: int = 100
    paths: int = 2000
    seed: int = 0
    horizon_days: float = 1.0
    tail_dof: float = 4.0
    tail_quantile: float = 0.9


@dataclass(frozen=True, slots=True)
class AlertLevels:
    """Coverage ratio thresholds: ``>= ok`` ok, ``>= warn`` warn, else critical."""

    ok: float = 1.2
    warn: float = 1.0

    def level(self, coverage: float) -> str:
        if coverage >= self.ok:
            return "ok"
        return "warn" if coverage >= self.warn else "critical"


@dataclass(frozen=True, slots=True)
class InsuranceConfig:
    """The parsed ``[insurance]`` table; amounts in whole fund-asset units (exact)."""

    operator: str | None = None
    deductible: Decimal = Decimal(0)
    deductible_bps: int = 0
    isolated_share_bps: int = 5000
    isolated_cap: Decimal | None = None
    shared_cap: Decimal | None = None
    approval_threshold: Decimal | None = None
    pay_after_finality: bool = True
    confirm_timeout_s: float = 30.0
    sizing: SizingConfig = field(default_factory=SizingConfig)
    alerts: AlertLevels = field(default_factory=AlertLevels)
    source: Path | None = field(default=None, compare=False)


def to_units(amount: Decimal, decimals: int) -> int:
    """Whole units -> smallest units, exactly (``"0.5"`` USDC -> 500000)."""
    scaled = amount.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise InsuranceConfigError(
            f"{amount} has more than {decimals} decimals, the fund asset's precision; round it"
        )
    return int(scaled)


class _Table:
    """One table of the config: typed getters whose errors name the key path and a fix."""

    def __init__(self, data: object, key: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise InsuranceConfigError(f"{key}: must be a table; write [{key}]")
        for name in data:
            if name not in known:
                guess = closest_match(name, known)
                hint = f"did you mean {guess!r}? " if guess else ""
                raise InsuranceConfigError(
                    f"{key}: unknown key {name!r}; {hint}valid keys: {', '.join(known)}"
                )
        self.data: dict[str, Any] = data
        self.key = key

    def _bad(self, name: str, what: str) -> InsuranceConfigError:
        value = self.data[name]
        return InsuranceConfigError(
            f"{self.key}.{name}: {value!r} must be {what}; write e.g. {_EXAMPLES[name]}"
        )

    def amount(self, name: str, default: Decimal | None) -> Decimal | None:
        if name not in self.data:
            return default
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self._bad(name, "a whole number or a quoted decimal (not a float)")
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise self._bad(name, "a whole number or a quoted decimal") from None
        if not amount.is_finite() or amount < 0:
            raise self._bad(name, "an amount >= 0")
        return amount

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        if name not in self.data:
            return default
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, "an integer")
        if value < low or (high is not None and value > high):
            raise self._bad(name, f"in {low}..{high}" if high is not None else f">= {low}")
        return value

    def number(self, name: str, default: float, *, low: float, high: float = math.inf) -> float:
        """A finite number with ``low < value <= high`` (strictly above ``low``)."""
        if name not in self.data:
            return default
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(name, "a number")
        if not (math.isfinite(value) and low < value <= high):
            bound = f"<= {high}" if math.isfinite(high) else ""
            raise self._bad(name, f"a number > {low} {bound}".strip())
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def address(self, name: str) -> str | None:
        if name not in self.data:
            return None
        value = self.data[name]
        if not isinstance(value, str):
            raise self._bad(name, "an address string")
        try:
            return str(checksum_address(value, key=f"{self.key}.{name}"))
        except ConfigError as exc:
            raise InsuranceConfigError(str(exc)) from None


def parse_insurance_config(
    data: Mapping[str, Any], *, source: Path | None = None
) -> InsuranceConfig:
    """Build the config from the ``[insurance]`` table's contents (``{}``: all defaults)."""
    try:
        return _parse(data, source)
    except InsuranceConfigError as exc:
        if source is None:
            raise
        raise InsuranceConfigError(f"{source}: {exc}") from None


def _parse(data: Mapping[str, Any], source: Path | None) -> InsuranceConfig:
    top = _Table(data, "insurance", _TOP)
    sizing = _Table(top.data.get("sizing", {}), "insurance.sizing", _SIZING)
    alerts = _Table(top.data.get("alerts", {}), "insurance.alerts", _ALERTS)
    warn = alerts.number("warn", 1.0, low=0.0)
    ok = alerts.number("ok", 1.2, low=0.0)
    if ok < warn:
        raise InsuranceConfigError(
            f"insurance.alerts: ok ({ok}) is below warn ({warn}); ok must be >= warn, "
            "e.g. ok = 1.2, warn = 1.0"
        )
    return InsuranceConfig(
        operator=top.address("operator"),
        deductible=top.amount("deductible", Decimal(0)) or Decimal(0),
        deductible_bps=top.integer("deductible_bps", 0, low=0, high=_BPS),
        isolated_share_bps=top.integer("isolated_share_bps", 5000, low=0, high=_BPS),
        isolated_cap=top.amount("isolated_cap", None),
        shared_cap=top.amount("shared_cap", None),
        approval_threshold=top.amount("approval_threshold", None),
        pay_after_finality=top.boolean("pay_after_finality", True),
        confirm_timeout_s=top.number("confirm_timeout_s", 30.0, low=0.0),
        sizing=SizingConfig(
            floor=sizing.amount("floor", Decimal(0)) or Decimal(0),
            gearing=sizing.number("gearing", 4.8, low=0.0),
            confidence=sizing.number("confidence", 0.995, low=0.5, high=0.99999),
            max_step_bps=sizing.integer("max_step_bps", 100, low=0, high=_BPS),
            paths=sizing.integer("paths", 2000, low=100),
            seed=sizing.integer("seed", 0, low=0),
            horizon_days=sizing.number("horizon_days", 1.0, low=0.0, high=365.0),
            tail_dof=sizing.number("tail_dof", 4.0, low=2.0, high=1000.0),
            tail_quantile=sizing.number("tail_quantile", 0.9, low=0.5, high=0.99),
        ),
        alerts=AlertLevels(ok=ok, warn=warn),
        source=source,
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InsuranceConfigError(f"{path}: cannot read it ({exc}); check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InsuranceConfigError(f"{path}: invalid TOML: {exc}; fix the syntax there") from None


def load_insurance_config(registry_source: Path | None) -> InsuranceConfig:
    """The ``[insurance]`` table of the registry file or of ``insurance.toml`` beside it."""
    if registry_source is None:
        return InsuranceConfig()
    for path in (registry_source, registry_source.parent / SIDECAR_FILE):
        if not path.is_file():
            continue
        document = _read(path)
        if "insurance" in document:
            extra = sorted(set(document) - {"insurance"}) if path.name == SIDECAR_FILE else []
            if extra:
                raise InsuranceConfigError(
                    f"{path}: unexpected top-level key(s) {', '.join(extra)}; "
                    "this file holds only the [insurance] table"
                )
            return parse_insurance_config(document["insurance"], source=path)
    return InsuranceConfig(source=None)
