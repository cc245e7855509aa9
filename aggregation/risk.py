"""Unified user risk on arrays: equity, Greeks, margin, lending health, distance to liquidation.

Concept: one snapshot of every user's positions on every chain and protocol, as flat numpy
arrays (:class:`RiskInputs`), turned into per-user risk (:class:`UnifiedRisk`) by
:func:`unified_risk` in one vectorised pass. A user holds *accounts*, each one
``(user, protocol, chain)`` as on chain: margin accounts (an options or a perps market's
options, perps and collateral; :mod:`aggregation.accounts`) and lending accounts
(supplies and borrows; :mod:`aggregation.lending`). Nothing is cross-margined on chain.

Two views of margin, both reported per user:

- **the protocol rule** (what the contracts do, per account; ``account_*`` fields): each
  margin account's equity against its maintenance under its own market's rates
  (``RiskInputs.rules``). This decides liquidation, so the distance to liquidation and the
  cascade (:mod:`aggregation.cascade`) use it. Per-user values are sums over the user's
  accounts; ``account_margin_ratio`` is the tightest account's.
- **portfolio margin** (RTRM's own risk measure, ``im_usd`` / ``mm_usd``): the user's
  whole book cross-margined on a scenario grid (Derive PMRM, Deribit, SPAN), or standard
  (isolated) margin for users flagged ``isolated`` -- what the book would need if one
  venue margined all of it.

Layout: every position book is sorted by user, with ``offsets[i]:offsets[i+1]`` the rows
of user ``i``, so one user's view (:func:`user_risk`, :meth:`RiskInputs.user_slice`) costs
O(that user's positions): after a new trade, recompute that user alone and write the row
back with :meth:`UnifiedRisk.set_user`. Options point into a table of unique contracts so
Black-76 runs once per contract, not per position; account sums group by account index.

Batch invariance: a user's row is the same bits whichever other users are in the batch
(the whole book, one user's slice, any subset), so a report assembled from one pass over
the book equals one computed from the user alone. Every per-user sum adds the same values
in the same order: ``np.bincount`` over books sorted by user (stable), scenario P&L as CSR
rows in position order (never a BLAS product, whose grouping depends on the shapes),
sums over underlyings left to right, cumulative sums restarted exactly per account
(:mod:`aggregation.margin`, :mod:`aggregation.accounts`); contract prices are elementwise;
minima and maxima over accounts are exact, with every zero made +0.0.

Definitions (USD unless stated):

- ``margin_equity = collateral x (1 - haircut) + options mark-to-market + perp P&L``
  (perp P&L = ``size x spot - open_notional + accrued funding``), cross-margined;
  ``margin_ratio = mm / margin_equity`` (portfolio view; >= 1 means short of margin).
- ``account_equity_usd`` / ``account_mm_usd`` / ``account_im_usd``: the protocol rule's
  equity (collateral after haircut + perp P&L; options are not marked) and requirements,
  summed over the user's margin accounts; ``liquidatable_accounts`` counts the user's
  accounts (margin and lending) that the contracts would liquidate now.
- ``equity = margin collateral + lending supplies - lending debt + options MTM + perp P&L``
  (raw values); ``collateral_haircut_usd`` counts margin collateral after haircut and
  supplies x liquidation threshold.
- Greeks per underlying are *spot* Greeks of everything the user holds: options (Black-76
  forward delta x e^(carry T)), perps, margin collateral and lending supplies minus borrows
  tied to the underlying, in coins (``delta_coin``) and USD; gamma per coin^2; vega per
  vol point; theta per calendar day.
- Distance to liquidation per underlying: the smallest move of that underlying alone, down
  (``liq_move_down``, in (-1, 0]) or up (``liq_move_up``, >= 0), that makes *any* of the
  user's accounts liquidatable: a margin account under the protocol rule or a lending
  account at HF < 1. Both are exact (piecewise linear and linear in the move; see
  :func:`aggregation.accounts.account_liquidation_moves` and ``lending.py``). 0: some
  account is liquidatable now; NaN: no move of that underlying alone liquidates anything.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregation.accounts import (
    AccountState,
    account_liquidation_moves,
    account_state,
    margin_accounts,
)
from aggregation.black76 import Greeks
from aggregation.books import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)
from aggregation.lending import (
    LendingBook,
    LendingParams,
    account_health,
    lending_accounts,
    lending_liquidation_moves,
)
from aggregation.margin import (
    MarginBook,
    MarginParams,
    StandardMarginParams,
    portfolio_margin,
    standard_margin,
    value_instruments,
)
from aggregation.scenarios import ScenarioGrid

__all__ = [
    "BorrowPositions",
    "Breakdown",
    "CollateralPositions",
    "OptionPositions",
    "PerpPositions",
    "RiskInputs",
    "SupplyPositions",
    "UnifiedRisk",
    "unified_risk",
    "user_risk",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
Bool = NDArray[np.bool_]


@dataclass(frozen=True, slots=True, eq=False)
class Breakdown:
    """Per (user, chain) or (user, protocol) amounts, each ``(n_users, n_keys)``, USD."""

    collateral_usd: Float  # margin collateral + lending supplies, raw
    debt_usd: Float
    options_mtm_usd: Float
    perp_pnl_usd: Float
    notional_usd: Float  # gross option + perp notional
    equity_usd: Float
    account_equity_usd: Float  # protocol rule: margin accounts' equity
    account_mm_usd: Float  # protocol rule: margin accounts' maintenance


@dataclass(frozen=True, slots=True, eq=False)
class UnifiedRisk:
    """Per-user risk: ``(n_users,)`` arrays, ``(n_users, U)`` per underlying (module doc)."""

    users: tuple[str, ...]
    equity_usd: Float
    collateral_usd: Float
    collateral_haircut_usd: Float
    debt_usd: Float
    options_mtm_usd: Float
    perp_pnl_usd: Float
    margin_equity_usd: Float
    im_usd: Float  # portfolio view (cross-margined, or standard if isolated)
    mm_usd: Float
    margin_ratio: Float
    account_equity_usd: Float  # protocol rule, summed over the user's margin accounts
    account_im_usd: Float
    account_mm_usd: Float
    account_margin_ratio: Float  # the tightest margin account's MM / equity (> 1: liquidatable)
    liquidatable_accounts: Index  # margin and lending accounts liquidatable now
    worst_loss_usd: Float
    worst_scenario: Index
    worst_underlying: Index
    health_factor: Float  # min over the user's lending accounts; inf without debt
    delta_coin: Float
    delta_usd: Float
    gamma: Float
    vega_per_vol_point: Float
    theta_per_day: Float
    liq_move_down: Float
    liq_move_up: Float
    distance_to_liquidation: Float  # min(-down, up)
    by_chain: Breakdown
    by_protocol: Breakdown
    pnl_usd: Float | None  # weighted scenario P&L (n_users, U, S), on request

    def set_user(self, user_index: int, one: UnifiedRisk) -> None:
        """Overwrite row ``user_index`` in place with the single-user result ``one``."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(one, f.name)
            if isinstance(mine, Breakdown):
                for g in fields(mine):
                    getattr(mine, g.name)[user_index] = getattr(theirs, g.name)[0]
            elif isinstance(mine, np.ndarray):
                mine[user_index] = theirs[0]


