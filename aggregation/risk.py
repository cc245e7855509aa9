"""Unified user risk on arrays: equity, Greeks, margin, lending health, distance to liquidation.

Concept: one snapshot of every user's positions on every chain and protocol, as flat numpy
arrays (:class:`RiskInputs`), turned into per-user risk (:class:`UnifiedRisk`) by
:func:`unified_risk` in one vectorised pass. A user has one cross-chain margin account
(options, perps, margin collateral; portfolio margin on a scenario grid, or isolated
standard margin) and any number of lending accounts, one per (protocol, chain).

Layout: every position book is sorted by user, with ``offsets[i]:offsets[i+1]`` the rows
of user ``i``, so one user's view (:func:`user_risk`, :meth:`RiskInputs.user_slice`) costs
O(that user's positions): after a new trade, recompute that user alone and write the row
back with :meth:`UnifiedRisk.set_user`. Options point into a table of unique contracts so
Black-76 runs once per contract, not per position.

Definitions (USD unless stated):

- ``margin_equity = collateral x (1 - haircut) + options mark-to-market + perp P&L``
  (perp P&L = ``size x spot - open_notional + accrued funding``); liquidatable when it is
  below ``mm_usd``; ``margin_ratio = mm / margin_equity`` (liquidation at >= 1).
- ``equity = margin collateral + lending supplies - lending debt + options MTM + perp P&L``
  (raw values); ``collateral_haircut_usd`` counts margin collateral after haircut and
  supplies x liquidation threshold.
- Greeks per underlying are *spot* Greeks of everything the user holds: options (Black-76
  forward delta x e^(carry T)), perps, margin collateral and lending supplies minus borrows
  tied to the underlying, in coins (``delta_coin``) and USD; gamma per coin^2; vega per
  vol point; theta per calendar day.
- Distance to liquidation per underlying: the smallest move of that underlying alone, down
  (``liq_move_down``, <= 0) or up (``liq_move_up``, >= 0), that makes the margin account
  fall below maintenance or any lending HF < 1. Lending roots are exact (HF is linear in the
  move); the margin root is bracketed on :data:`MOVES_DOWN` / :data:`MOVES_UP` (1 % steps to
  +-20 %, 2.5 % to +-50 %, then 5 % down to -95 % and -99 %, 10 % then 25 % up to +500 %)
  and interpolated (see :func:`aggregation.margin.margin_liquidation_moves` for the
  precision and the first-order requirement). NaN: no liquidation within the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from aggregation.black76 import Greeks
from aggregation.exceptions import InvalidRiskInputsError, UnknownUserError
from aggregation.lending import (
    LendingBook,
    LendingParams,
    account_health,
    lending_accounts,
    lending_liquidation_moves,
)
from aggregation.margin import (
    MOVES_DOWN,
    MOVES_UP,
    Instruments,
    MarginBook,
    MarginParams,
    StandardMarginParams,
    margin_liquidation_moves,
    portfolio_margin,
    standard_margin,
    value_instruments,
)
from aggregation.scenarios import ScenarioGrid

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

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
class OptionPositions:
    """European options; ``size`` signed units of the underlying (+ long)."""

    user: Index
    underlying: Index
    chain: Index
    protocol: Index
    size: Float
    strike_usd: Float
    expiry_years: Float
    is_call: Bool
    vol_annual: Float  # from the caller's vol surface, one per position


@dataclass(frozen=True, slots=True, eq=False)
class PerpPositions:
    """Linear perps; ``open_notional_usd`` = size x entry price (signed like size)."""

    user: Index
    underlying: Index
    chain: Index
    protocol: Index
    size: Float
    open_notional_usd: Float
    funding_usd: Float  # accrued, + received by the user


@dataclass(frozen=True, slots=True, eq=False)
class CollateralPositions:
    """Margin-account collateral; ``haircut`` is the fraction not counted (0.1 = 10 %)."""

    user: Index
    asset: Index
    chain: Index
    protocol: Index
    amount: Float
    haircut: Float


@dataclass(frozen=True, slots=True, eq=False)
class SupplyPositions:
    """Lending supplies (collateral) with the reserve's Aave-style settings."""

    user: Index
    asset: Index
    chain: Index
    protocol: Index
    amount: Float
    liquidation_threshold: Float
    ltv: Float
    liquidation_bonus: Float


