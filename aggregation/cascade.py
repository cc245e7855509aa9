"""Liquidation cascade: a price shock, liquidations, fire sales through liquidity, repeat.

Concept (REFERENCES.md s5, fire sales; Cifuentes-Ferrucci-Shin 2005): a shock moves
prices; every position is re-evaluated; whatever is liquidatable is liquidated; the seized
collateral is sold into each asset's market, which moves prices through a liquidity model;
and the loop repeats until a round liquidates nothing and prices stand still (the fixed
point), or ``max_rounds`` is reached (then ``converged`` is False).

Prices. Every asset has a root (:class:`aggregation.exposure.CanonicalMap`). A root's pool
price is its USD price; a derived asset's pool price is its *peg* (root coins per unit,
e.g. 1.18 for wstETH), and its USD price is ``root price x peg``. A shock ``shock[a]``
multiplies asset ``a``'s pool price by ``1 + shock[a]``. So ``{ETH: -0.30, wstETH: -0.08}``
is ETH down 30 % and wstETH depegged 8 % *on top* (x 0.70 x 0.92). Underlyings' spots
follow their root's price.

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

Liquidation rules, per round, all at that round's prices (one oracle price per round):
- lending (Aave v3, ``lending.py``): accounts with HF < 1 repay ``close factor`` (50 %, or
  100 % at HF <= 0.95 or dust) of every debt position. Collateral is seized pro rata to each
  supply's value, at its bonus, capped at what is there (:func:`collateral_seized`). When an
  account's collateral is exhausted, its remaining debt is written off as **bad debt**
  (Aave v3.3 deficit).
- margin (one cross-chain account per user): equity < maintenance -> the whole account
  is closed. Options settle at mark, perps at spot, and all collateral is seized and sold.
  A negative value (collateral + marks + P&L) is bad debt, attributed to the loss-making
  positions pro rata.

Invariants (tested): collateral sold per asset = collateral seized = initial - final
amounts; debt repaid + written off = initial - final debt; bad debt >= 0; determinism
(no randomness, order-independent sums). Without price impact, a deeper fall never
liquidates less or leaves less bad debt on a book that loses when prices fall (volatile
collateral, stable debt, long perps). With impact, a shallower shock *can* leave more bad
debt: later rounds may gap through liquidation prices that a deeper first round would
have caught.

Not modelled: margin liquidation penalties, liquidators' slippage (the oracle is the pool
price of the round), and debt purchases moving prices.

Units: coins (``_coin``), USD (``_usd``), moves as fractions, rounds as integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregation.exceptions import InvalidParamsError, InvalidShockError
from aggregation.exposure import CanonicalMap, margin_state
from aggregation.lending import (
    LendingAccounts,
    LendingBook,
    LendingParams,
    account_health,
    collateral_seized,
    lending_accounts,
    max_repay_amount,
)
from aggregation.margin import MarginParams, StandardMarginParams
from aggregation.risk import RiskInputs
from aggregation.scenarios import ScenarioGrid, derive_pmrm_grid

__all__ = [
    "CascadeParams",
    "CascadeResult",
    "ConstantProduct",
    "Deficits",
    "LinearImpact",
    "cascade",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
Bool = NDArray[np.bool_]
_NONE, _AMM, _LINEAR = 0, 1, 2  # liquidity model kinds
_NO_USERS = np.empty(0, np.intp)
_NO_USERS.flags.writeable = False


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


@dataclass(frozen=True, slots=True)
class CascadeParams:
    """``liquidity[a]`` per asset index (missing or None: infinite depth); ``grid`` prices
    margin (default Derive PMRM); ``tol`` bounds the last round's relative price change.

    A recovering price settles within ``tol`` after about ``half_life x log2(gap / tol)``
    rounds (~20 half-lives for a 100 % gap at 1e-6): keep ``max_rounds`` above that.
    """

    liquidity: tuple[Liquidity, ...] = ()
    max_rounds: int = 100
    tol: float = 1e-6
    grid: ScenarioGrid | None = None
    lending: LendingParams = field(default_factory=LendingParams)
    margin: MarginParams = field(default_factory=MarginParams)
    standard: StandardMarginParams = field(default_factory=StandardMarginParams)
    route_to_root: bool = True
    rate_annual: float = 0.0


@dataclass(frozen=True, slots=True, eq=False)
class Deficits:
    """Bad debt records, one per (round, position): who, where, in which asset, how much.

    Lending: ``asset`` is the debt asset written off. Margin: the root asset of the
    loss-making position's underlying, ``amount_coin`` = USD / its spot at liquidation.
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
class CascadeResult:
    """Per round ``r`` (evaluated at ``price_usd[r]``; the last row is the final price).

    ``(R, n_protocols, n_chains)``: liquidated collateral (value seized), debt repaid,
    notional closed and bad debt, USD. ``sold_coin`` (R, A): collateral sold per asset;
    ``perp_flow_coin`` (R, U): perps closed (+ sold). ``user_first_round``: -1 if never.
    ``final_inputs``: the book after the cascade, at the final prices.
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
class _Pools:
    """Liquidity models as arrays (kind per asset: none, constant product, linear)."""

    kind: Index
    size: Float  # reserve_usd or depth_usd
    decay: Float  # per round: 2^(-1 / half-life)
    floor: Float

    @classmethod
    def of(cls, liquidity: tuple[Liquidity, ...], n_assets: int) -> _Pools:
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
class _Market:
    """Pool prices (a root's: USD; a derived asset's: its peg) to USD prices and spots."""

    root: Index
    is_root: Bool
    u_root: Index  # (U,) root asset of each underlying, -1 none
    pool0: Float
    base: Float  # shocked pool prices
    spot0: Float
    open_usd: Float
    base_usd: Float
    pools: _Pools
    route_to_root: bool

    @classmethod
    def of(cls, inputs: RiskInputs, cmap: CanonicalMap, move: Float, prm: CascadeParams) -> _Market:
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
            _Pools.of(prm.liquidity, pool0.shape[0]),
            prm.route_to_root,
        )

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


@dataclass(frozen=True, slots=True, eq=False)
class _Liquidations:
    """What one round liquidates, per position row (coins unless stated)."""

    seized: Float  # per supply
    repaid: Float  # per borrow
    written_off: Float  # per borrow
    seized_collateral: Float  # per margin collateral row
    close_option: Bool
    close_perp: Bool
    option_deficit_usd: Float
    perp_deficit_usd: Float
    users: Index  # liquidated in this round, lending or margin

    def apply(self, x: RiskInputs) -> RiskInputs:
        """The book after these liquidations (prices unchanged)."""
        p, keep_p = x.perps, ~self.close_perp
        return replace(
            x,
            supplies=replace(x.supplies, amount=x.supplies.amount - self.seized),
            borrows=replace(x.borrows, amount=x.borrows.amount - self.repaid - self.written_off),
            collateral=replace(x.collateral, amount=x.collateral.amount - self.seized_collateral),
            options=replace(x.options, size=np.where(self.close_option, 0.0, x.options.size)),
            perps=replace(
                p,
                size=p.size * keep_p,
                open_notional_usd=p.open_notional_usd * keep_p,
                funding_usd=p.funding_usd * keep_p,
            ),
        )


def _liquidate(
    x: RiskInputs, acc: LendingAccounts, grid: ScenarioGrid, prm: CascadeParams
) -> _Liquidations:
    """Every liquidation of one round at ``x``'s prices (module docstring)."""
    s, b, price = x.supplies, x.borrows, x.asset_price_usd
    n = acc.user.shape[0]
    book = LendingBook(
        n, acc.supply_account, s.asset, s.amount, s.liquidation_threshold, s.ltv,
        s.liquidation_bonus, acc.borrow_account, b.asset, b.amount,
    )  # fmt: skip
    health = account_health(book, price, prm.lending)
    s_acc, b_acc, s_price = acc.supply_account, acc.borrow_account, price[s.asset]
    repay = max_repay_amount(book, health)
    target_usd = _sum(b_acc, repay * price[b.asset], n)
    coll = health.collateral_usd[s_acc]
    share = np.divide(s.amount * s_price, coll, out=np.zeros_like(coll), where=coll > 0.0)
    seized, repaid_usd = collateral_seized(
        share * target_usd[s_acc], np.ones_like(s_price), s_price, s.liquidation_bonus, s.amount
    )
    paid = _sum(s_acc, repaid_usd, n)
    fraction = np.divide(paid, target_usd, out=np.zeros(n), where=target_usd > 0.0)
    repaid = repay * np.minimum(fraction, 1.0)[b_acc]
    left = _sum(s_acc, (s.amount - seized) * s_price, n)
    exhausted = health.liquidatable & (left <= 0.0)  # Aave v3.3: the rest becomes a deficit
    written = np.where(exhausted[b_acc], b.amount - repaid, 0.0)
    margin = _margin_round(x, grid, prm)
    users = np.union1d(acc.user[health.liquidatable], margin[-1]).astype(np.intp)
    return _Liquidations(seized, repaid, written, *margin[:-1], users)


