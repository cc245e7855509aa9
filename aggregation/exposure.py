"""Systemic exposure per canonical asset: roll-up, concentration and the liquidation ladder.

Concept: every asset rolls up to one *canonical* (root) asset: wrapped, bridged and
liquid-staked tokens and vault shares roll up to what they are a claim on (wstETH and
rvETH to ETH, USDC.e to USDC; see ARCHITECTURE.md, "Assets"). :class:`CanonicalMap`
holds that map as arrays. ``asset_canonical[a]`` is the asset index of ``a``'s root (a
root maps to itself), and ``peg[a] = price[a] / price[root]`` is how many root coins one
unit of ``a`` is worth (1.18 for wstETH, 1 for a root).

:func:`asset_exposure` sums, per root asset and per (protocol, chain), the collateral
(margin collateral plus lending supplies), the debt, the option delta (Black-76 spot
delta) and the perp delta, in root coins and in USD. It also measures how concentrated the
holders are: the Herfindahl-Hirschman index over users, and the top-N holders with their
shares.

:func:`liquidation_ladder` asks, for each root asset and each price level
``price x (1 + m)`` on a grid of moves ``m``: how much collateral sits in accounts that are
liquidatable at that level? All variants of the root move with it at their pegs;
everything else stays fixed. Lending accounts are exact: HF is linear in ``m`` (see
``lending.py``), and an account counts at *every* level where ``HF < 1``, not only where
it first crosses. Margin accounts -- one per (user, protocol, chain), under the protocol
rule of :mod:`aggregation.accounts` -- count at every level beyond their first
liquidation move (:func:`aggregation.accounts.account_liquidation_moves`, exact). That is
exact too, because the rule is concave in ``m`` (its liquidatable moves lie beyond the
first ones), except where a short put's requirement reaches its cap (the strike): such an
account could recover further out and is still counted.

Invariants: a root's coin amounts are sums of ``amount x peg``; USD = coins x root price
(the underlying's spot for derivatives); the ladder at ``m = 0`` is the collateral of the
accounts liquidatable today; HHI lies in ``[1/n_holders, 1]`` (0 without holders).
Units: coins of the root asset (``_coin``), USD (``_usd``), moves as fractions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregation.accounts import account_liquidation_moves, account_state
from aggregation.black76 import black76
from aggregation.books import RiskInputs
from aggregation.exceptions import InvalidParamsError, InvalidRiskInputsError
from aggregation.lending import lending_accounts

__all__ = [
    "LADDER_MOVES",
    "AssetExposure",
    "CanonicalMap",
    "Concentration",
    "LiquidationLadder",
    "asset_exposure",
    "ladder_moves",
    "liquidation_ladder",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]


def ladder_moves(low: float = -0.90, high: float = 2.00, step: float = 0.05) -> Float:
    """Price levels as moves ``low, low + step, ..., high`` (fractions; 0 included if on grid)."""
    if not (-1.0 < low < high) or step <= 0.0:
        raise InvalidParamsError(f"ladder moves need -1 < low < high and step > 0, got "
                                 f"low={low}, high={high}, step={step}")  # fmt: skip
    n = round((high - low) / step)
    return np.round(low + step * np.arange(n + 1), 12)


LADDER_MOVES = ladder_moves()
"""Default ladder: -90 % to +200 % in 5 % steps (59 levels)."""
LADDER_MOVES.flags.writeable = False


@dataclass(frozen=True, slots=True, eq=False)
class CanonicalMap:
    """Asset -> root asset, with pegs and each underlying's root (build it with :meth:`of`)."""

    asset_canonical: Index  # (A,) asset index of each asset's root
    roots: Index  # (K,) the root assets, ascending
    asset_slot: Index  # (A,) position of each asset's root in ``roots``
    underlying_root: Index  # (U,) root asset of each underlying, -1 if none
    underlying_slot: Index  # (U,) its position in ``roots``, -1 if none
    peg: Float  # (A,) root coins per unit: price / root price

    @property
    def n_roots(self) -> int:
        return int(self.roots.shape[0])

    def is_root(self) -> NDArray[np.bool_]:
        return np.asarray(self.asset_canonical == np.arange(self.asset_canonical.shape[0]))

    @classmethod
    def of(cls, inputs: RiskInputs, asset_canonical: CanonicalMap | ArrayLike) -> CanonicalMap:
        """Validate ``asset_canonical`` against ``inputs`` and derive the rest (a map
        already built is returned as it is)."""
        if isinstance(asset_canonical, CanonicalMap):
            return asset_canonical
        canon = np.asarray(asset_canonical, dtype=np.intp)
        price, tied = inputs.asset_price_usd, inputs.asset_underlying
        n_a = price.shape[0]
        if canon.shape != (n_a,):
            raise InvalidRiskInputsError(
                f"asset_canonical has shape {canon.shape}; expected ({n_a},), one root per asset"
            )
        if n_a and (canon.min() < 0 or canon.max() >= n_a):
            raise InvalidRiskInputsError(f"asset_canonical holds indices outside 0..{n_a - 1}")
        if (bad := np.flatnonzero(canon[canon] != canon)).size:
            a = int(bad[0])
            raise InvalidRiskInputsError(
                f"asset {a} rolls up to asset {canon[a]}, which is not a root (it rolls up to "
                f"{canon[canon[a]]}); map every asset straight to its root"
            )
        if not (price > 0.0).all():
            raise InvalidRiskInputsError("asset prices must be > 0 to derive pegs")
        if (bad := np.flatnonzero(tied != tied[canon])).size:
            a = int(bad[0])
            raise InvalidRiskInputsError(
                f"asset {a} is tied to underlying {tied[a]} but its root {canon[a]} to "
                f"{tied[canon[a]]}; a variant must share its root's underlying"
            )
        roots = np.flatnonzero(canon == np.arange(n_a)).astype(np.intp)
        tied_roots = roots[tied[roots] >= 0]
        if np.unique(tied[tied_roots]).size != tied_roots.size:
            raise InvalidRiskInputsError("two root assets are tied to the same underlying")
        underlying_root = np.full(inputs.n_underlyings, -1, dtype=np.intp)
        underlying_root[tied[tied_roots]] = tied_roots
        slot = np.searchsorted(roots, canon).astype(np.intp)
        u_slot = np.where(underlying_root >= 0, np.searchsorted(roots, underlying_root), -1)
        return cls(
            canon, roots, slot, underlying_root, u_slot.astype(np.intp), price / price[canon]
        )

    def require_underlyings(self, inputs: RiskInputs) -> None:
        """Every underlying that an option or perp refers to must have a root asset."""
        used = np.union1d(inputs.instruments.underlying, inputs.perps.underlying)
        if (missing := used[self.underlying_root[used.astype(np.intp)] < 0]).size:
            raise InvalidRiskInputsError(
                f"underlying {int(missing[0])} has options or perps but no root asset; add "
                "the asset it prices (asset_underlying == that index) as its own root"
            )


