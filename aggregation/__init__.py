"""Risk math over a store snapshot: pricing, Greeks, margin, health, exposure, contagion.

One loader reads the store at a watermark vector and turns it into numpy arrays; every
other module is pure, vectorised math over those arrays (Black-76 pricing and Greeks,
vol surfaces, portfolio margin scenario grids, lending health factors, exposure per
asset, stress and contagion cascades, VaR) with no I/O and no logging. Amounts are
scaled from exact integers by token decimals only here; units are in the names
(``price_usd``, ``vol_annual``, ``theta_per_day``, ``vega_per_vol_point``).

May import ``indexer`` (the loader only) and ``chains`` (asset ids).
"""

from aggregation.black76 import Greeks, black76
from aggregation.hedging import HedgePlan, plan_delta_hedge, whalley_wilmott_band
from aggregation.implied_vol import ImpliedVolResult, IVReason, implied_vol
from aggregation.lending import LendingParams, account_health, liquidation_prices
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
from aggregation.volsurface import ArbitrageViolation, SviSlice, VolSurface

__all__ = [
    "ArbitrageViolation",
    "BorrowPositions",
    "CollateralPositions",
    "ConditionalVol",
    "GarchFit",
    "Greeks",
    "HedgePlan",
    "IVReason",
    "ImpliedVolResult",
    "LendingParams",
    "MarginBook",
    "MarginParams",
    "OptionPositions",
    "PerpPositions",
    "RiskInputs",
    "ScenarioGrid",
    "StandardMarginParams",
    "SupplyPositions",
    "SviSlice",
    "TailRisk",
    "UnifiedRisk",
    "VolSurface",
    "account_health",
    "black76",
    "deribit_pm_grid",
    "derive_pmrm_grid",
    "ewma_volatility",
    "fhs_scenarios",
    "fit_garch",
    "implied_vol",
    "liquidation_prices",
    "log_returns",
    "plan_delta_hedge",
    "portfolio_margin",
    "span16_grid",
    "standard_margin",
    "tail_risk",
    "unified_risk",
    "user_risk",
    "value_instruments",
    "var_es",
    "whalley_wilmott_band",
]
