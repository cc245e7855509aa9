"""Liquidation cascade: a price shock, liquidations, fire sales through liquidity, repeat.

Concept (REFERENCES.md s5, fire sales; Cifuentes-Ferrucci-Shin 2005): a shock moves
prices; every position is re-evaluated; whatever is liquidatable is liquidated; the seized
collateral is sold into each asset's market, which moves prices through a liquidity model;
and the loop repeats until a round liquidates nothing and prices stand still (the fixed
point), or ``max_rounds`` is reached (then ``converged`` is False).

Prices and liquidity (:mod:`aggregation.liquidity`): a shock multiplies each asset's pool
price (a root's USD price, a derived asset's peg on top of its root); seized collateral and
closed perps are sold into each asset's market -- constant product, linear impact, or
infinite depth -- optionally recovering with a half-life.

Liquidation rules, per round, all at that round's prices (one oracle price per round),
account by account as on chain (an account is one (user, protocol, chain)):
- lending (Aave v3, ``lending.py``): accounts with HF < 1 repay ``close factor`` (50 %, or
  100 % at HF <= 0.95 or dust) of every debt position. Collateral is seized pro rata to each
  supply's value, at its bonus, capped at what is there (:func:`collateral_seized`). When an
  account's collateral is exhausted, its remaining debt is written off as **bad debt**
  (Aave v3.3 deficit).
- margin accounts (an options or a perps market's account): the **protocol rule** of
  :mod:`aggregation.accounts` -- equity (collateral after haircut + perp P&L) below the
  maintenance of the account's own market -- liquidates the account, as ``liquidate``
  does: every option closes at intrinsic value, every perp at spot; the liquidator gets the
  options market's penalty (penaltyBps x maintenance) and the perps market's fee (fee
  rate x notional, at most the equity left). What the account then owes is collected
  from its collateral, stablecoins (assets tied to no underlying) first, then the rest pro
  rata at the round's prices; the rest of the collateral stays with the user. A shortfall
  is bad debt, attributed to the loss-making positions pro rata (to the closed notional
  when none lost, to negative balances when nothing was open). A negative balance (a perps
  margin below zero) is written off with the account; credits (in-the-money longs, perp
  profits beyond what is owed) stay with the user and are not added back to the book.

Crash path: with ``steps = n`` the shock is reached in ``n`` geometric steps (pool prices x
``(1 + shock)^(k / n)``), each run to its own fixed point before the next -- a crash spread
over ``n`` blocks with keepers acting after each, as ``rtrm devnet crash`` does. With price
impact the path matters (liquidations sell at the intermediate prices). Without it, who is
liquidated does not depend on the path for lending (HF is linear in the price) nor for
margin accounts (the rule is concave in each price, so an account healthy at both ends of
a monotone path is healthy in between), except a short put whose requirement is capped at
its strike (a convex kink, far out of the money).

Invariants (tested): collateral sold per asset = collateral seized = initial - final
amounts of the positive balances; debt repaid + written off = initial - final debt; bad
debt >= 0; determinism (no randomness, order-independent sums). Without price impact, a
deeper fall never liquidates less or leaves less bad debt on a book that loses when prices
fall (volatile collateral, stable debt, long perps). With impact, a shallower shock *can*
leave more bad debt: later rounds may gap through liquidation prices that a deeper first
round would have caught.

Not modelled: liquidators' slippage (the oracle is the pool price of the round), debt
purchases moving prices, and what the markets do with seized collateral (it is sold).

Units: coins (``_coin``), USD (``_usd``), moves as fractions, rounds as integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregation.accounts import AccountLiquidation, AccountRule, liquidate_accounts
from aggregation.books import RiskInputs
from aggregation.exceptions import InvalidParamsError, InvalidShockError
from aggregation.exposure import CanonicalMap
from aggregation.lending import (
    LendingAccounts,
    LendingBook,
    LendingParams,
    account_health,
    collateral_seized,
    lending_accounts,
)
from aggregation.liquidity import ConstantProduct, LinearImpact, Liquidity, Market

__all__ = [
    "LENDING",
    "MARGIN",
    "AccountEvents",
    "CascadeParams",
    "CascadeResult",
    "ConstantProduct",
    "Deficits",
    "LinearImpact",
    "cascade",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
LENDING, MARGIN = 0, 1
"""Kinds of account in :class:`AccountEvents`."""


def _sum(index: Index, weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


@dataclass(frozen=True, slots=True)
class CascadeParams:
    """``liquidity[a]`` per asset index (missing or None: infinite depth); ``tol`` bounds
    the last round's relative price change; ``steps``: the shock is reached in that many
    geometric steps, each run to its fixed point (``max_rounds`` rounds at most each).

    A recovering price settles within ``tol`` after about ``half_life x log2(gap / tol)``
    rounds (~20 half-lives for a 100 % gap at 1e-6): keep ``max_rounds`` above that.
    """

    liquidity: tuple[Liquidity, ...] = ()
    max_rounds: int = 100
    tol: float = 1e-6
    lending: LendingParams = field(default_factory=LendingParams)
    route_to_root: bool = True
    steps: int = 1


@dataclass(frozen=True, slots=True, eq=False)
class Deficits:
    """Bad debt records, one per (round, position): who, where, in which asset, how much.

    Lending: ``asset`` is the debt asset written off. Margin: the root asset of the
    position's underlying, ``amount_coin`` = USD / its spot at liquidation; or, for a
    negative balance written off with nothing open, that balance's asset.
    """

    round: Index
    user: Index
    protocol: Index
    chain: Index
    asset: Index
    amount_coin: Float
    amount_usd: Float

    def summed(self) -> Deficits:
        """One record per (user, protocol, chain, asset) over all rounds (round = first)."""
        keys = np.stack([self.user, self.protocol, self.chain, self.asset], axis=1)
        uniq, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inv, n = inv.reshape(-1), uniq.shape[0]
        u, p, c, a = (uniq[:, i].astype(np.intp) for i in range(4))
        return Deficits(
            self.round[first],
            u,
            p,
            c,
            a,
            _sum(inv, self.amount_coin, n),
            _sum(inv, self.amount_usd, n),
        )


@dataclass(frozen=True, slots=True, eq=False)
class AccountEvents:
    """Every account liquidation, one row per (round, account): ``kind`` is
    :data:`LENDING` or :data:`MARGIN`; a lending account can recur (partial closes)."""

    round: Index
    user: Index
    protocol: Index
    chain: Index
    kind: Index


@dataclass(frozen=True, slots=True, eq=False)
class CascadeResult:
    """Per round ``r`` (evaluated at ``price_usd[r]``; the last row is the final price).

    ``(R, n_protocols, n_chains)``: liquidated collateral (value seized), debt repaid,
    notional closed and bad debt, USD. ``sold_coin`` (R, A): collateral sold per asset;
    ``perp_flow_coin`` (R, U): perps closed (+ sold). ``user_first_round``: -1 if never.
    ``accounts``: which accounts were liquidated, when. ``final_inputs``: the book after
    the cascade, at the final prices.
    """

    n_rounds: int
    converged: bool
    price_usd: Float
    spot_usd: Float
    sold_coin: Float
    perp_flow_coin: Float
    liquidated_collateral_usd: Float
    repaid_debt_usd: Float
    closed_notional_usd: Float
    bad_debt_usd: Float
    users_liquidated: Index
    user_first_round: Index
    deficits: Deficits
    accounts: AccountEvents
    final_inputs: RiskInputs

    @property
    def total_bad_debt_usd(self) -> Float:
        return np.asarray(self.bad_debt_usd.sum(axis=0))

    @property
    def total_liquidated_collateral_usd(self) -> Float:
        return np.asarray(self.liquidated_collateral_usd.sum(axis=0))

    @property
    def users_affected(self) -> int:
        return int((self.user_first_round >= 0).sum())


@dataclass(frozen=True, slots=True, eq=False)
class _Accounts:
    """The book's lending and margin accounts (fixed for the whole cascade)."""

    lending: LendingAccounts
    lending_protocol: Index
    lending_chain: Index
    margin: AccountRule

    @classmethod
    def of(cls, x: RiskInputs) -> _Accounts:
        s, b = x.supplies, x.borrows
        acc = lending_accounts(
            (s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain), x.n_protocols,
            x.n_chains,
        )  # fmt: skip
        protocol, chain = np.zeros_like(acc.user), np.zeros_like(acc.user)
        for book, rows in ((s, acc.supply_account), (b, acc.borrow_account)):
            protocol[rows], chain[rows] = book.protocol, book.chain
        return cls(acc, protocol, chain, AccountRule.of(x))