@dataclass(frozen=True, slots=True, eq=False)
class BorrowPositions:
    """Lending borrows (debt)."""

    user: Index
    asset: Index
    chain: Index
    protocol: Index
    amount: Float


Book = TypeVar("Book", bound="DataclassInstance")


def _take(book: Book, rows: Any, **override: Index) -> Book:
    """The same book restricted to ``rows`` (a slice or an index array)."""
    names = book.__slots__  # type: ignore[attr-defined]  # slots=True dataclasses
    columns = (override[n] if n in override else getattr(book, n)[rows] for n in names)
    return cast(Book, cast(Any, type(book))(*columns))


def _by_user_order(book: Book) -> Book:
    return _take(book, np.argsort(getattr(book, "user"), kind="stable"))  # noqa: B009


def _concat(book: Book, extra: Book) -> Book:
    names = book.__slots__  # type: ignore[attr-defined]  # slots=True dataclasses
    columns = (np.concatenate([getattr(book, n), getattr(extra, n)]) for n in names)
    return cast(Book, cast(Any, type(book))(*columns))


def _offsets(user: Index, n_users: int) -> Index:
    return np.searchsorted(user, np.arange(n_users + 1)).astype(np.intp)


@dataclass(frozen=True, slots=True, eq=False)
class RiskInputs:
    """One snapshot as arrays, every book sorted by user (build it with :meth:`build`).

    Markets: ``spot_usd`` and ``carry_annual`` (forward = spot e^(carry T)) per underlying;
    ``asset_price_usd`` per asset and ``asset_underlying`` (-1: tied to no underlying, e.g.
    a stablecoin). ``instruments`` / ``option_instrument``: the unique option contracts.
    ``isolated[i]``: user ``i`` is margined isolated (standard margin), else cross.
    """

    users: tuple[str, ...]
    n_chains: int
    n_protocols: int
    spot_usd: Float
    carry_annual: Float
    asset_price_usd: Float
    asset_underlying: Index
    options: OptionPositions
    perps: PerpPositions
    collateral: CollateralPositions
    supplies: SupplyPositions
    borrows: BorrowPositions
    offsets: tuple[Index, ...]  # per book (options, perps, collateral, supplies, borrows)
    instruments: Instruments
    option_instrument: Index
    isolated: Bool

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_underlyings(self) -> int:
        return int(self.spot_usd.shape[0])

    @classmethod
    def build(
        cls,
        users: tuple[str, ...],
        *,
        spot_usd: Float,
        carry_annual: Float,
        asset_price_usd: Float,
        asset_underlying: Index,
        options: OptionPositions,
        perps: PerpPositions,
        collateral: CollateralPositions,
        supplies: SupplyPositions,
        borrows: BorrowPositions,
        n_chains: int = 1,
        n_protocols: int = 1,
        isolated: Bool | None = None,
        dedupe_instruments: bool = True,
    ) -> RiskInputs:
        """Validate, sort every book by user (stable) and index the option contracts."""
        n = len(users)
        books = (options, perps, collateral, supplies, borrows)
        for book in books:
            _check_book(book, n, n_chains, n_protocols)
        if spot_usd.shape != carry_annual.shape or asset_price_usd.shape != asset_underlying.shape:
            raise InvalidRiskInputsError("spot/carry and asset price/underlying shapes differ")
        o, p, c = _by_user_order(options), _by_user_order(perps), _by_user_order(collateral)
        s, b = _by_user_order(supplies), _by_user_order(borrows)
        if dedupe_instruments:
            instruments, inst = Instruments.unique(
                o.underlying, o.strike_usd, o.expiry_years, o.is_call, o.vol_annual
            )
        else:
            instruments = Instruments(
                o.underlying, o.strike_usd, o.expiry_years, o.is_call, o.vol_annual
            )
            inst = np.arange(o.user.shape[0], dtype=np.intp)
        return cls(
            users=users,
            n_chains=n_chains,
            n_protocols=n_protocols,
            spot_usd=spot_usd,
            carry_annual=carry_annual,
            asset_price_usd=asset_price_usd,
            asset_underlying=asset_underlying,
            options=o,
            perps=p,
            collateral=c,
            supplies=s,
            borrows=b,
            offsets=tuple(_offsets(x.user, n) for x in (o, p, c, s, b)),
            instruments=instruments,
            option_instrument=inst,
            isolated=np.zeros(n, dtype=np.bool_) if isolated is None else isolated,
        )

    def user_index(self, address: str) -> int:
        """Index of ``address`` (case-insensitive); :class:`UnknownUserError` if absent."""
        lowered = address.lower()
        for i, user in enumerate(self.users):
            if user.lower() == lowered:
                return i
        raise UnknownUserError(f"address {address} holds no position in this snapshot")

    def user_slice(self, user_index: int) -> RiskInputs:
        """A one-user snapshot of user ``user_index``: O(that user's positions)."""
        if not 0 <= user_index < self.n_users:
            raise UnknownUserError(f"user index {user_index} not in 0..{self.n_users - 1}")
        i = user_index
        books = [
            _take(
                book,
                slice(int(off[i]), int(off[i + 1])),
                user=np.zeros(off[i + 1] - off[i], np.intp),
            )
            for book, off in zip(self._books(), self.offsets, strict=True)
        ]
        offsets = [np.array([0, x.user.shape[0]], np.intp) for x in books]
        return replace(
            self._with_books(books, offsets, options_changed=True),
            users=(self.users[i],),
            isolated=self.isolated[i : i + 1],
        )

    def append(
        self,
        *,
        options: OptionPositions | None = None,
        perps: PerpPositions | None = None,
        collateral: CollateralPositions | None = None,
        supplies: SupplyPositions | None = None,
        borrows: BorrowPositions | None = None,
    ) -> RiskInputs:
        """This snapshot plus new positions (validated, kept sorted by user).

        O(all positions), and appending options drops the contract deduplication: meant for
        a one-user :meth:`user_slice` (whose user index is 0) after a trade, before
        :func:`unified_risk` on it and :meth:`UnifiedRisk.set_user`.
        """
        new = (options, perps, collateral, supplies, borrows)
        books, offsets = list(self._books()), list(self.offsets)
        for i, extra in enumerate(new):
            if extra is not None:
                _check_book(extra, self.n_users, self.n_chains, self.n_protocols)
                merged = _concat(books[i], extra)
                books[i] = _by_user_order(merged) if self.n_users > 1 else merged
                offsets[i] = _offsets(books[i].user, self.n_users)
        return self._with_books(books, offsets, options_changed=options is not None)

    def _with_books(
        self, books: list[Any], offsets: list[Index], *, options_changed: bool
    ) -> RiskInputs:
        """The same snapshot with new books; changed options get identity contracts."""
        o = books[0]
        instruments, inst = self.instruments, self.option_instrument
        if options_changed:
            instruments = Instruments(
                o.underlying, o.strike_usd, o.expiry_years, o.is_call, o.vol_annual
            )
            inst = np.arange(o.user.shape[0], dtype=np.intp)
        return replace(
            self, options=o, perps=books[1], collateral=books[2], supplies=books[3],
            borrows=books[4], offsets=tuple(offsets), instruments=instruments,
            option_instrument=inst,
        )  # fmt: skip

    def _books(self) -> tuple[Any, ...]:
        return self.options, self.perps, self.collateral, self.supplies, self.borrows


