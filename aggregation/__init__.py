"""Risk math over a store snapshot: pricing, Greeks, margin, health, exposure, contagion.

One loader reads the store at a watermark vector and turns it into numpy arrays; every
other module is pure, vectorised math over those arrays (Black-76 pricing and Greeks,
vol surfaces, portfolio margin scenario grids, lending health factors, exposure per
asset, stress and contagion cascades, VaR) with no I/O and no logging. Amounts are
scaled from exact integers by token decimals only here; units are in the names
(``price_usd``, ``vol_annual``, ``theta_per_day``, ``vega_per_vol_point``).

May import ``indexer`` (the loader only) and ``chains`` (asset ids).

Public names are imported lazily (PEP 562), so importing ``aggregation.exceptions`` (as
every ``rtrm`` command does) does not load numpy and scipy.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggregation.accounts import (
        AccountRule,
        OnchainRates,
        ProtocolRules,
        account_liquidation_moves,
        account_state,
        liquidate_accounts,
        margin_accounts,
    )
    from aggregation.black76 import Greeks, black76
    from aggregation.cascade import (
        AccountEvents,
        CascadeParams,
        CascadeResult,
        ConstantProduct,
        LinearImpact,
        cascade,
    )
    from aggregation.contagion import debtrank, eisenberg_noe, protocol_network
    from aggregation.exposure import CanonicalMap, asset_exposure, liquidation_ladder
    from aggregation.hedging import HedgePlan, plan_delta_hedge, whalley_wilmott_band
    from aggregation.implied_vol import ImpliedVolResult, IVReason, implied_vol
    from aggregation.lending import LendingParams, account_health, liquidation_prices
    from aggregation.loader import load_snapshot
    from aggregation.margin import (
        MarginBook,
        MarginParams,
        StandardMarginParams,
        portfolio_margin,
        standard_margin,
        value_instruments,
    )
    from aggregation.risk import (
        BorrowPositions,
        CollateralPositions,
        OptionPositions,
        PerpPositions,
        RiskInputs,
        SupplyPositions,
        UnifiedRisk,
        unified_risk,
        user_risk,
    )
    from aggregation.scenarios import ScenarioGrid, deribit_pm_grid, derive_pmrm_grid, span16_grid
    from aggregation.stress import HISTORICAL, Shock, historical, parse_shock
    from aggregation.systemic import exposure_report, stress_report, user_contagion
    from aggregation.tailrisk import (
        ConditionalVol,
        GarchFit,
        TailRisk,
        ewma_volatility,
        fhs_scenarios,
        fit_garch,
        log_returns,
        tail_risk,
        var_es,
    )
    from aggregation.user_report import user_risk_report
    from aggregation.volsurface import ArbitrageViolation, SviSlice, VolSurface

_EXPORTS: dict[str, str] = {
    "AccountEvents": "aggregation.cascade",
    "AccountRule": "aggregation.accounts",
    "ArbitrageViolation": "aggregation.volsurface",
    "BorrowPositions": "aggregation.risk",
    "CanonicalMap": "aggregation.exposure",
    "CascadeParams": "aggregation.cascade",
    "CascadeResult": "aggregation.cascade",
    "CollateralPositions": "aggregation.risk",
    "ConditionalVol": "aggregation.tailrisk",
    "ConstantProduct": "aggregation.cascade",
    "GarchFit": "aggregation.tailrisk",
    "Greeks": "aggregation.black76",
    "HISTORICAL": "aggregation.stress",
    "HedgePlan": "aggregation.hedging",
    "IVReason": "aggregation.implied_vol",
    "ImpliedVolResult": "aggregation.implied_vol",
    "LendingParams": "aggregation.lending",
    "LinearImpact": "aggregation.cascade",
    "MarginBook": "aggregation.margin",
    "MarginParams": "aggregation.margin",
    "OnchainRates": "aggregation.accounts",
    "OptionPositions": "aggregation.risk",
    "PerpPositions": "aggregation.risk",
    "ProtocolRules": "aggregation.accounts",
    "RiskInputs": "aggregation.risk",
    "ScenarioGrid": "aggregation.scenarios",
    "Shock": "aggregation.stress",
    "StandardMarginParams": "aggregation.margin",
    "SupplyPositions": "aggregation.risk",
    "SviSlice": "aggregation.volsurface",
    "TailRisk": "aggregation.tailrisk",
    "UnifiedRisk": "aggregation.risk",
    "VolSurface": "aggregation.volsurface",
    "account_health": "aggregation.lending",
    "account_liquidation_moves": "aggregation.accounts",
    "account_state": "aggregation.accounts",
    "asset_exposure": "aggregation.exposure",
    "black76": "aggregation.black76",
    "cascade": "aggregation.cascade",
    "debtrank": "aggregation.contagion",
    "deribit_pm_grid": "aggregation.scenarios",
    "derive_pmrm_grid": "aggregation.scenarios",
    "eisenberg_noe": "aggregation.contagion",
    "ewma_volatility": "aggregation.tailrisk",
    "exposure_report": "aggregation.systemic",
    "fhs_scenarios": "aggregation.tailrisk",
    "fit_garch": "aggregation.tailrisk",
    "historical": "aggregation.stress",
    "implied_vol": "aggregation.implied_vol",
    "liquidate_accounts": "aggregation.accounts",
    "liquidation_ladder": "aggregation.exposure",
    "liquidation_prices": "aggregation.lending",
    "load_snapshot": "aggregation.loader",
    "log_returns": "aggregation.tailrisk",
    "margin_accounts": "aggregation.accounts",
    "parse_shock": "aggregation.stress",
    "plan_delta_hedge": "aggregation.hedging",
    "portfolio_margin": "aggregation.margin",
    "protocol_network": "aggregation.contagion",
    "span16_grid": "aggregation.scenarios",
    "standard_margin": "aggregation.margin",
    "stress_report": "aggregation.systemic",
    "tail_risk": "aggregation.tailrisk",
    "unified_risk": "aggregation.risk",
    "user_contagion": "aggregation.systemic",
    "user_risk": "aggregation.risk",
    "user_risk_report": "aggregation.user_report",
    "value_instruments": "aggregation.margin",
    "var_es": "aggregation.tailrisk",
    "whalley_wilmott_band": "aggregation.hedging",
}

__all__ = [
    "HISTORICAL",
    "AccountEvents",
    "AccountRule",
    "ArbitrageViolation",
    "BorrowPositions",
    "CanonicalMap",
    "CascadeParams",
    "CascadeResult",
    "CollateralPositions",
    "ConditionalVol",
    "ConstantProduct",
    "GarchFit",
    "Greeks",
    "HedgePlan",
    "IVReason",
    "ImpliedVolResult",
    "LendingParams",
    "LinearImpact",
    "MarginBook",
    "MarginParams",
    "OnchainRates",
    "OptionPositions",
    "PerpPositions",
    "ProtocolRules",
    "RiskInputs",
    "ScenarioGrid",
    "Shock",
    "StandardMarginParams",
    "SupplyPositions",
    "SviSlice",
    "TailRisk",
    "UnifiedRisk",
    "VolSurface",
    "account_health",
    "account_liquidation_moves",
    "account_state",
    "asset_exposure",
    "black76",
    "cascade",
    "debtrank",
    "deribit_pm_grid",
    "derive_pmrm_grid",
    "eisenberg_noe",
    "ewma_volatility",
    "exposure_report",
    "fhs_scenarios",
    "fit_garch",
    "historical",
    "implied_vol",
    "liquidate_accounts",
    "liquidation_ladder",
    "liquidation_prices",
    "load_snapshot",
    "log_returns",
    "margin_accounts",
    "parse_shock",
    "plan_delta_hedge",
    "portfolio_margin",
    "protocol_network",
    "span16_grid",
    "standard_margin",
    "stress_report",
    "tail_risk",
    "unified_risk",
    "user_contagion",
    "user_risk",
    "user_risk_report",
    "value_instruments",
    "var_es",
    "whalley_wilmott_band",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aggregation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Two functions share their module's name (``black76``, ``implied_vol``). Importing
    such a submodule binds it on the package, which would hide the function; the package
    keeps the name for the function, loaded on first use like every other export. The
    submodules stay importable (``from aggregation.black76 import Greeks``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


_SHADOWED = frozenset({"black76", "implied_vol"})
sys.modules[__name__].__class__ = _Package