def _sum(index: Index, weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


@dataclass(frozen=True, slots=True, eq=False)
class Concentration:
    """How concentrated each root's holders are, ``basis`` USD per (user, root).

    ``top_user[k]`` are user indices in decreasing holding order (ties: lower index first),
    padded with -1; ``top_share`` their shares of the root's total.
    """

    basis: str
    total_usd: Float  # (K,)
    hhi: Float  # (K,) sum of squared shares
    effective_holders: Float  # (K,) 1 / hhi (0 without holders)
    n_holders: Index  # (K,)
    top_user: Index  # (K, N)
    top_share: Float  # (K, N)


@dataclass(frozen=True, slots=True, eq=False)
class AssetExposure:
    """Exposure per root asset ``roots[k]``; ``(K, n_protocols, n_chains)`` unless stated."""

    roots: Index
    price_usd: Float  # (K,)
    collateral_coin: Float
    collateral_usd: Float
    debt_coin: Float
    debt_usd: Float
    options_delta_coin: Float
    options_delta_usd: Float
    perps_delta_coin: Float
    perps_delta_usd: Float
    asset_collateral_usd: Float  # (A,) per variant, before roll-up
    asset_debt_usd: Float  # (A,)
    concentration: Concentration

    @property
    def net_delta_coin(self) -> Float:
        """(K,) collateral - debt + options + perps, summed over protocols and chains."""
        net = self.collateral_coin - self.debt_coin + self.options_delta_coin
        return np.asarray((net + self.perps_delta_coin).sum(axis=(1, 2)))


Basis = Literal["collateral", "debt", "gross"]


def asset_exposure(
    inputs: RiskInputs,
    canonical: CanonicalMap | ArrayLike,
    *,
    top_n: int = 10,
    basis: Basis = "collateral",
    rate_annual: float = 0.0,
) -> AssetExposure:
    """Exposure per root asset, protocol and chain, plus holder concentration on ``basis``.

    ``basis``: which USD amount per (user, root) is concentrated: collateral, debt, or
    gross = collateral + debt + |option delta| + |perp delta| (deltas netted per user).
    """
    cmap = CanonicalMap.of(inputs, canonical)
    cmap.require_underlyings(inputs)
    k_roots, n_p, n_c = cmap.n_roots, inputs.n_protocols, inputs.n_chains
    size, shape = k_roots * n_p * n_c, (k_roots, n_p, n_c)
    price, peg, slot = inputs.asset_price_usd, cmap.peg, cmap.asset_slot
    o, p, c, s, b = inputs.options, inputs.perps, inputs.collateral, inputs.supplies, inputs.borrows

    def cube(k: Index, protocol: Index, chain: Index, values: Float) -> Float:
        return _sum((k * n_p + protocol) * n_c + chain, values, size).reshape(shape)

    def held(asset: Index, protocol: Index, chain: Index, amount: Float) -> tuple[Float, Float]:
        k = slot[asset]
        return cube(k, protocol, chain, amount * peg[asset]), cube(
            k, protocol, chain, amount * price[asset]
        )

    coll_coin, coll_usd = held(c.asset, c.protocol, c.chain, c.amount)
    sup_coin, sup_usd = held(s.asset, s.protocol, s.chain, s.amount)
    debt_coin, debt_usd = held(b.asset, b.protocol, b.chain, b.amount)
    opt_coin = _option_delta_coin(inputs, rate_annual)
    spot_o, spot_p = inputs.spot_usd[o.underlying], inputs.spot_usd[p.underlying]
    ok, pk = cmap.underlying_slot[o.underlying], cmap.underlying_slot[p.underlying]
    n_a = price.shape[0]
    a_coll = _sum(c.asset, c.amount * price[c.asset], n_a) + _sum(
        s.asset, s.amount * price[s.asset], n_a
    )
    holdings = _holdings(inputs, cmap, basis, opt_coin * spot_o)
    return AssetExposure(
        roots=cmap.roots,
        price_usd=price[cmap.roots],
        collateral_coin=coll_coin + sup_coin,
        collateral_usd=coll_usd + sup_usd,
        debt_coin=debt_coin,
        debt_usd=debt_usd,
        options_delta_coin=cube(ok, o.protocol, o.chain, opt_coin),
        options_delta_usd=cube(ok, o.protocol, o.chain, opt_coin * spot_o),
        perps_delta_coin=cube(pk, p.protocol, p.chain, p.size),
        perps_delta_usd=cube(pk, p.protocol, p.chain, p.size * spot_p),
        asset_collateral_usd=a_coll,
        asset_debt_usd=_sum(b.asset, b.amount * price[b.asset], n_a),
        concentration=_concentration(holdings, basis, top_n),
    )


def _option_delta_coin(inputs: RiskInputs, rate_annual: float) -> Float:
    """Spot delta of every option position, in coins of its underlying."""
    inst, k = inputs.instruments, inputs.option_instrument
    growth = np.exp(inputs.carry_annual[inst.underlying] * inst.expiry_years)
    forward = inputs.spot_usd[inst.underlying] * growth
    g = black76(forward, inst.strike_usd, inst.expiry_years, inst.vol_annual, rate_annual,
                inst.is_call)  # fmt: skip
    return np.asarray(inputs.options.size * (g.delta * growth)[k], dtype=np.float64)


def _holdings(inputs: RiskInputs, cmap: CanonicalMap, basis: str, opt_usd: Float) -> Float:
    """USD per (user, root) on ``basis``, ``(n_users, K)``, negative parts clipped to 0."""
    n, k_roots = inputs.n_users, cmap.n_roots
    price, slot, size = inputs.asset_price_usd, cmap.asset_slot, inputs.n_users * cmap.n_roots

    def per_user(user: Index, k: Index, values: Float) -> Float:
        return _sum(user * k_roots + k, values, size).reshape(n, k_roots)

    c, s, b, o, p = inputs.collateral, inputs.supplies, inputs.borrows, inputs.options, inputs.perps
    collateral = per_user(c.user, slot[c.asset], c.amount * price[c.asset])
    collateral += per_user(s.user, slot[s.asset], s.amount * price[s.asset])
    debt = per_user(b.user, slot[b.asset], b.amount * price[b.asset])
    if basis == "collateral":
        out = collateral
    elif basis == "debt":
        out = debt
    elif basis == "gross":
        opt = per_user(o.user, cmap.underlying_slot[o.underlying], opt_usd)
        perp = per_user(
            p.user, cmap.underlying_slot[p.underlying], p.size * inputs.spot_usd[p.underlying]
        )
        out = collateral + debt + np.abs(opt) + np.abs(perp)
    else:
        raise InvalidParamsError(f"basis {basis!r}: expected 'collateral', 'debt' or 'gross'")
    return np.maximum(out, 0.0)


def _concentration(holdings: Float, basis: str, top_n: int) -> Concentration:
    if top_n < 1:
        raise InvalidParamsError(f"top_n must be >= 1, got {top_n}")
    total = holdings.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0.0, holdings / total, 0.0)
        hhi = (share * share).sum(axis=0)
        effective = np.where(hhi > 0.0, 1.0 / hhi, 0.0)
    order = np.argsort(-holdings, axis=0, kind="stable")[:top_n].T  # (K, <=N)
    top_share = np.take_along_axis(share.T, order, axis=1)
    top_user = np.where(top_share > 0.0, order, -1)
    pad = top_n - order.shape[1]
    if pad > 0:
        top_user = np.pad(top_user, ((0, 0), (0, pad)), constant_values=-1)
        top_share = np.pad(top_share, ((0, 0), (0, pad)))
    return Concentration(basis, total, hhi, effective, (holdings > 0.0).sum(axis=0),
                         top_user.astype(np.intp), top_share)  # fmt: skip