@dataclass(frozen=True, slots=True, eq=False)
class _Liquidations:
    """What one round liquidates, on the rows it touches (coins unless stated)."""

    supply_rows: Index
    seized: Float
    borrow_rows: Index
    repaid: Float
    written_off: Float
    lending_accounts: Index  # liquidated this round
    margin: AccountLiquidation

    def apply(self, x: RiskInputs) -> None:
        """Apply these liquidations to ``x``'s arrays, in place (the cascade owns them)."""
        m, p = self.margin, x.perps
        x.supplies.amount[self.supply_rows] -= self.seized
        x.borrows.amount[self.borrow_rows] -= self.repaid + self.written_off
        x.collateral.amount[m.collateral_rows] -= m.seized_coin + m.written_coin
        x.options.size[m.option_rows] = 0.0
        for column in (p.size, p.open_notional_usd, p.funding_usd):
            column[m.perp_rows] = 0.0

    def users(self, acc: _Accounts) -> Index:
        lending = acc.lending.user[self.lending_accounts]
        margin = acc.margin.accounts.user[self.margin.accounts]
        return np.union1d(lending, margin).astype(np.intp)


def _own(x: RiskInputs) -> RiskInputs:
    """``x`` with private copies of the columns a cascade changes."""
    s, b, c, o, p = x.supplies, x.borrows, x.collateral, x.options, x.perps
    return replace(
        x,
        supplies=replace(s, amount=s.amount.copy()),
        borrows=replace(b, amount=b.amount.copy()),
        collateral=replace(c, amount=c.amount.copy()),
        options=replace(o, size=o.size.copy()),
        perps=replace(p, size=p.size.copy(), open_notional_usd=p.open_notional_usd.copy(),
                      funding_usd=p.funding_usd.copy()),
    )  # fmt: skip


