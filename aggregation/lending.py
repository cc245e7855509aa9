"""Lending health, Aave-v3 style: health factor, close factor, seizure, liquidation prices.

Concept: a lending *account* is one (user, protocol, chain) (:func:`lending_accounts`
numbers them); its supplies are collateral and its borrows are debt (REFERENCES.md s4)::

    HF = sum(collateral_amount x price x liquidation_threshold) / sum(debt_amount x price)

``HF = inf`` without debt; the account is liquidatable when ``HF < 1``. A liquidator may
repay up to ``close_factor`` of a debt position: 50 %, or 100 % when ``HF <= 0.95`` or the
account is dust (its collateral or its debt below $2,000 -- Aave v3.3 applies the dust rule
to the reserves being liquidated; we apply it to the account totals). Collateral seized =
repaid amount x debt price / collateral price x liquidation bonus (e.g. 1.05), capped by the
collateral available (the repayment then shrinks to match).

Liquidation price of a supplied asset: the price at which the account's HF reaches exactly
1 with every other price held fixed. The asset may also be borrowed in the same account
(both sides then move)::

    p* = (D_other - C_other) / (A_coll x LT - A_debt)

``NaN`` when that price never comes (no debt, ``p* <= 0``, or HF independent of the
price). Whether ``p*`` is below or above today's price tells the direction. Liquidation
*moves* per underlying (all assets of one underlying move together) are exact in closed
form, because HF < 1 is linear in the move: ``C0 - D0 + m (C_u - D_u) < 0``.

Units: amounts in float token units, prices in USD, values ``_usd``; thresholds, LTVs and
bonuses as fractions (0.825, 0.80, 1.05). Pure numpy, vectorised over positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AccountHealth",
    "LendingAccounts",
    "LendingBook",
    "LendingParams",
    "account_health",
    "collateral_seized",
    "lending_accounts",
    "lending_liquidation_moves",
    "liquidation_prices",
    "max_repay_amount",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class LendingParams:
    """Aave v3 liquidation rules (REFERENCES.md section 4)."""

    close_factor: float = 0.5
    full_close_health: float = 0.95
    dust_usd: float = 2_000.0


@dataclass(frozen=True, slots=True, eq=False)
class LendingBook:
    """Supplies and borrows as flat arrays; ``*_account`` index accounts ``0..n_accounts-1``.

    ``*_asset`` index the caller's price array; ``liquidation_threshold``, ``ltv`` and
    ``liquidation_bonus`` belong to each supply (the collateral asset's reserve settings).
    """

    n_accounts: int
    supply_account: Index
    supply_asset: Index
    supply_amount: Float
    liquidation_threshold: Float
    ltv: Float
    liquidation_bonus: Float
    borrow_account: Index
    borrow_asset: Index
    borrow_amount: Float


@dataclass(frozen=True, slots=True, eq=False)
class AccountHealth:
    """Per-account health, shape ``(n_accounts,)`` each."""

    collateral_usd: Float
    collateral_adjusted_usd: Float  # x liquidation threshold: the HF numerator
    borrowing_power_usd: Float  # x LTV: the most the account may borrow
    debt_usd: Float
    health_factor: Float  # inf without debt
    liquidatable: NDArray[np.bool_]
    close_factor: Float  # 0 when not liquidatable


@dataclass(frozen=True, slots=True, eq=False)
class LendingAccounts:
    """Accounts of positions keyed by (user, protocol, chain), numbered in user order."""

    user: Index  # (n_accounts,): the user owning each account, non-decreasing
    supply_account: Index
    borrow_account: Index

    def per_user(self, values: Float, n_users: int, ufunc: np.ufunc) -> Float:
        """Reduce per-account rows to per-user rows (``ufunc`` e.g. ``np.fmin``); NaN if none."""
        out = np.full((n_users, *values.shape[1:]), np.nan)
        if values.shape[0] and n_users == 1:  # one user's view: a plain reduction
            out[0] = ufunc.reduce(values, axis=0)
        elif values.shape[0]:
            starts = np.flatnonzero(np.r_[True, self.user[1:] != self.user[:-1]])
            out[self.user[starts]] = ufunc.reduceat(values, starts, axis=0)
        return out


def lending_accounts(
    supply_key: tuple[Index, Index, Index],
    borrow_key: tuple[Index, Index, Index],
    n_protocols: int,
    n_chains: int,
) -> LendingAccounts:
    """Number the accounts of supplies and borrows keyed ``(user, protocol, chain)``."""
    n_pc = n_protocols * n_chains
    s_key = supply_key[0] * n_pc + supply_key[1] * n_chains + supply_key[2]
    b_key = borrow_key[0] * n_pc + borrow_key[1] * n_chains + borrow_key[2]
    # user is the major key, so accounts come out sorted by user
    keys, account = np.unique(np.concatenate([s_key, b_key]), return_inverse=True)
    n_s = s_key.shape[0]
    return LendingAccounts((keys // n_pc).astype(np.intp), account[:n_s], account[n_s:])


def _sum(account: Index, weights: Float, n: int) -> Float:
    return np.bincount(account, weights=weights, minlength=n).astype(np.float64, copy=False)


def account_health(
    book: LendingBook, price_usd: Float, params: LendingParams | None = None
) -> AccountHealth:
    """Health factor, liquidatability and close factor of every account."""
    p = params or LendingParams()
    n = book.n_accounts
    supply_usd = book.supply_amount * price_usd[book.supply_asset]
    collateral = _sum(book.supply_account, supply_usd, n)
    adjusted = _sum(book.supply_account, supply_usd * book.liquidation_threshold, n)
    power = _sum(book.supply_account, supply_usd * book.ltv, n)
    debt = _sum(book.borrow_account, book.borrow_amount * price_usd[book.borrow_asset], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        hf = np.where(debt > 0.0, adjusted / debt, np.inf)
    liquidatable = hf < 1.0
    full = (hf <= p.full_close_health) | (debt < p.dust_usd) | (collateral < p.dust_usd)
    close = np.where(liquidatable, np.where(full, 1.0, p.close_factor), 0.0)
    return AccountHealth(collateral, adjusted, power, debt, hf, liquidatable, close)


def max_repay_amount(book: LendingBook, health: AccountHealth) -> Float:
    """Most a liquidator may repay of each borrow position (token units; 0 if healthy)."""
    return health.close_factor[book.borrow_account] * book.borrow_amount


def collateral_seized(
    repay_amount: Float,
    debt_price_usd: Float,
    collateral_price_usd: Float,
    liquidation_bonus: Float,
    collateral_available: Float | None = None,
) -> tuple[Float, Float]:
    """``(seized collateral amount, repaid debt amount)`` for one liquidation call each.

    ``seized = repaid x debt_price / collateral_price x bonus``; when that exceeds the
    collateral available, everything available is seized and the repayment shrinks.
    """
    seized = repay_amount * debt_price_usd / collateral_price_usd * liquidation_bonus
    if collateral_available is None:
        return seized, np.asarray(repay_amount, dtype=np.float64)
    capped = np.minimum(seized, collateral_available)
    repaid = np.where(
        seized > collateral_available,
        capped * collateral_price_usd / (debt_price_usd * liquidation_bonus),
        repay_amount,
    )
    return capped, repaid


def liquidation_prices(book: LendingBook, price_usd: Float) -> Float:
    """Price of each supply's asset at which its account's HF is exactly 1 (USD; NaN never).

    Every other asset's price is held fixed; when the same asset is also borrowed in the
    account, the debt moves with it. One value per supply position.
    """
    n_assets = price_usd.shape[0]
    supply_key = book.supply_account * n_assets + book.supply_asset
    borrow_key = book.borrow_account * n_assets + book.borrow_asset
    keys, inverse = np.unique(np.concatenate([supply_key, borrow_key]), return_inverse=True)
    n_supply = supply_key.shape[0]
    weighted_units = book.supply_amount * book.liquidation_threshold  # HF-units per $ of price
    coll_units = _sum(inverse[:n_supply], weighted_units, keys.shape[0])
    debt_units = _sum(inverse[n_supply:], book.borrow_amount, keys.shape[0])
    health = account_health(book, price_usd)
    key_account = keys // n_assets
    key_price = price_usd[keys % n_assets]
    c_other = health.collateral_adjusted_usd[key_account] - coll_units * key_price
    d_other = health.debt_usd[key_account] - debt_units * key_price
    denominator = coll_units - debt_units
    with np.errstate(divide="ignore", invalid="ignore"):
        price = (d_other - c_other) / denominator
    never = (health.debt_usd[key_account] <= 0.0) | (denominator == 0.0) | ~(price > 0.0)
    return np.where(never, np.nan, price)[inverse[:n_supply]]


def lending_liquidation_moves(
    book: LendingBook,
    price_usd: Float,
    asset_underlying: Index,
    n_underlyings: int,
    *,
    health: AccountHealth | None = None,
) -> tuple[Float, Float]:
    """Exact relative move of each underlying that first makes each account liquidatable.

    All assets mapped to underlying ``u`` (``asset_underlying[a] == u``; ``-1`` for assets
    tied to no underlying, e.g. stablecoins) move by the same fraction ``m``. Returns
    ``(down, up)``, each ``(n_accounts, U)``: ``-1 < down <= 0``, ``up >= 0``;
    0 when the account is liquidatable already, NaN when no such move exists.
    ``health``: the accounts' :func:`account_health` at ``price_usd`` if already known.
    """
    n = book.n_accounts
    health = health or account_health(book, price_usd)
    supply_u = asset_underlying[book.supply_asset]
    borrow_u = asset_underlying[book.borrow_asset]
    adjusted = book.supply_amount * price_usd[book.supply_asset] * book.liquidation_threshold
    debt = book.borrow_amount * price_usd[book.borrow_asset]
    s_in, b_in = supply_u >= 0, borrow_u >= 0
    size = n * n_underlyings
    key_s = book.supply_account[s_in] * n_underlyings + supply_u[s_in]
    key_b = book.borrow_account[b_in] * n_underlyings + borrow_u[b_in]
    # d(C - D)/dm per (account, underlying): the adjusted collateral minus the debt in u
    slope = _sum(key_s, adjusted[s_in], size) - _sum(key_b, debt[b_in], size)
    slope = slope.reshape(n, n_underlyings)
    cushion = (health.collateral_adjusted_usd - health.debt_usd)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        root = -cushion / slope
    has_debt = (health.debt_usd > 0.0)[:, None]
    down = np.where(has_debt & (slope > 0.0) & (root > -1.0), root, np.nan)
    up = np.where(has_debt & (slope < 0.0), root, np.nan)
    already = health.liquidatable[:, None]
    return np.where(already, 0.0, down), np.where(already, 0.0, up)