@dataclass(frozen=True, slots=True, eq=False)
class LiquidationLadder:
    """Collateral liquidatable per root ``roots[k]`` at each level ``moves[l]``: ``(K, L)``.

    ``collateral_usd``: all collateral of the accounts liquidatable at that level, valued
    at that level; ``collateral_coin``: the part that is the root or its variants, in root
    coins (what liquidators would sell into that market); ``margin_collateral_usd``: the
    part held by margin accounts; ``debt_usd``: the lending debt of those accounts;
    ``accounts``: how many accounts (lending and margin) are liquidatable.
    """

    roots: Index
    moves: Float
    price_usd: Float
    collateral_usd: Float
    collateral_coin: Float
    margin_collateral_usd: Float
    debt_usd: Float
    accounts: Index


def _count(lo: Float, hi: Float, a: Float, b: Float, moves: Float) -> Float:
    """Sum of ``a + m b`` over rows liquidatable at each level: ``m < lo`` or ``m > hi``."""
    n_levels = moves.shape[0]
    below = np.searchsorted(moves, lo, side="left")  # rows count at levels [0, below)
    above = np.searchsorted(moves, hi, side="right")  # and at levels [above, L)
    out = np.zeros(n_levels)
    for weights, scale in ((a, 1.0), (b, moves)):
        down = np.cumsum(np.bincount(below, weights, minlength=n_levels + 1)[::-1])[::-1][1:]
        up = np.cumsum(np.bincount(above, weights, minlength=n_levels + 1))[:n_levels]
        out += (down + up) * scale
    return out