def _liquidate(x: RiskInputs, acc: _Accounts, prm: CascadeParams) -> _Liquidations:
    """Every liquidation of one round at ``x``'s prices (module docstring)."""
    s, b, price = x.supplies, x.borrows, x.asset_price_usd
    n = acc.lending.user.shape[0]
    s_acc, b_acc = acc.lending.supply_account, acc.lending.borrow_account
    book = LendingBook(
        n, s_acc, s.asset, s.amount, s.liquidation_threshold, s.ltv, s.liquidation_bonus,
        b_acc, b.asset, b.amount,
    )  # fmt: skip
    health = account_health(book, price, prm.lending)
    due = health.liquidatable
    sr, br = np.flatnonzero(due[s_acc]), np.flatnonzero(due[b_acc])
    s_a, b_a, s_price = s_acc[sr], b_acc[br], price[s.asset[sr]]
    repay = health.close_factor[b_a] * b.amount[br]
    target_usd = _sum(b_a, repay * price[b.asset[br]], n)
    coll = health.collateral_usd[s_a]
    amount = s.amount[sr]
    share = np.divide(amount * s_price, coll, out=np.zeros_like(coll), where=coll > 0.0)
    seized, repaid_usd = collateral_seized(
        share * target_usd[s_a], np.ones_like(s_price), s_price, s.liquidation_bonus[sr], amount
    )
    paid = _sum(s_a, repaid_usd, n)
    fraction = np.divide(paid, target_usd, out=np.zeros(n), where=target_usd > 0.0)
    repaid = repay * np.minimum(fraction, 1.0)[b_a]
    left = _sum(s_a, (amount - seized) * s_price, n)
    exhausted = due & (left <= 0.0)  # Aave v3.3: the rest becomes a deficit
    written = np.where(exhausted[b_a], b.amount[br] - repaid, 0.0)
    margin = liquidate_accounts(x, acc.margin.state(x, initial=False))
    return _Liquidations(
        sr, seized, br, repaid, written, np.flatnonzero(due).astype(np.intp), margin
    )


