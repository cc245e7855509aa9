"""Delta hedging per underlying with a Whalley-Wilmott no-trade band.

Concept: an options book on one underlying has net delta ``Delta`` (units of underlying
per unit move of the forward, summed over positions: ``quantity * black76(...).delta``)
and net gamma ``Gamma``. The delta-neutral hedge holds ``-Delta`` units of the hedge
instrument (a perpetual/forward on the same underlying; hedging with spot needs the
forward-to-spot factor applied to ``Delta`` first). Under proportional transaction costs
re-hedging continuously is ruinous; Whalley & Wilmott (1997, "An asymptotic analysis of an
optimal hedging model for option pricing with transaction costs", Math. Finance 7) show
that, for exponential utility, the optimal policy keeps the hedge within a band around
the target and trades only to the *nearest edge* of the band when it is left, with
half-width

    H = (3/2 * exp(-r T) * lambda * S * Gamma^2 / gamma) ** (1/3)

Units: ``S`` USD per unit of underlying; ``Gamma`` units of underlying per USD of price
move (units^2 / USD: ``quantity * gamma`` from ``black76``); ``lambda`` proportional cost,
a fraction of traded notional (5 bp = 0.0005); ``gamma`` absolute risk aversion in 1/USD;
``r`` annual rate and ``T`` years (the book's horizon; ``T = 0`` drops the discount).
Then ``H`` is in units of underlying (``lambda S Gamma^2 / gamma`` has units^3).

Invariants: ``H >= 0``; ``H = 0`` without costs (``lambda = 0``) or without gamma, so the
policy degenerates to exact delta neutrality; after the trade the hedge lies inside
``[target - H, target + H]`` and ``|trade|`` is the smallest that gets it there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["HedgePlan", "plan_delta_hedge", "whalley_wilmott_band"]


@dataclass(frozen=True, slots=True)
class HedgePlan:
    """Per underlying (arrays of one shape), in units of underlying unless stated."""

    target_hedge: NDArray[np.float64]  # -net delta: the delta-neutral hedge position
    band_half_width: NDArray[np.float64]  # Whalley-Wilmott H
    trade: NDArray[np.float64]  # buy (+) / sell (-) now; 0 inside the band
    rebalance: NDArray[np.bool_]  # current hedge outside the band
    hedge_after: NDArray[np.float64]  # current hedge + trade
    net_delta_after: NDArray[np.float64]  # book delta + hedge after the trade

    @property
    def lower(self) -> NDArray[np.float64]:
        """Lower edge of the no-trade band."""
        out: NDArray[np.float64] = self.target_hedge - self.band_half_width
        return out

    @property
    def upper(self) -> NDArray[np.float64]:
        """Upper edge of the no-trade band."""
        out: NDArray[np.float64] = self.target_hedge + self.band_half_width
        return out


def whalley_wilmott_band(
    *,
    net_gamma: ArrayLike,
    spot_usd: ArrayLike,
    cost_fraction: ArrayLike,
    risk_aversion_per_usd: ArrayLike,
    rate: ArrayLike = 0.0,
    t_years: ArrayLike = 0.0,
) -> NDArray[np.float64]:
    """Half-width ``H = (3/2 e^{-rT} lambda S Gamma^2 / gamma)^(1/3)`` (units of underlying).

    ``risk_aversion_per_usd`` must be > 0 (``gamma -> 0`` widens the band to infinity).
    """
    gamma = np.asarray(net_gamma, dtype=np.float64)
    with np.errstate(divide="ignore"):
        cube = (
            1.5
            * np.exp(-np.asarray(rate, dtype=np.float64) * np.asarray(t_years, dtype=np.float64))
            * np.asarray(cost_fraction, dtype=np.float64)
            * np.asarray(spot_usd, dtype=np.float64)
            * gamma
            * gamma
            / np.asarray(risk_aversion_per_usd, dtype=np.float64)
        )
    out: NDArray[np.float64] = np.cbrt(cube)
    return out


def plan_delta_hedge(
    *,
    net_delta: ArrayLike,
    net_gamma: ArrayLike,
    current_hedge: ArrayLike,
    spot_usd: ArrayLike,
    cost_fraction: ArrayLike,
    risk_aversion_per_usd: ArrayLike,
    rate: ArrayLike = 0.0,
    t_years: ArrayLike = 0.0,
    to_band_edge: bool = True,
) -> HedgePlan:
    """The hedge trade per underlying that neutralises the book's net delta within the band.

    ``net_delta`` excludes the hedge (units of underlying); ``current_hedge`` is the held
    hedge position (units). Outside the band the trade goes to the nearest edge (Whalley-
    Wilmott) or, with ``to_band_edge=False``, all the way to the target.
    """
    delta, gamma, hedge = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (net_delta, net_gamma, current_hedge))
    )
    target = -delta
    half = np.broadcast_to(
        whalley_wilmott_band(
            net_gamma=gamma,
            spot_usd=spot_usd,
            cost_fraction=cost_fraction,
            risk_aversion_per_usd=risk_aversion_per_usd,
            rate=rate,
            t_years=t_years,
        ),
        target.shape,
    )
    lower, upper = target - half, target + half
    rebalance = (hedge < lower) | (hedge > upper)
    destination = np.clip(hedge, lower, upper) if to_band_edge else target
    trade = np.where(rebalance, destination - hedge, 0.0)
    hedge_after = hedge + trade
    return HedgePlan(
        target_hedge=target,
        band_half_width=np.array(half),
        trade=trade,
        rebalance=rebalance,
        hedge_after=hedge_after,
        net_delta_after=delta + hedge_after,
    )