def _by_user(index: Index, values: Float, n: int) -> Float:
    return np.bincount(index, values, minlength=n).astype(np.float64, copy=False)


@dataclass(frozen=True, slots=True, eq=False)
class _Amounts:
    """Per-position USD amounts shared by the totals and the breakdowns."""

    option_mtm: Float
    option_notional: Float
    perp_pnl: Float
    perp_notional: Float
    collateral_value: Float
    supply_value: Float
    borrow_value: Float


def _breakdown(
    inputs: RiskInputs, key: str, n_keys: int, a: _Amounts, state: AccountState
) -> Breakdown:
    n = inputs.n_users * n_keys
    o, p, c, s, b = inputs._books()

    def total(book: Any, values: Float) -> Float:
        return _by_user(book.user * n_keys + getattr(book, key), values, n).reshape(-1, n_keys)

    collateral = total(c, a.collateral_value) + total(s, a.supply_value)
    debt, mtm, pnl = total(b, a.borrow_value), total(o, a.option_mtm), total(p, a.perp_pnl)
    notional = total(o, a.option_notional) + total(p, a.perp_notional)
    acc = state.accounts
    return Breakdown(
        collateral, debt, mtm, pnl, notional, collateral - debt + mtm + pnl,
        total(acc, state.equity_usd), total(acc, state.mm_usd),
    )  # fmt: skip