def _check_shock(shock: ArrayLike, n_assets: int) -> Float:
    moves = np.asarray(shock, dtype=np.float64)
    if moves.shape != (n_assets,):
        raise InvalidShockError(
            f"shock has shape {moves.shape}; expected ({n_assets},), one move per asset"
        )
    if (bad := np.flatnonzero(~np.isfinite(moves) | (moves <= -1.0))).size:
        a = int(bad[0])
        raise InvalidShockError(
            f"shock on asset {a} is {moves[a]}: a move must be finite and > -1 (-1 is zero)"
        )
    return moves


@dataclass(slots=True, eq=False)
class _Recorder:
    """Per-round records, deficit and account rows, turned into a :class:`CascadeResult`."""

    u_root: Index
    first: Index
    rows: dict[str, list[Float]] = field(default_factory=dict)
    deficits: list[list[Float]] = field(default_factory=lambda: [[] for _ in range(7)])
    events: list[list[Index]] = field(default_factory=lambda: [[] for _ in range(5)])

    def add(self, r: int, x: RiskInputs, liq: _Liquidations, acc: _Accounts) -> tuple[Float, Float]:
        """Record round ``r`` (``x``: the book it started from); return (sold, perp flow)."""
        s, b, c, o, p = x.supplies, x.borrows, x.collateral, x.options, x.perps
        price, spot, n_a, n_c = x.asset_price_usd, x.spot_usd, _n_assets(x), x.n_chains
        shape, size, m = (x.n_protocols, n_c), x.n_protocols * n_c, liq.margin
        sr, br = liq.supply_rows, liq.borrow_rows
        cr, orow, pr = m.collateral_rows, m.option_rows, m.perp_rows

        def by_pc(book: Any, rows: Index, values: Float) -> Float:
            key = book.protocol[rows] * n_c + book.chain[rows]
            return _sum(key, values, size).reshape(shape)

        perp_flow = p.size[pr]
        flow_u = _sum(p.underlying[pr], perp_flow, x.n_underlyings)
        sold = _sum(s.asset[sr], liq.seized, n_a) + _sum(c.asset[cr], m.seized_coin, n_a)
        b_usd, written = price[b.asset[br]], liq.written_off
        spot_o, spot_p = spot[o.underlying[orow]], spot[p.underlying[pr]]
        d_o, d_p, d_c = m.option_deficit_usd, m.perp_deficit_usd, m.collateral_deficit_usd
        users = liq.users(acc)
        records = {
            "price_usd": price,
            "spot_usd": spot,
            "sold_coin": sold,
            "perp_flow_coin": flow_u,
            "liquidated_collateral_usd": by_pc(s, sr, liq.seized * price[s.asset[sr]])
            + by_pc(c, cr, m.seized_coin * price[c.asset[cr]]),
            "repaid_debt_usd": by_pc(b, br, liq.repaid * b_usd),
            "closed_notional_usd": by_pc(o, orow, np.abs(o.size[orow]) * spot_o)
            + by_pc(p, pr, np.abs(perp_flow) * spot_p),
            "bad_debt_usd": by_pc(b, br, written * b_usd)
            + by_pc(o, orow, d_o)
            + by_pc(p, pr, d_p)
            + by_pc(c, cr, d_c),
            "users_liquidated": np.array([float(users.size)]),
        }
        for key, value in records.items():
            self.rows.setdefault(key, []).append(value)
        self.first[users[self.first[users] < 0]] = r
        at_par = x.rules.collateral_at_par[c.protocol[cr]]
        c_price = np.where(at_par, 1.0, price[c.asset[cr]])
        u_root = self.u_root
        for book, rows, asset, coin, usd in (
            (b, br, b.asset[br], written, written * b_usd),
            (o, orow, u_root[o.underlying[orow]], d_o / spot_o, d_o),
            (p, pr, u_root[p.underlying[pr]], d_p / spot_p, d_p),
            (c, cr, c.asset[cr], d_c / c_price, d_c),
        ):
            keep = usd > 0.0
            at = rows[keep]
            self.deficits[0].append(np.full(at.size, float(r)))
            columns = (book.user[at], book.protocol[at], book.chain[at], asset[keep],
                       coin[keep], usd[keep])  # fmt: skip
            for i, column in enumerate(columns, start=1):
                self.deficits[i].append(np.asarray(column, dtype=np.float64))
        la, ma, ma_acc = liq.lending_accounts, m.accounts, acc.margin.accounts
        for kind, user, protocol, chain in (
            (LENDING, acc.lending.user[la], acc.lending_protocol[la], acc.lending_chain[la]),
            (MARGIN, ma_acc.user[ma], ma_acc.protocol[ma], ma_acc.chain[ma]),
        ):
            for i, column in enumerate((np.full(user.size, r), user, protocol, chain,
                                        np.full(user.size, kind))):  # fmt: skip
                self.events[i].append(np.asarray(column, dtype=np.intp))
        return sold, flow_u

    def result(self, converged: bool, final: RiskInputs) -> CascadeResult:
        n_rounds = len(self.rows["sold_coin"])
        self.rows["price_usd"].append(final.asset_price_usd)
        self.rows["spot_usd"].append(final.spot_usd)
        out = {
            k: np.concatenate(v) if k == "users_liquidated" else np.stack(v)
            for k, v in self.rows.items()
        }
        cols = [np.concatenate(col) for col in self.deficits]
        r, u, p, c, a = (col.astype(np.intp) for col in cols[:5])
        return CascadeResult(
            n_rounds=n_rounds,
            converged=converged,
            user_first_round=self.first,
            users_liquidated=out.pop("users_liquidated").astype(np.intp),
            deficits=Deficits(r, u, p, c, a, cols[5], cols[6]),
            accounts=AccountEvents(*(np.concatenate(col) for col in self.events)),
            final_inputs=final,
            **out,
        )