def liquidation_ladder(
    inputs: RiskInputs,
    canonical: CanonicalMap | ArrayLike,
    *,
    moves: ArrayLike = LADDER_MOVES,
    include_margin: bool = True,
) -> LiquidationLadder:
    """The liquidation ladder of every root asset over ``moves`` (sorted, > -1).

    ``include_margin=False`` leaves the margin accounts out (lending only).
    """
    cmap = CanonicalMap.of(inputs, canonical)
    levels = np.asarray(moves, dtype=np.float64)
    if levels.ndim != 1 or not (levels > -1.0).all() or (np.diff(levels) <= 0.0).any():
        raise InvalidParamsError("ladder moves must be a 1-d increasing array of moves > -1")
    k_roots, n_l = cmap.n_roots, levels.shape[0]
    rows = _lending_rows(inputs, cmap)
    if include_margin and inputs.n_users:
        cmap.require_underlyings(inputs)
        margin = _margin_rows(inputs, cmap)
        rows = [np.concatenate(pair, axis=0) for pair in zip(rows, margin, strict=True)]
    lo, hi, value, value_k, coin_k, debt, debt_k, is_margin = rows
    out = np.zeros((6, k_roots, n_l))
    ones = np.ones(lo.shape[0])
    for k in range(k_roots):  # a handful of roots: vectorised over accounts inside
        lo_k, hi_k, zero = lo[:, k], hi[:, k], np.zeros_like(ones)
        out[0, k] = _count(lo_k, hi_k, value, value_k[:, k], levels)
        out[1, k] = _count(lo_k, hi_k, coin_k[:, k], zero, levels)
        out[2, k] = _count(lo_k, hi_k, value * is_margin, value_k[:, k] * is_margin, levels)
        out[3, k] = _count(lo_k, hi_k, debt, debt_k[:, k], levels)
        out[4, k] = _count(lo_k, hi_k, ones, zero, levels)
    root_price = inputs.asset_price_usd[cmap.roots]
    return LiquidationLadder(
        cmap.roots, levels, root_price[:, None] * (1.0 + levels), out[0], out[1], out[2],
        out[3], np.rint(out[4]).astype(np.intp),
    )  # fmt: skip