def _spot_greeks(
    inputs: RiskInputs, greeks: Greeks, growth: Float
) -> tuple[Float, Float, Float, Float]:
    """Delta (coins), gamma, vega and theta per (user, underlying), ``(n_users, U)``."""
    n_u, rows = inputs.n_underlyings, inputs.n_users * inputs.n_underlyings
    o, p, c, s, b = inputs._books()
    k, row = inputs.option_instrument, o.user * n_u + o.underlying
    g = growth[k]  # dF/dS = e^(carry T): forward Greeks -> spot Greeks
    delta = _by_user(row, o.size * greeks.delta[k] * g, rows)
    delta += _by_user(p.user * n_u + p.underlying, p.size, rows)
    price, tied_to = inputs.asset_price_usd, inputs.asset_underlying
    for book, sign in ((c, 1.0), (s, 1.0), (b, -1.0)):
        u = tied_to[book.asset]
        tied = u >= 0
        coins = sign * book.amount[tied] * price[book.asset[tied]] / inputs.spot_usd[u[tied]]
        delta += _by_user(book.user[tied] * n_u + u[tied], coins, rows)
    gamma = _by_user(row, o.size * greeks.gamma[k] * g * g, rows)
    vega = _by_user(row, o.size * greeks.vega[k], rows)
    theta = _by_user(row, o.size * greeks.theta[k], rows)
    shape = (inputs.n_users, n_u)
    return delta.reshape(shape), gamma.reshape(shape), vega.reshape(shape), theta.reshape(shape)


def _lending(inputs: RiskInputs, params: LendingParams | None) -> tuple[Float, Float, Float, Float]:
    """Per user: the lowest HF over its lending accounts, the (down, up) moves per
    underlying that first make one of them liquidatable (exact, see ``lending.py``), and
    how many are liquidatable now."""
    n, n_u = inputs.n_users, inputs.n_underlyings
    s, b = inputs.supplies, inputs.borrows
    if s.user.shape[0] + b.user.shape[0] == 0:
        none = np.full((n, n_u), np.nan)
        return np.full(n, np.inf), none, none.copy(), np.zeros(n)
    acc = lending_accounts(
        (s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain), inputs.n_protocols,
        inputs.n_chains,
    )  # fmt: skip
    book = LendingBook(
        acc.user.shape[0], acc.supply_account, s.asset, s.amount, s.liquidation_threshold,
        s.ltv, s.liquidation_bonus, acc.borrow_account, b.asset, b.amount,
    )  # fmt: skip
    price = inputs.asset_price_usd
    health = account_health(book, price, params)
    down, up = lending_liquidation_moves(book, price, inputs.asset_underlying, n_u, health=health)
    hf = acc.per_user(health.health_factor, n, np.minimum)
    return (
        np.where(np.isnan(hf), np.inf, hf),
        acc.per_user(down, n, np.fmax),
        acc.per_user(up, n, np.fmin),
        _by_user(acc.user, health.liquidatable.astype(np.float64), n),
    )