def _margin_round(
    x: RiskInputs, grid: ScenarioGrid, prm: CascadeParams
) -> tuple[Float, Bool, Bool, Float, Float, Index]:
    """Close margin accounts below maintenance: seized collateral rows, closed option and
    perp rows, deficits per option and perp row (USD), liquidated users."""
    o, p, c, n = x.options, x.perps, x.collateral, x.n_users
    open_rows = _sum(o.user, (o.size != 0.0) * 1.0, n) + _sum(p.user, (p.size != 0.0) * 1.0, n)
    liq = np.zeros(n, np.bool_)
    if open_rows.any():
        state = margin_state(x, grid, margin_params=prm.margin, standard_params=prm.standard,
                             rate_annual=prm.rate_annual)  # fmt: skip
        liq = (open_rows > 0.0) & (state.equity_usd < state.mm_usd)
    if not liq.any():
        n_o, n_p = o.size.shape[0], p.size.shape[0]
        no_o, no_p = np.zeros(n_o, np.bool_), np.zeros(n_p, np.bool_)
        return np.zeros(c.amount.shape[0]), no_o, no_p, np.zeros(n_o), np.zeros(n_p), _NO_USERS
    close_o, close_p, seize = liq[o.user], liq[p.user], liq[c.user]
    loss_o = np.where(close_o, np.maximum(-state.option_value_usd, 0.0), 0.0)
    loss_p = np.where(close_p, np.maximum(-state.perp_pnl_usd, 0.0), 0.0)
    value = _sum(c.user, seize * state.collateral_value_usd, n)
    value += _sum(o.user, close_o * state.option_value_usd, n)
    value += _sum(p.user, close_p * state.perp_pnl_usd, n)
    loss = _sum(o.user, loss_o, n) + _sum(p.user, loss_p, n)
    per_loss = np.divide(np.maximum(-value, 0.0), loss, out=np.zeros(n), where=loss > 0.0)
    return (
        np.where(seize, c.amount, 0.0), close_o, close_p, loss_o * per_loss[o.user],
        loss_p * per_loss[p.user], np.flatnonzero(liq).astype(np.intp),
    )  # fmt: skip


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
    """Per-round records and deficit rows, turned into a :class:`CascadeResult`."""

    u_root: Index
    first: Index
    rows: dict[str, list[Float]] = field(default_factory=dict)
    deficits: list[list[Float]] = field(default_factory=lambda: [[] for _ in range(7)])

    def add(self, r: int, x: RiskInputs, liq: _Liquidations) -> tuple[Float, Float]:
        """Record round ``r`` (``x``: the book it started from); return (sold, perp flow)."""
        s, b, c, o, p = x.supplies, x.borrows, x.collateral, x.options, x.perps
        price, spot, n_a, n_c = x.asset_price_usd, x.spot_usd, _n_assets(x), x.n_chains
        shape, size = (x.n_protocols, n_c), x.n_protocols * n_c

        def by_pc(book_p: Index, book_c: Index, values: Float) -> Float:
            return _sum(book_p * n_c + book_c, values, size).reshape(shape)

        perp_flow = np.where(liq.close_perp, p.size, 0.0)
        sold = _sum(s.asset, liq.seized, n_a) + _sum(c.asset, liq.seized_collateral, n_a)
        b_usd, written = price[b.asset], liq.written_off
        closed_o = np.where(liq.close_option, np.abs(o.size), 0.0) * spot[o.underlying]
        records = {
            "price_usd": price,
            "spot_usd": spot,
            "sold_coin": sold,
            "perp_flow_coin": _sum(p.underlying, perp_flow, x.n_underlyings),
            "liquidated_collateral_usd": by_pc(s.protocol, s.chain, liq.seized * price[s.asset])
            + by_pc(c.protocol, c.chain, liq.seized_collateral * price[c.asset]),
            "repaid_debt_usd": by_pc(b.protocol, b.chain, liq.repaid * b_usd),
            "closed_notional_usd": by_pc(o.protocol, o.chain, closed_o)
            + by_pc(p.protocol, p.chain, np.abs(perp_flow) * spot[p.underlying]),
            "bad_debt_usd": by_pc(b.protocol, b.chain, written * b_usd)
            + by_pc(o.protocol, o.chain, liq.option_deficit_usd)
            + by_pc(p.protocol, p.chain, liq.perp_deficit_usd),
            "users_liquidated": np.array([float(liq.users.size)]),
        }
        for key, value in records.items():
            self.rows.setdefault(key, []).append(value)
        self.first[liq.users[self.first[liq.users] < 0]] = r
        d_o, d_p, u_root = liq.option_deficit_usd, liq.perp_deficit_usd, self.u_root
        for part in (
            (b.user, b.protocol, b.chain, b.asset, written, written * b_usd),
            (o.user, o.protocol, o.chain, u_root[o.underlying], d_o / spot[o.underlying], d_o),
            (p.user, p.protocol, p.chain, u_root[p.underlying], d_p / spot[p.underlying], d_p),
        ):
            keep = part[5] > 0.0
            self.deficits[0].append(np.full(int(keep.sum()), float(r)))
            for i, column in enumerate(part, start=1):
                self.deficits[i].append(np.asarray(column, dtype=np.float64)[keep])
        return sold, _sum(p.underlying, perp_flow, x.n_underlyings)

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
    if prm.max_rounds < 1 or not prm.tol >= 0.0:
        raise InvalidParamsError(f"max_rounds {prm.max_rounds} must be >= 1, tol {prm.tol} >= 0")
    market = _Market.of(inputs, cmap, _check_shock(shock, _n_assets(inputs)), prm)
    grid = prm.grid or derive_pmrm_grid()
    s, b = inputs.supplies, inputs.borrows
    n_p, n_c = inputs.n_protocols, inputs.n_chains
    acc = lending_accounts((s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain), n_p, n_c)
    rec = _Recorder(market.u_root, np.full(inputs.n_users, -1, np.intp))
    sold_eff, pool, book, converged = np.zeros(_n_assets(inputs)), market.base, inputs, False
    for r in range(prm.max_rounds):
        book = replace(book, asset_price_usd=market.usd(pool), spot_usd=market.spot(pool))
        liq = _liquidate(book, acc, grid, prm)
        sold, perp_flow = rec.add(r, book, liq)
        book = liq.apply(book)
        sold_eff, new_pool = market.next_pool(sold_eff, sold, perp_flow, pool)
        moved = float(np.max(np.abs(new_pool / pool - 1.0), initial=0.0))
        pool = new_pool
        if liq.users.size == 0 and moved <= prm.tol:
            converged = True
            break
    final = replace(book, asset_price_usd=market.usd(pool), spot_usd=market.spot(pool))
    return rec.result(converged, final)