def _check_book(book: Any, n_users: int, n_chains: int, n_protocols: int) -> None:
    lengths = {getattr(book, f.name).shape for f in fields(book)}
    if len(lengths) != 1:
        raise InvalidRiskInputsError(f"{type(book).__name__}: arrays of different shapes")
    for name, bound in (("user", n_users), ("chain", n_chains), ("protocol", n_protocols)):
        values = getattr(book, name)
        if values.size and (values.min() < 0 or values.max() >= bound):
            raise InvalidRiskInputsError(f"{type(book).__name__}.{name} outside 0..{bound - 1}")


@dataclass(frozen=True, slots=True, eq=False)
class Breakdown:
    """Per (user, chain) or (user, protocol) amounts, each ``(n_users, n_keys)``, USD."""

    collateral_usd: Float  # margin collateral + lending supplies, raw
    debt_usd: Float
    options_mtm_usd: Float
    perp_pnl_usd: Float
    notional_usd: Float  # gross option + perp notional
    equity_usd: Float


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
    im_usd: Float
    mm_usd: Float
    margin_ratio: Float
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


def _breakdown(inputs: RiskInputs, key: str, n_keys: int, a: _Amounts) -> Breakdown:
    n = inputs.n_users * n_keys
    o, p, c, s, b = inputs._books()

    def total(book: Any, values: Float) -> Float:
        return _by_user(book.user * n_keys + getattr(book, key), values, n).reshape(-1, n_keys)

    collateral = total(c, a.collateral_value) + total(s, a.supply_value)
    debt, mtm, pnl = total(b, a.borrow_value), total(o, a.option_mtm), total(p, a.perp_pnl)
    notional = total(o, a.option_notional) + total(p, a.perp_notional)
    return Breakdown(collateral, debt, mtm, pnl, notional, collateral - debt + mtm + pnl)


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