def _n_assets(x: RiskInputs) -> int:
    return int(x.asset_price_usd.shape[0])


def cascade(
    inputs: RiskInputs,
    canonical: CanonicalMap | ArrayLike,
    shock: ArrayLike,
    params: CascadeParams | None = None,
) -> CascadeResult:
    """Run the cascade of ``shock`` (one move per asset) on ``inputs`` (module docstring)."""
    prm = params or CascadeParams()
    cmap = CanonicalMap.of(inputs, canonical)
    cmap.require_underlyings(inputs)
    if prm.max_rounds < 1 or prm.steps < 1 or not prm.tol >= 0.0:
        raise InvalidParamsError(
            f"max_rounds {prm.max_rounds} and steps {prm.steps} must be >= 1, tol {prm.tol} >= 0"
        )
    move = _check_shock(shock, _n_assets(inputs))
    acc = _Accounts.of(inputs)
    rec = _Recorder(cmap.underlying_root, np.full(inputs.n_users, -1, np.intp))
    sold_eff, book, converged, r = np.zeros(_n_assets(inputs)), _own(inputs), True, 0
    for k in range(1, prm.steps + 1):
        step_move = (1.0 + move) ** (k / prm.steps) - 1.0
        market = Market.of(inputs, cmap, step_move, prm.liquidity, route_to_root=prm.route_to_root)
        pool, settled = market.start(sold_eff), False
        for _ in range(prm.max_rounds):
            book = replace(book, asset_price_usd=market.usd(pool), spot_usd=market.spot(pool))
            liq = _liquidate(book, acc, prm)
            sold, perp_flow = rec.add(r, book, liq, acc)
            liq.apply(book)
            r += 1
            sold_eff, new_pool = market.next_pool(sold_eff, sold, perp_flow, pool)
            moved = float(np.max(np.abs(new_pool / pool - 1.0), initial=0.0))
            pool = new_pool
            if liq.lending_accounts.size + liq.margin.accounts.size == 0 and moved <= prm.tol:
                settled = True
                break
        converged &= settled
    final = replace(book, asset_price_usd=market.usd(pool), spot_usd=market.spot(pool))
    return rec.result(converged, final)