def _lending_rows(inputs: RiskInputs, cmap: CanonicalMap) -> list[Float]:
    """Per lending account: thresholds ``(lo, hi)`` per root and the values to sum."""
    s, b, k_roots = inputs.supplies, inputs.borrows, cmap.n_roots
    acc = lending_accounts((s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain),
                           inputs.n_protocols, inputs.n_chains)  # fmt: skip
    n = acc.user.shape[0]
    price, slot = inputs.asset_price_usd, cmap.asset_slot
    s_val, b_val = s.amount * price[s.asset], b.amount * price[b.asset]
    s_key = acc.supply_account * k_roots + slot[s.asset]
    b_key = acc.borrow_account * k_roots + slot[b.asset]

    def grid(key: Index, values: Float) -> Float:
        return _sum(key, values, n * k_roots).reshape(n, k_roots)

    value_k, adj_k = grid(s_key, s_val), grid(s_key, s_val * s.liquidation_threshold)
    coin_k, debt_k = grid(s_key, s.amount * cmap.peg[s.asset]), grid(b_key, b_val)
    value, adj, debt = value_k.sum(1), adj_k.sum(1), debt_k.sum(1)
    cushion, slope = (adj - debt)[:, None], adj_k - debt_k  # liquidatable: cushion + m slope < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        root = -cushion / slope
    inf = np.full_like(root, np.inf)
    already = (slope == 0.0) & (cushion < 0.0)
    lo = np.where(slope > 0.0, root, np.where(already, inf, -inf))
    hi = np.where(slope < 0.0, root, inf)
    no_debt = (debt <= 0.0)[:, None]
    lo, hi = np.where(no_debt, -inf, lo), np.where(no_debt, inf, hi)
    return [lo, hi, value, value_k, coin_k, debt, debt_k, np.zeros(n)]


def _margin_rows(inputs: RiskInputs, cmap: CanonicalMap) -> list[Float]:
    """Per margin account: first liquidation moves per root and the values to sum."""
    k_roots = cmap.n_roots
    state = account_state(inputs)
    acc = state.accounts
    n = acc.n_accounts
    down, up = account_liquidation_moves(inputs, state)
    inf = np.inf
    lo, hi = np.full((n, k_roots), -inf), np.full((n, k_roots), inf)
    tied = cmap.underlying_slot >= 0
    k_of_u = cmap.underlying_slot[tied]
    d, u = down[:, tied], up[:, tied]
    already = state.liquidatable[:, None]  # a root of 0 at equity == MM is one side only
    lo[:, k_of_u] = np.where(already, inf, np.where(np.isnan(d), -inf, d))
    hi[:, k_of_u] = np.where(already, inf, np.where(np.isnan(u), inf, u))
    c = inputs.collateral
    key = acc.collateral_account * k_roots + cmap.asset_slot[c.asset]
    value = c.amount * inputs.asset_price_usd[c.asset]
    value_k = _sum(key, value, n * k_roots).reshape(n, k_roots)
    coin_k = _sum(key, c.amount * cmap.peg[c.asset], n * k_roots).reshape(n, k_roots)
    zeros = np.zeros((n, k_roots))
    return [lo, hi, value_k.sum(1), value_k, coin_k, np.zeros(n), zeros, np.ones(n)]