def unified_risk(
    inputs: RiskInputs,
    grid: ScenarioGrid,
    *,
    margin_params: MarginParams | None = None,
    standard_params: StandardMarginParams | None = None,
    lending_params: LendingParams | None = None,
    return_pnl: bool = False,
    rate_annual: float = 0.0,
) -> UnifiedRisk:
    """Every user's unified risk in one vectorised pass (see the module docstring).

    ``rate_annual`` discounts Black-76 prices (0: crypto venues quote undiscounted
    forward prices).
    """
    n, n_u = inputs.n_users, inputs.n_underlyings
    spot, carry, price = inputs.spot_usd, inputs.carry_annual, inputs.asset_price_usd
    o, p, c, s, b = inputs._books()
    inst, k = inputs.instruments, inputs.option_instrument

    no_moves = np.empty(0)
    valuation = value_instruments(
        inst, spot, carry, grid, rate_annual=rate_annual, moves_down=no_moves, moves_up=no_moves
    )
    greeks = valuation.greeks
    a = _Amounts(
        option_mtm=o.size * greeks.price[k],
        option_notional=np.abs(o.size) * spot[o.underlying],
        perp_pnl=p.size * spot[p.underlying] - p.open_notional_usd + p.funding_usd,
        perp_notional=np.abs(p.size) * spot[p.underlying],
        collateral_value=c.amount * price[c.asset],
        supply_value=s.amount * price[s.asset],
        borrow_value=b.amount * price[b.asset],
    )
    haircut_value = a.collateral_value * (1.0 - c.haircut)
    options_mtm, perp_pnl = _by_user(o.user, a.option_mtm, n), _by_user(p.user, a.perp_pnl, n)
    margin_collateral = _by_user(c.user, a.collateral_value, n)
    supplies, debt = _by_user(s.user, a.supply_value, n), _by_user(b.user, a.borrow_value, n)
    margin_equity = _by_user(c.user, haircut_value, n) + options_mtm + perp_pnl

    book = MarginBook(
        n, n_u, inst, o.user, k, o.size, p.user, p.underlying, p.size,
        c.user, inputs.asset_underlying[c.asset], haircut_value,
    )  # fmt: skip
    pm = portfolio_margin(book, valuation, margin_params, return_pnl=return_pnl)
    iso = inputs.isolated
    im, mm = pm.im_usd, pm.mm_usd
    if iso.any():
        sm = standard_margin(book, valuation, standard_params)
        im, mm = np.where(iso, sm.im_usd, im), np.where(iso, sm.mm_usd, mm)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mm <= 0.0, 0.0, np.where(margin_equity > 0.0, mm / margin_equity, np.inf))

    accounts = margin_accounts(inputs)
    state = account_state(inputs, accounts)
    a_down, a_up = account_liquidation_moves(inputs, state)
    hf, l_down, l_up, l_count = _lending(inputs, lending_params)
    # min / max over a user's accounts: + 0.0 makes every zero +0.0, as the order in which
    # a reduction meets 0.0 and -0.0 (which it may return) depends on the batch
    down = np.fmax(accounts.per_user(a_down, n, np.fmax), l_down) + 0.0
    up = np.fmin(accounts.per_user(a_up, n, np.fmin), l_up) + 0.0
    a_ratio = accounts.per_user(state.margin_ratio, n, np.fmax) + 0.0
    a_count = _by_user(accounts.user, state.liquidatable.astype(np.float64), n) + l_count
    delta, gamma, vega, theta = _spot_greeks(inputs, greeks, valuation.growth)
    return UnifiedRisk(
        users=inputs.users,
        equity_usd=margin_collateral + supplies - debt + options_mtm + perp_pnl,
        collateral_usd=margin_collateral + supplies,
        collateral_haircut_usd=_by_user(c.user, haircut_value, n)
        + _by_user(s.user, a.supply_value * s.liquidation_threshold, n),
        debt_usd=debt,
        options_mtm_usd=options_mtm,
        perp_pnl_usd=perp_pnl,
        margin_equity_usd=margin_equity,
        im_usd=im,
        mm_usd=mm,
        margin_ratio=ratio,
        account_equity_usd=_by_user(accounts.user, state.equity_usd, n),
        account_im_usd=_by_user(accounts.user, state.im_usd, n),
        account_mm_usd=_by_user(accounts.user, state.mm_usd, n),
        account_margin_ratio=np.where(np.isnan(a_ratio), 0.0, a_ratio),
        liquidatable_accounts=np.rint(a_count).astype(np.intp),
        worst_loss_usd=pm.worst_loss_usd,
        worst_scenario=pm.worst_scenario,
        worst_underlying=pm.worst_underlying,
        health_factor=hf + 0.0,
        delta_coin=delta,
        delta_usd=delta * spot,
        gamma=gamma,
        vega_per_vol_point=vega,
        theta_per_day=theta,
        liq_move_down=down,
        liq_move_up=up,
        distance_to_liquidation=np.fmin(0.0 - down, up),
        by_chain=_breakdown(inputs, "chain", inputs.n_chains, a, state),
        by_protocol=_breakdown(inputs, "protocol", inputs.n_protocols, a, state),
        pnl_usd=pm.pnl_usd,
    )


def user_risk(
    inputs: RiskInputs, user_index: int, grid: ScenarioGrid, **options: Any
) -> UnifiedRisk:
    """One user's risk from that user's positions only (a one-row :class:`UnifiedRisk`).

    O(the user's positions): use it after a trade, then ``full.set_user(i, result)``.
    ``options`` are passed to :func:`unified_risk`.
    """
    return unified_risk(inputs.user_slice(user_index), grid, **options)
