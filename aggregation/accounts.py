"""Margin accounts as the contracts keep them, and the protocol rule that liquidates them.

Concept: on chain, every options market and every perps market on every chain margins its
own account per user; nothing is cross-margined between markets or chains. A margin
**account** is therefore one ``(user, protocol, chain)`` key of the option, perp and
margin-collateral books (:func:`margin_accounts` numbers them, users in order). Lending
keeps its own accounts, also one per ``(user, protocol, chain)``
(:func:`aggregation.lending.lending_accounts`).

The **protocol rule** -- what the contract would do -- per account, at spot ``S`` of
each position's underlying::

    equity = sum collateral x price x (1 - haircut) + sum perps (size x S - open notional + funding)
    MM     = sum short options |size| x req(mm rate) + sum perps |size| x S x perp mm rate
    IM     = the same with the initial rates
    req(r) = call: r x S + (S - K)+      put: min(K, r x S + (K - S)+)  (capped at the strike)

and the account is liquidatable when ``equity < MM`` (strictly: an account without a
requirement and with equity >= 0 never is). Options are *not* marked to market: a long
option counts for nothing, a short one only through its requirement
(``OptionsMarket._margin``: haircut collateral against maintenance). A perps account is
``PerpsMarket._account``: margin (quote units at par, no haircut) plus P&L minus funding
against notional x mmBps per market. An account holding both (synthetic books) gets the sum.
Rates (:class:`ProtocolRules`): per protocol the options market's mmBps, imBps and
penaltyBps; per (protocol, underlying) the perps market's mmBps, imBps and liquidation
fee; per protocol whether its collateral is counted at par (perps margin).

Distance to liquidation (:func:`account_liquidation_moves`): with every asset of
underlying ``u`` moving by ``m``, ``f(m) = equity(m) - MM(m)`` of an account is piecewise
linear in ``m`` -- collateral, perps and the ``r x S`` part of the requirement are linear,
intrinsic values and the put cap are hinges at ``K / S - 1`` and ``K / (r S) - 1``. So the
first move down (``> -1``) and up at which ``f < 0`` is found exactly: breakpoints sorted
per (account, underlying), ``f`` carried along them, the root solved on the first segment
that crosses zero. 0 when the account is liquidatable already, NaN when no move does it.
Every hinge but the put cap is concave, so ``f`` is concave in ``m`` wherever no cap binds:
the moves that liquidate an account are then exactly those beyond its first move down
or up (``{f >= 0}`` is an interval around 0).

Liquidation (:func:`liquidate_accounts`), as ``liquidate`` does: every option closes at
intrinsic value, every perp at spot; the liquidator gets the options market's penalty
(penaltyBps x the account's options maintenance) and the perps market's fee (fee rate x
notional, at most the equity left). What the account then owes is collected from its
collateral: assets tied to no underlying (the quote token) first, then the rest pro rata
by value (the contract takes its listing order); the rest stays with the user. A shortfall
is bad debt, attributed to the loss-making positions pro rata (to the closed notional when
none lost, to negative balances when nothing was open). A negative balance (perps margin
below zero) is written off with the account. Credits (in-the-money longs, perp profits
beyond what is owed) go to the user and are not represented as new rows.

Invariants: ``IM >= MM >= 0`` when every initial rate is >= its maintenance rate; the rule
depends on spot prices only (not on vols or time). Units: USD (``_usd``), rates and moves
as fractions. Pure numpy, vectorised over positions; no Python loop over accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from aggregation.exceptions import InvalidRiskInputsError

if TYPE_CHECKING:
    from aggregation.books import RiskInputs

__all__ = [
    "AccountLiquidation",
    "AccountRule",
    "AccountState",
    "MarginAccounts",
    "OnchainRates",
    "ProtocolRules",
    "account_liquidation_moves",
    "account_state",
    "liquidate_accounts",
    "margin_accounts",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
Bool = NDArray[np.bool_]
_DENSE_KEYS = 1 << 22  # number accounts through a dense key table up to this many keys
_DENSE_PER_ROW = 4  # ... or up to this many keys per position row
_SMALL_ROWS = 4_096  # up to this many (account, underlying) rows, search them all
_BY_LOSS, _BY_NOTIONAL, _BY_BALANCE = 0, 1, 2  # how an account's bad debt is attributed


def _sum(index: Index, weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


def _ratio(num: Float, den: Float) -> Float:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0.0)


@dataclass(frozen=True, slots=True)
class OnchainRates:
    """Rates of a market that states none (the devnet's markets, ``chains/world.py``)."""

    option_mm: float = 0.09
    option_im: float = 0.15
    option_penalty: float = 0.10  # of the account's maintenance, to the liquidator
    perp_mm: float = 0.05
    perp_im: float = 0.10
    perp_fee: float = 0.025  # of notional, to the liquidator, at most the equity left


@dataclass(frozen=True, slots=True, eq=False)
class ProtocolRules:
    """Per-protocol rates of the protocol rule (module docstring); fractions, not bps."""

    option_mm_rate: Float  # (P,)
    option_im_rate: Float  # (P,)
    option_penalty_rate: Float  # (P,)
    perp_mm_rate: Float  # (P, U)
    perp_im_rate: Float  # (P, U)
    perp_fee_rate: Float  # (P, U)
    collateral_at_par: Bool  # (P,)

    @classmethod
    def uniform(
        cls, n_protocols: int, n_underlyings: int, rates: OnchainRates | None = None
    ) -> ProtocolRules:
        """The same ``rates`` for every protocol; no collateral at par."""
        r = rates or OnchainRates()
        p, pu = np.ones(n_protocols), np.ones((n_protocols, n_underlyings))
        return cls(
            r.option_mm * p, r.option_im * p, r.option_penalty * p, r.perp_mm * pu,
            r.perp_im * pu, r.perp_fee * pu, np.zeros(n_protocols, np.bool_),
        )  # fmt: skip

    def check(self, n_protocols: int, n_underlyings: int) -> None:
        """Shapes match the snapshot; every rate is in [0, 1)."""
        shapes = {
            "option_mm_rate": (n_protocols,), "option_im_rate": (n_protocols,),
            "option_penalty_rate": (n_protocols,), "perp_mm_rate": (n_protocols, n_underlyings),
            "perp_im_rate": (n_protocols, n_underlyings),
            "perp_fee_rate": (n_protocols, n_underlyings), "collateral_at_par": (n_protocols,),
        }  # fmt: skip
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value.shape != shape:
                raise InvalidRiskInputsError(
                    f"ProtocolRules.{name} has shape {value.shape}; expected {shape} "
                    "(protocols x underlyings)"
                )
            if name != "collateral_at_par" and not ((value >= 0.0) & (value < 1.0)).all():
                raise InvalidRiskInputsError(f"ProtocolRules.{name}: rates must be in [0, 1)")


@dataclass(frozen=True, slots=True, eq=False)
class MarginAccounts:
    """Accounts ``(user, protocol, chain)`` numbered in (user, protocol, chain) order, and
    the account of every option, perp and collateral row."""

    user: Index
    protocol: Index
    chain: Index
    option_account: Index
    perp_account: Index
    collateral_account: Index

    @property
    def n_accounts(self) -> int:
        return int(self.user.shape[0])

    def per_user(self, values: Float, n_users: int, ufunc: np.ufunc) -> Float:
        """Reduce per-account rows to per-user rows (``ufunc`` e.g. ``np.fmax``); NaN if none."""
        out = np.full((n_users, *values.shape[1:]), np.nan)
        if values.shape[0] and n_users == 1:  # one user's view: a plain reduction
            out[0] = ufunc.reduce(values, axis=0)
        elif values.shape[0]:
            change = np.empty(self.user.shape[0], np.bool_)
            change[0] = True
            np.not_equal(self.user[1:], self.user[:-1], out=change[1:])
            starts = np.flatnonzero(change)
            out[self.user[starts]] = ufunc.reduceat(values, starts, axis=0)
        return out


def margin_accounts(inputs: RiskInputs) -> MarginAccounts:
    """Number the margin accounts of ``inputs``' option, perp and collateral rows."""
    o, p, c = inputs.options, inputs.perps, inputs.collateral
    n_c, n_pc = inputs.n_chains, inputs.n_protocols * inputs.n_chains
    keys = np.concatenate([b.user * n_pc + b.protocol * n_c + b.chain for b in (o, p, c)])
    n_keys = inputs.n_users * n_pc
    if n_keys <= max(_DENSE_KEYS, _DENSE_PER_ROW * keys.shape[0]):  # O(n) without a sort
        seen = np.zeros(n_keys, np.bool_)
        seen[keys] = True
        ids = np.flatnonzero(seen)
        account = (np.cumsum(seen) - 1)[keys]
    else:
        ids, account = np.unique(keys, return_inverse=True)
    account = account.astype(np.intp, copy=False)
    n_o, n_p = o.user.shape[0], p.user.shape[0]
    return MarginAccounts(
        (ids // n_pc).astype(np.intp), (ids % n_pc // n_c).astype(np.intp),
        (ids % n_c).astype(np.intp), account[:n_o], account[n_o : n_o + n_p],
        account[n_o + n_p :],
    )  # fmt: skip


@dataclass(frozen=True, slots=True, eq=False)
class AccountState:
    """The protocol rule at some prices: per row, then per account (USD).

    ``collateral_value_usd``: raw value of each collateral row (at par where the protocol
    counts it so); ``perp_pnl_usd`` and ``perp_notional_usd`` per perp row. Per account:
    ``equity_usd``, the options and perps parts of the maintenance, ``mm_usd``, ``im_usd``.
    """

    accounts: MarginAccounts
    collateral_value_usd: Float
    perp_pnl_usd: Float
    perp_notional_usd: Float
    equity_usd: Float
    option_mm_usd: Float
    perp_mm_usd: Float
    mm_usd: Float
    im_usd: Float

    @property
    def liquidatable(self) -> Bool:
        return np.asarray(self.equity_usd < self.mm_usd)

    @property
    def margin_ratio(self) -> Float:
        """``MM / equity`` (liquidatable above 1); inf at equity <= 0 < MM or equity < 0."""
        eq, mm = self.equity_usd, self.mm_usd
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(eq > 0.0, mm / eq, np.inf)
        return np.where(mm > 0.0, ratio, np.where(eq < 0.0, np.inf, 0.0))


def _intrinsic(spot: Float, strike: Float, is_call: Bool) -> Float:
    return np.maximum(np.where(is_call, spot - strike, strike - spot), 0.0)


@dataclass(frozen=True, slots=True, eq=False)
class AccountRule:
    """The protocol rule's fixed parts -- accounts, short option rows, every row's rates --
    evaluated at a book's current prices and sizes by :meth:`state` (the cascade does so
    every round). Built for the short options of the book it is given: positions may
    shrink or close afterwards, not turn short."""

    accounts: MarginAccounts
    short_rows: Index
    short_account: Index
    short_underlying: Index
    short_strike: Float
    short_cap: Float  # a put's requirement is capped at its strike; inf for a call
    short_is_call: Bool
    short_mm_rate: Float
    short_im_rate: Float
    perp_mm_rate: Float
    perp_im_rate: Float
    collateral_keep: Float  # 1 - haircut
    collateral_price_index: Index  # the asset, or n_assets (price 1) where counted at par

    @classmethod
    def of(cls, inputs: RiskInputs, accounts: MarginAccounts | None = None) -> AccountRule:
        acc = accounts or margin_accounts(inputs)
        o, p, c, r = inputs.options, inputs.perps, inputs.collateral, inputs.rules
        rows = np.flatnonzero(o.size < 0.0)
        call, strike = o.is_call[rows], o.strike_usd[rows]
        return cls(
            acc, rows, acc.option_account[rows], o.underlying[rows], strike,
            np.where(call, np.inf, strike), call, r.option_mm_rate[o.protocol[rows]],
            r.option_im_rate[o.protocol[rows]], r.perp_mm_rate[p.protocol, p.underlying],
            r.perp_im_rate[p.protocol, p.underlying], 1.0 - c.haircut,
            np.where(r.collateral_at_par[c.protocol], inputs.asset_price_usd.shape[0], c.asset),
        )  # fmt: skip

    def state(self, inputs: RiskInputs, *, initial: bool = True) -> AccountState:
        """Equity, maintenance and (unless ``initial`` is False: NaN) initial margin of
        every account at ``inputs``' prices and sizes."""
        acc, n = self.accounts, self.accounts.n_accounts
        p, c = inputs.perps, inputs.collateral
        spot = inputs.spot_usd
        s = spot[self.short_underlying]
        short = -inputs.options.size[self.short_rows]
        base = s * self.short_mm_rate + _intrinsic(s, self.short_strike, self.short_is_call)
        mm_o = short * np.minimum(base, self.short_cap)
        value_p = p.size * spot[p.underlying]
        notional = np.abs(value_p)
        pnl = value_p - p.open_notional_usd + p.funding_usd
        raw = c.amount * np.append(inputs.asset_price_usd, 1.0)[self.collateral_price_index]
        option_mm = _sum(self.short_account, mm_o, n)
        perp_mm = _sum(acc.perp_account, notional * self.perp_mm_rate, n)
        equity = _sum(acc.collateral_account, raw * self.collateral_keep, n)
        equity += _sum(acc.perp_account, pnl, n)
        im = np.full(n, np.nan)
        if initial:
            base += s * (self.short_im_rate - self.short_mm_rate)
            im = _sum(self.short_account, short * np.minimum(base, self.short_cap), n)
            im += _sum(acc.perp_account, notional * self.perp_im_rate, n)
        return AccountState(
            acc, raw, pnl, notional, equity, option_mm, perp_mm, option_mm + perp_mm, im
        )


def account_state(inputs: RiskInputs, accounts: MarginAccounts | None = None) -> AccountState:
    """Equity, maintenance and initial margin of every margin account (module docstring)."""
    return AccountRule.of(inputs, accounts).state(inputs)


@dataclass(frozen=True, slots=True, eq=False)
class _Hinges:
    """``f(m) -= w x ((sigma (m - b))+ - (sigma (-b))+)`` per hinge, on row ``row``."""

    row: Index
    b: Float
    w: Float
    sigma: Float


def account_liquidation_moves(inputs: RiskInputs, state: AccountState) -> tuple[Float, Float]:
    """First move of each underlying alone, down and up, that makes each account
    liquidatable under the protocol rule: ``(down, up)``, each ``(n_accounts, U)``.

    Exact (module docstring): ``-1 < down <= 0``, ``up >= 0``, 0 when the account is
    liquidatable already, NaN when no move of that underlying alone does it.
    """
    acc, rules = state.accounts, inputs.rules
    n_u = inputs.n_underlyings
    n_rows = acc.n_accounts * n_u
    o, p, c = inputs.options, inputs.perps, inputs.collateral
    spot = inputs.spot_usd
    # d f / d m of the linear parts: tied collateral, perps (value - requirement), r S of shorts
    tied = (inputs.asset_underlying[c.asset] >= 0) & ~rules.collateral_at_par[c.protocol]
    row_c = acc.collateral_account[tied] * n_u + inputs.asset_underlying[c.asset[tied]]
    slope = _sum(row_c, (state.collateral_value_usd * (1.0 - c.haircut))[tied], n_rows)
    row_p = acc.perp_account * n_u + p.underlying
    rate_p = rules.perp_mm_rate[p.protocol, p.underlying]
    slope += _sum(row_p, p.size * spot[p.underlying] - state.perp_notional_usd * rate_p, n_rows)
    sel = o.size < 0.0
    short, u = -o.size[sel], o.underlying[sel]
    s, k, call = spot[u], o.strike_usd[sel], o.is_call[sel]
    rate = rules.option_mm_rate[o.protocol[sel]]
    row_o = acc.option_account[sel] * n_u + u
    slope -= _sum(row_o, short * rate * s, n_rows)
    cap = ~call & (rate > 0.0)
    cap_b = k[cap] / (rate[cap] * s[cap]) - 1.0
    hinges = _Hinges(
        np.concatenate([row_o, row_o[cap]]),
        np.concatenate([k / s - 1.0, cap_b]),
        np.concatenate([short * s, -(short * rate * s)[cap]]),
        np.concatenate([np.where(call, 1.0, -1.0), np.ones(int(cap.sum()))]),
    )
    f0 = np.repeat(state.equity_usd - state.mm_usd, n_u)
    if n_rows <= _SMALL_ROWS:
        roots = _first_roots(f0, slope, hinges).reshape(2, acc.n_accounts, n_u)
        return 0.0 - roots[0], roots[1]  # 0 - x: no -0.0
    # only rows that move with their underlying need a search; the rest are 0 or NaN
    used = slope != 0.0
    used[hinges.row] = True
    where = np.flatnonzero(used)
    roots = np.where(f0 < 0.0, 0.0, np.nan)
    roots = np.stack([roots, roots])
    compact = np.cumsum(used) - 1
    h = _Hinges(compact[hinges.row], hinges.b, hinges.w, hinges.sigma)
    roots[:, where] = _first_roots(f0[where], slope[where], h).reshape(2, -1)
    roots = roots.reshape(2, acc.n_accounts, n_u)
    return 0.0 - roots[0], roots[1]


def _first_roots(f0: Float, slope: Float, h: _Hinges) -> Float:
    """Per row, the smallest ``t > 0`` with ``f(-t) < 0`` (``t < 1``; first ``n`` values)
    and with ``f(t) < 0`` (last ``n``); 0 where ``f0 < 0``, NaN where none.

    ``g(t) = f(d t)`` per direction ``d``: its slope just beyond 0 comes from the hinges
    active there; each breakpoint ``t = d b`` passed lowers it by ``w``. Both directions
    run as one set of ``2 n`` rows (one sort), so a one-user update stays cheap.
    """
    n = f0.shape[0]
    g0, t_max = np.concatenate([f0, f0]), np.concatenate([np.ones(n), np.full(n, np.inf)])
    roots = np.where(g0 < 0.0, 0.0, np.nan)
    ws = h.w * h.sigma
    on = h.sigma * -h.b > 0.0  # active on both sides of 0; at b == 0, on the side of sigma
    down_on, up_on = on | ((h.b == 0.0) & (h.sigma < 0.0)), on | ((h.b == 0.0) & (h.sigma > 0.0))
    g_slope = np.concatenate([
        _sum(h.row[down_on], ws[down_on], n) - slope, slope - _sum(h.row[up_on], ws[up_on], n),
    ])  # fmt: skip
    # slopes within rounding of 0 are 0 (e.g. past a put's cap): no root at 1e15
    tiny = 1e-12 * (np.abs(slope) + _sum(h.row, np.abs(h.w), n))
    tiny = np.concatenate([tiny, tiny])
    down, up = (h.b < 0.0) & (h.b > -1.0), h.b > 0.0
    row = np.concatenate([h.row[down], h.row[up] + n])
    t = np.concatenate([-h.b[down], h.b[up]])
    w = np.concatenate([h.w[down], h.w[up]])
    tail_t, tail_g, tail_s = np.zeros(2 * n), g0.copy(), g_slope
    if row.size:
        order = np.lexsort((t, row))
        row, t, w = row[order], t[order], w[order]
        m = row.size
        start = np.empty(m, np.bool_)
        start[0] = True
        np.not_equal(row[1:], row[:-1], out=start[1:])
        segments = _Segments.of(start)
        s_before = g_slope[row] - (segments.cumsum(w) - w)
        s_before[np.abs(s_before) <= tiny[row]] = 0.0
        t_prev = np.empty(m)
        t_prev[0] = 0.0
        t_prev[1:] = t[:-1]
        t_prev[start] = 0.0
        step = s_before * (t - t_prev)
        g_at = g0[row] + segments.cumsum(step)
        hit = np.flatnonzero((g_at < 0.0) & (g0[row] >= 0.0))
        if hit.size:  # the first crossing of each row
            e = hit[np.concatenate([[True], row[hit[1:]] != row[hit[:-1]]])]
            roots[row[e]] = t_prev[e] + (g_at[e] - step[e]) / -s_before[e]
        last = np.flatnonzero(np.append(start[1:], True))  # the last event of each row
        tail_t[row[last]], tail_g[row[last]] = t[last], g_at[last]
        tail_s = tail_s.copy()
        tail_s[row[last]] = s_before[last] - w[last]
    tail_s = np.where(np.abs(tail_s) <= tiny, 0.0, tail_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        beyond = tail_t + tail_g / -tail_s
    open_rows = np.isnan(roots) & (tail_g >= 0.0) & (tail_s < 0.0) & (beyond < t_max)
    roots[open_rows] = beyond[open_rows]
    return roots


@dataclass(frozen=True, slots=True, eq=False)
class _Segments:
    """Consecutive runs of a flat array (a new one where ``start`` is True), for sums
    that restart at each run.

    A run's cumulative sums add its own values in order from its first, as ``np.cumsum``
    of the run alone would: they do not depend on the runs before it (a global cumsum
    minus the run's offset would carry their rounding), so one account's results are the
    same bits in any batch. Computed rank by rank: step ``r`` adds every run's ``r``-th
    value to its sum so far, one numpy call over the runs that long.
    """

    by_rank: Index  # positions ordered by their rank in their run (stable)
    bounds: Index  # by_rank[bounds[r]:bounds[r + 1]] are the positions of rank r

    @classmethod
    def of(cls, start: Bool) -> _Segments:
        m = start.shape[0]
        begins = np.flatnonzero(start)
        rank = np.arange(m) - begins[np.cumsum(start) - 1]
        widest = int(rank.max()) + 1 if m else 0
        small = rank.astype(np.uint16) if widest <= np.iinfo(np.uint16).max else rank
        by_rank = np.argsort(small, kind="stable")  # a radix sort for small integers
        return cls(by_rank, np.searchsorted(rank[by_rank], np.arange(widest + 1)))

    def cumsum(self, values: Float) -> Float:
        """Inclusive cumulative sums of ``values`` within each run."""
        out = values.copy()
        for lo, hi in zip(self.bounds[1:-1].tolist(), self.bounds[2:].tolist(), strict=True):
            at = self.by_rank[lo:hi]
            out[at] += out[at - 1]
        return out


@dataclass(frozen=True, slots=True, eq=False)
class AccountLiquidation:
    """What liquidating some accounts does, on their rows only (coins unless stated).

    ``accounts``: the accounts liquidated; ``option_rows`` / ``perp_rows``: their positions,
    all closed; ``collateral_rows``: their balances, with per row ``seized_coin`` (taken by
    the market), ``written_coin`` (negative balances written off) and
    ``collateral_deficit_usd``; ``option_deficit_usd`` / ``perp_deficit_usd``: bad debt
    per closed position.
    """

    accounts: Index
    option_rows: Index
    perp_rows: Index
    collateral_rows: Index
    seized_coin: Float
    written_coin: Float
    option_deficit_usd: Float
    perp_deficit_usd: Float
    collateral_deficit_usd: Float

    @classmethod
    def nothing(cls) -> AccountLiquidation:
        no_i, no_f = np.empty(0, np.intp), np.empty(0)
        return cls(no_i, no_i, no_i, no_i, no_f, no_f, no_f, no_f, no_f)


def liquidate_accounts(
    inputs: RiskInputs, state: AccountState, liquidate: Bool | None = None
) -> AccountLiquidation:
    """Liquidate the accounts ``liquidate`` (default: the liquidatable ones) at ``state``'s
    prices, as the markets' ``liquidate`` does (module docstring). O(rows) to find the
    accounts' rows, then O(their rows)."""
    acc, rules = state.accounts, inputs.rules
    liq = state.liquidatable if liquidate is None else liquidate
    la = np.flatnonzero(liq)
    if la.size == 0:
        return AccountLiquidation.nothing()
    o, p, c = inputs.options, inputs.perps, inputs.collateral
    ro, rp, rc = (np.flatnonzero(liq[a]) for a in (acc.option_account, acc.perp_account,
                                                   acc.collateral_account))  # fmt: skip
    k, local = la.size, np.zeros(acc.n_accounts, np.intp)
    local[la] = np.arange(k)
    ko, kp, kc = (
        local[acc.option_account[ro]],
        local[acc.perp_account[rp]],
        local[acc.collateral_account[rc]],
    )
    s_o = inputs.spot_usd[o.underlying[ro]]
    settle_o = o.size[ro] * _intrinsic(s_o, o.strike_usd[ro], o.is_call[ro])
    pnl, notional_p = state.perp_pnl_usd[rp], state.perp_notional_usd[rp]
    gain = _sum(ko, settle_o, k) + _sum(kp, pnl, k)
    penalty = rules.option_penalty_rate[acc.protocol[la]] * state.option_mm_usd[la]
    fee_p = notional_p * rules.perp_fee_rate[p.protocol[rp], p.underlying[rp]]
    value = state.collateral_value_usd[rc]
    positive, negative = np.maximum(value, 0.0), np.minimum(value, 0.0)
    pos, neg = _sum(kc, positive, k), _sum(kc, negative, k)
    fee = np.minimum(_sum(kp, fee_p, k), np.maximum(pos + neg + gain - penalty, 0.0))
    owed = penalty + fee - gain - neg  # a claim on the positive balances
    take, short = np.clip(owed, 0.0, pos), np.maximum(owed - pos, 0.0)
    stable = (inputs.asset_underlying[c.asset[rc]] < 0) | rules.collateral_at_par[c.protocol[rc]]
    stable_pos = _sum(kc, positive * stable, k)
    from_stable = np.minimum(take, stable_pos)
    share = np.where(
        stable,
        _ratio(from_stable, stable_pos)[kc],
        _ratio(take - from_stable, pos - stable_pos)[kc],
    )
    amount = c.amount[rc]
    seized = np.where(positive > 0.0, amount * np.minimum(share, 1.0), 0.0)
    # bad debt per account, spread over: losses, else closed notional, else negative balances
    loss_o, loss_p = np.maximum(-settle_o, 0.0), np.maximum(-pnl, 0.0)
    notional_o = np.abs(o.size[ro]) * s_o
    loss, notional = _sum(ko, loss_o, k) + _sum(kp, loss_p, k), _sum(ko, notional_o, k)
    notional += _sum(kp, notional_p, k)
    tier = np.where(loss > 0.0, _BY_LOSS, np.where(notional > 0.0, _BY_NOTIONAL, _BY_BALANCE))
    per = _ratio(
        short, np.where(tier == _BY_LOSS, loss, np.where(tier == _BY_NOTIONAL, notional, -neg))
    )
    w_o = np.where(tier[ko] == _BY_LOSS, loss_o, notional_o * (tier[ko] == _BY_NOTIONAL))
    w_p = np.where(tier[kp] == _BY_LOSS, loss_p, notional_p * (tier[kp] == _BY_NOTIONAL))
    return AccountLiquidation(
        la.astype(np.intp), ro, rp, rc, seized, np.minimum(amount, 0.0), w_o * per[ko],
        w_p * per[kp], -negative * (tier[kc] == _BY_BALANCE) * per[kc],
    )  # fmt: skip