def _lending(inputs: RiskInputs, params: LendingParams | None) -> tuple[Float, Float, Float]:
    """Per user: the lowest HF over its lending accounts, and the (down, up) moves per
    underlying that first make one of them liquidatable (exact, see ``lending.py``)."""
    n, n_u = inputs.n_users, inputs.n_underlyings
    s, b = inputs.supplies, inputs.borrows
    if s.user.shape[0] + b.user.shape[0] == 0:
        none = np.full((n, n_u), np.nan)
        return np.full(n, np.inf), none, none.copy()
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
    moves_down: Float = MOVES_DOWN,
    moves_up: Float = MOVES_UP,
) -> UnifiedRisk:
    """Every user's unified risk in one vectorised pass (see the module docstring).

    ``rate_annual`` discounts Black-76 prices (0: crypto venues quote undiscounted
    forward prices); ``moves_down`` / ``moves_up`` are the liquidation search's trial moves.
    """
    n, n_u = inputs.n_users, inputs.n_underlyings
    spot, carry, price = inputs.spot_usd, inputs.carry_annual, inputs.asset_price_usd
    o, p, c, s, b = inputs._books()
    inst, k = inputs.instruments, inputs.option_instrument

    valuation = value_instruments(
        inst, spot, carry, grid, rate_annual=rate_annual, moves_down=moves_down, moves_up=moves_up
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
    im, mm, mm_u = pm.im_usd, pm.mm_usd, pm.mm_by_underlying_usd
    if iso.any():
        sm = standard_margin(book, valuation, standard_params)
        im, mm = np.where(iso, sm.im_usd, im), np.where(iso, sm.mm_usd, mm)
        mm_u = np.where(iso[:, None], sm.mm_by_underlying_usd, mm_u)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mm <= 0.0, 0.0, np.where(margin_equity > 0.0, mm / margin_equity, np.inf))

    hf, l_down, l_up = _lending(inputs, lending_params)
    m_down, m_up = margin_liquidation_moves(
        book, valuation, equity_usd=margin_equity, mm_usd=mm, mm_by_underlying_usd=mm_u
    )
    down, up = np.fmax(m_down, l_down), np.fmin(m_up, l_up)
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
        worst_loss_usd=pm.worst_loss_usd,
        worst_scenario=pm.worst_scenario,
        worst_underlying=pm.worst_underlying,
        health_factor=hf,
        delta_coin=delta,
        delta_usd=delta * spot,
        gamma=gamma,
        vega_per_vol_point=vega,
        theta_per_day=theta,
        liq_move_down=down,
        liq_move_up=up,
        distance_to_liquidation=np.fmin(-down, up),
        by_chain=_breakdown(inputs, "chain", inputs.n_chains, a),
        by_protocol=_breakdown(inputs, "protocol", inputs.n_protocols, a),
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
