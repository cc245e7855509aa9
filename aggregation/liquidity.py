"""Prices and market liquidity of a cascade: pools per asset, shocks, price impact.

Concept. Every asset has a root (:class:`aggregation.exposure.CanonicalMap`). A root's pool
price is its USD price; a derived asset's pool price is its *peg* (root coins per unit,
e.g. 1.18 for wstETH), and its USD price is ``root price x peg``. A shock ``shock[a]``
multiplies asset ``a``'s pool price by ``1 + shock[a]``. So ``{ETH: -0.30, wstETH: -0.08}``
is ETH down 30 % and wstETH depegged 8 % *on top* (x 0.70 x 0.92). Underlyings' spots
follow their root's price (:class:`Market`).

Liquidity, per asset, with cumulative effective sales ``Q`` (coins, + sold):
- :class:`ConstantProduct` (x y = k against USD): the pool holds ``reserve_usd`` at the
  opening price and is arbitraged to the shocked price before liquidations start. The
  price factor is ``(x / (x + Q))^2``.
- :class:`LinearImpact`: factor ``max(floor, 1 - Q x shocked price / depth_usd)``; selling
  ``s x depth_usd`` moves the price by ``-s``.
- ``None``: infinite depth (no impact).
With a ``half_life_rounds``, the impact decays: ``Q <- Q x 2^(-1/half_life) + sales``
(prices recover toward the shocked level; Risk DAO style). Sales of a derived asset move
its peg; with ``route_to_root`` they also count, in root coins, as sales of the root
(liquidators end in USD). Closing a liquidated perp sells (long) or buys (short) its
size of the root. Debt bought back by liquidators moves no price.

Units: coins (``_coin``), USD (``_usd``), moves as fractions, rounds as integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aggregation.books import RiskInputs
from aggregation.exceptions import InvalidParamsError
from aggregation.exposure import CanonicalMap

__all__ = ["ConstantProduct", "LinearImpact", "Liquidity", "Market", "Pools"]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
Bool = NDArray[np.bool_]
_NONE, _AMM, _LINEAR = 0, 1, 2  # liquidity model kinds


def _sum(index: Index, weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


@dataclass(frozen=True, slots=True)
class ConstantProduct:
    """x y = k pool against USD with ``reserve_usd`` on the USD side at the opening price."""

    reserve_usd: float
    half_life_rounds: float = math.inf


@dataclass(frozen=True, slots=True)
class LinearImpact:
    """Price factor ``max(floor, 1 - sold_usd / depth_usd)`` (sold at the shocked price)."""

    depth_usd: float
    half_life_rounds: float = math.inf
    floor: float = 0.01


Liquidity = ConstantProduct | LinearImpact | None


@dataclass(frozen=True, slots=True, eq=False)
class Pools:
    """Liquidity models as arrays (kind per asset: none, constant product, linear)."""

    kind: Index
    size: Float  # reserve_usd or depth_usd
    decay: Float  # per round: 2^(-1 / half-life)
    floor: Float

    @classmethod
    def of(cls, liquidity: tuple[Liquidity, ...], n_assets: int) -> Pools:
        if len(liquidity) > n_assets:
            raise InvalidParamsError(f"{len(liquidity)} liquidity models for {n_assets} assets")
        kind, size = np.full(n_assets, _NONE, np.intp), np.ones(n_assets)
        half, floor = np.full(n_assets, math.inf), np.zeros(n_assets)
        for a, model in enumerate(liquidity):
            if isinstance(model, ConstantProduct):
                kind[a], size[a], half[a] = _AMM, model.reserve_usd, model.half_life_rounds
            elif isinstance(model, LinearImpact):
                kind[a], size[a], half[a] = _LINEAR, model.depth_usd, model.half_life_rounds
                floor[a] = model.floor
            if not (size[a] > 0.0 and half[a] > 0.0 and 0.0 <= floor[a] < 1.0):
                raise InvalidParamsError(
                    f"asset {a}: {model} needs a depth > 0, a half-life > 0 and 0 <= floor < 1"
                )
        return cls(kind, size, np.exp2(-1.0 / half), floor)

    def factor(self, sold: Float, open_usd: Float, base_usd: Float) -> Float:
        """Price factor after effective sales ``sold`` (coins), from the shocked price."""
        x = self.size / np.sqrt(open_usd * base_usd)  # pool coins once arbitraged to base
        amm = (x / (x + np.maximum(sold, -0.9 * x))) ** 2  # buys capped at 90 % of the pool
        linear = np.maximum(self.floor, 1.0 - sold * base_usd / self.size)
        return np.where(self.kind == _AMM, amm, np.where(self.kind == _LINEAR, linear, 1.0))


@dataclass(frozen=True, slots=True, eq=False)
class Market:
    """Pool prices (a root's: USD; a derived asset's: its peg) to USD prices and spots."""

    root: Index
    is_root: Bool
    u_root: Index  # (U,) root asset of each underlying, -1 none
    pool0: Float
    base: Float  # shocked pool prices
    spot0: Float
    open_usd: Float
    base_usd: Float
    pools: Pools
    route_to_root: bool

    @classmethod
    def of(
        cls,
        inputs: RiskInputs,
        cmap: CanonicalMap,
        move: Float,
        liquidity: tuple[Liquidity, ...],
        *,
        route_to_root: bool = True,
    ) -> Market:
        """Pools of ``inputs``' assets shocked by ``move`` (one per asset, on pool prices)."""
        is_root, root = cmap.is_root(), cmap.asset_canonical
        pool0 = np.where(is_root, inputs.asset_price_usd, cmap.peg)
        base = pool0 * (1.0 + move)
        return cls(
            root,
            is_root,
            cmap.underlying_root,
            pool0,
            base,
            inputs.spot_usd,
            inputs.asset_price_usd,
            base[root] * np.where(is_root, 1.0, base),
            Pools.of(liquidity, pool0.shape[0]),
            route_to_root,
        )

    def start(self, sold_eff: Float) -> Float:
        """Pool prices at the shocked level after the effective sales so far."""
        return np.asarray(self.base * self.pools.factor(sold_eff, self.open_usd, self.base_usd))

    def usd(self, pool: Float) -> Float:
        return np.asarray(pool[self.root] * np.where(self.is_root, 1.0, pool))

    def spot(self, pool: Float) -> Float:
        ratio, tied = np.ones(self.spot0.shape[0]), self.u_root >= 0
        ratio[tied] = pool[self.u_root[tied]] / self.pool0[self.u_root[tied]]
        return self.spot0 * ratio

    def next_pool(
        self, sold_eff: Float, sold: Float, perp_flow_u: Float, pool: Float
    ) -> tuple[Float, Float]:
        """Decay the effective sales, add this round's, price the pools: (sales, pools)."""
        n_a, tied = sold.shape[0], self.u_root >= 0
        flow = sold + _sum(self.u_root[tied], perp_flow_u[tied], n_a)
        if self.route_to_root:  # a derived asset's sale also sells its root (to reach USD)
            flow += _sum(self.root, np.where(self.is_root, 0.0, sold * pool), n_a)
        sold_eff = sold_eff * self.pools.decay + flow
        return sold_eff, self.base * self.pools.factor(sold_eff, self.open_usd, self.base_usd)
