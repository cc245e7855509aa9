"""Portfolio (cross) and standard (isolated) margin of options, perps and collateral.

Concept: a margin *account* holds option and perp positions and collateral. Positions are
flat arrays with an ``*_account`` index; options point into a table of unique
:class:`Instruments` so that Black-76 runs once per listed contract, not per position.

Portfolio margin (Derive PMRM style, REFERENCES.md section 3). Each underlying ``u`` is
margined on its own grid (:mod:`aggregation.scenarios`) and the worst losses are summed
over underlyings, as if the worst cases coincided (conservative, Deribit-style). Per
(account, u) and scenario ``s`` the P&L is::

    options     sum size x (Black76(F x mult[u, s], K, T, shocked vol) - mark),  F = S e^(carry T)
    perps       size x S x (mult[u, s] - 1)                    (linear)
    collateral  value_usd (after haircut) x (mult[u, s] - 1), only collateral tied to u

``loss_u = max(0, -min_s weight[s] x P&L[s])`` (tail moves are dampened by their weight;
Deribit's extended moves charge short out-of-the-money options only). Then::

    MM = sum_u  mm_factor x loss_u + 3 % perp notional + 0.3 % option notional
    IM = MM + 1 % perp notional + 0.2 % option notional

with notionals gross (|size| x spot), so IM > MM whenever the account holds any position.

Standard (isolated) margin per short option (Derive SRM): call IM = max(0.15 - OTM%, 0.13)
x S, MM = 0.09 x S, ``OTM% = max(K - S, 0) / S``. Derive adds the option's mark to both
because it compares them with cash; RTRM's equity already carries ``-mark`` for a short, so
the requirement here is the part above the mark. Put analogue: ``OTM% = max(S - K, 0) / S``
and both requirements capped at ``K - mark``, the most a short put can still lose. Long
options need nothing; perps need 6.6 % (IM) and 5 % (MM) of notional (Derive BTC/ETH).

:func:`margin_liquidation_moves` finds, per account and underlying, the first move of that
underlying alone (on the trial moves :data:`MOVES_DOWN` / :data:`MOVES_UP`) that puts
equity below maintenance. Everything is priced once by :func:`value_instruments` (one
Black-76 call over base, scenario and trial-move columns) and reused by all three.

All requirements are USD amounts (``_usd``) to compare with the account's equity
(collateral after haircut + options mark-to-market + perp P&L): the account is
liquidatable when ``equity < MM``. Invariants: ``IM >= MM >= 0``. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp  # type: ignore[import-untyped]  # scipy ships no stubs
from numpy.typing import NDArray

from aggregation.black76 import Greeks, black76
from aggregation.scenarios import ScenarioGrid

__all__ = [
    "MOVES_DOWN",
    "MOVES_UP",
    "Instruments",
    "MarginBook",
    "MarginParams",
    "PortfolioMargin",
    "StandardMargin",
    "StandardMarginParams",
    "Valuation",
    "margin_liquidation_moves",
    "portfolio_margin",
    "standard_margin",
    "value_instruments",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
_SPARSE_MIN = 512  # positions from which a CSR matrix beats np.bincount (the same sums)
_SCENARIO_BLOCK = 8  # scenarios revalued per pass over the positions
_FULL_SCAN_MAX = 200_000  # option rows x trial moves up to which every move is evaluated
MOVES_DOWN = -np.concatenate(
    [np.arange(1, 21) / 100, np.arange(9, 21) / 40, np.arange(11, 20) / 20, [0.99]]
)
"""Trial down-moves for the liquidation search: 1 % steps to -20 %, 2.5 % to -50 %, 5 %
to -95 %, then -99 %."""
MOVES_UP = np.concatenate(
    [np.arange(1, 21) / 100, np.arange(9, 21) / 40, np.arange(6, 11) / 10, np.arange(5, 21) / 4]
)
"""Trial up-moves: 1 % steps to +20 %, 2.5 % to +50 %, 10 % to +100 %, 25 % to +500 %."""
MOVES_DOWN.flags.writeable = MOVES_UP.flags.writeable = False  # shared defaults: read-only


@dataclass(frozen=True, slots=True)
class MarginParams:
    """Portfolio-margin factors (Derive PMRM defaults)."""

    mm_factor: float = 0.8
    perp_mm_contingency: float = 0.03
    option_mm_contingency: float = 0.003
    perp_im_addon: float = 0.01
    option_im_addon: float = 0.002


@dataclass(frozen=True, slots=True)
class StandardMarginParams:
    """Isolated-margin factors (Derive standard manager, BTC/ETH)."""

    option_base: float = 0.15
    option_min: float = 0.13
    option_mm: float = 0.09
    perp_im: float = 0.066
    perp_mm: float = 0.05


@dataclass(frozen=True, slots=True, eq=False)
class Instruments:
    """Unique option contracts (with the vol the caller's surface gives each one)."""

    underlying: Index
    strike_usd: Float
    expiry_years: Float
    is_call: NDArray[np.bool_]
    vol_annual: Float

    @classmethod
    def unique(
        cls,
        underlying: Index,
        strike_usd: Float,
        expiry_years: Float,
        is_call: NDArray[np.bool_],
        vol_annual: Float,
    ) -> tuple[Instruments, Index]:
        """Deduplicate per-position contracts: ``(instruments, position -> instrument)``."""
        n = underlying.shape[0]
        order = np.lexsort((vol_annual, expiry_years, strike_usd, is_call, underlying))
        cols = (underlying, strike_usd, expiry_years, is_call, vol_annual)  # field order
        new = np.ones(n, dtype=np.bool_)
        if n > 1:
            new[1:] = np.logical_or.reduce([c[order][1:] != c[order][:-1] for c in cols])
        inverse = np.empty(n, dtype=np.intp)
        inverse[order] = np.cumsum(new) - 1
        first = order[new]
        return cls(*(c[first] for c in cols)), inverse  # type: ignore[arg-type]

    def forward_usd(self, spot_usd: Float, carry_annual: Float) -> Float:
        u = self.underlying
        return spot_usd[u] * np.exp(carry_annual[u] * self.expiry_years)


@dataclass(frozen=True, slots=True, eq=False)
class Valuation:
    """Every instrument priced at base, under each scenario and at each trial move.

    ``greeks`` are Black-76 forward Greeks at base, ``(I,)`` each; ``growth = dF/dS =
    e^(carry T)`` turns them into spot Greeks. ``*_change_usd`` are value changes per unit,
    ``(I, S)`` for the grid's scenarios and ``(I, G)`` for the trial moves (vol unchanged).
    """

    grid: ScenarioGrid
    spot_usd: Float
    forward_usd: Float
    growth: Float
    greeks: Greeks
    scenario_change_usd: Float
    moves_down: Float
    moves_up: Float
    down_change_usd: Float
    up_change_usd: Float


def value_instruments(
    instruments: Instruments,
    spot_usd: Float,
    carry_annual: Float,
    grid: ScenarioGrid,
    *,
    rate_annual: float = 0.0,
    moves_down: Float = MOVES_DOWN,
    moves_up: Float = MOVES_UP,
) -> Valuation:
    """Price ``instruments`` once for all margin uses: one Black-76 call, ``(I, 1+S+G)``."""
    inst, u = instruments, instruments.underlying
    growth = np.exp(carry_annual[u] * inst.expiry_years)
    forward = spot_usd[u] * growth
    n_s, n_down = grid.n_scenarios, moves_down.shape[0]
    trial = 1.0 + np.concatenate([moves_down, moves_up])
    mult = np.concatenate(
        [
            np.ones((u.shape[0], 1)),
            grid.spot_multipliers(spot_usd.shape[0])[u],
            np.broadcast_to(trial, (u.shape[0], trial.shape[0])),
        ],
        axis=1,
    )
    vol = np.repeat(inst.vol_annual[:, None], mult.shape[1], axis=1)
    vol[:, 1 : 1 + n_s] = grid.shocked_vols(inst.vol_annual, inst.expiry_years)
    col = (slice(None), None)
    g = black76(
        forward[col] * mult,
        inst.strike_usd[col],
        inst.expiry_years[col],
        vol,
        rate_annual,
        inst.is_call[col],
    )
    change = g.price[:, 1:] - g.price[:, :1]
    return Valuation(
        grid=grid,
        spot_usd=spot_usd,
        forward_usd=forward,
        growth=growth,
        greeks=Greeks(*(x[:, 0] for x in g)),
        scenario_change_usd=change[:, :n_s],
        moves_down=moves_down,
        moves_up=moves_up,
        down_change_usd=change[:, n_s : n_s + n_down],
        up_change_usd=change[:, n_s + n_down :],
    )


@dataclass(frozen=True, slots=True, eq=False)
class MarginBook:
    """Positions of ``n_accounts`` margin accounts over ``n_underlyings`` underlyings.

    ``option_size`` and ``perp_size`` are signed units of the underlying (+ long).
    ``collateral_value_usd`` is already after haircut; ``collateral_underlying`` is -1 for
    collateral that no scenario moves (stablecoins).
    """

    n_accounts: int
    n_underlyings: int
    instruments: Instruments
    option_account: Index
    option_instrument: Index
    option_size: Float
    perp_account: Index
    perp_underlying: Index
    perp_size: Float
    collateral_account: Index
    collateral_underlying: Index
    collateral_value_usd: Float


@dataclass(frozen=True, slots=True, eq=False)
class PortfolioMargin:
    """Per-account results, shape ``(n_accounts,)`` unless stated.

    ``worst_scenario`` / ``worst_underlying``: the scenario and underlying of the largest
    per-underlying loss (-1 when nothing loses). ``pnl_usd``: weighted scenario P&L,
    ``(n_accounts, U, S)``, only when requested.
    """

    im_usd: Float
    mm_usd: Float
    worst_loss_usd: Float
    worst_scenario: Index
    worst_underlying: Index
    im_by_underlying_usd: Float  # (n_accounts, U)
    mm_by_underlying_usd: Float  # (n_accounts, U)
    pnl_usd: Float | None


@dataclass(frozen=True, slots=True, eq=False)
class StandardMargin:
    """Isolated requirements: totals ``(n_accounts,)`` and per underlying ``(n_accounts, U)``."""

    im_usd: Float
    mm_usd: Float
    im_by_underlying_usd: Float
    mm_by_underlying_usd: Float


def _sum_by(index: Index, weights: Float, n: int) -> Float:
    """``out[k] = sum of weights[index == k]``, length ``n``, float64, added in order."""
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


def _row_sums(values: Float) -> Float:
    """``values.sum(axis=1)`` of an ``(n, U)`` array, added left to right (a cumulative sum
    is sequential by definition): every row adds its ``U`` values in the same order
    whatever ``n`` is, where numpy's own reduction may group them differently for a long
    array than for one row."""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0])
    return np.cumsum(values, axis=1)[:, -1]


@dataclass(frozen=True, slots=True, eq=False)
class _Grouped:
    """Positions grouped into rows, ready for ``sum data x table[col]`` per row.

    Every row adds its positions' products ``data x table[col]`` one by one, in the
    positions' order, from 0: the same operations whatever other rows there are (one user
    or the whole book), so a user's results do not depend on the batch. Large books use a
    CSR matrix with one entry per position (duplicates kept, rows in position order; scipy's
    kernel is that loop, with a separate multiply and add), small ones ``np.bincount`` (the
    same loop, without building a matrix): tests/aggregation/test_risk_batch.py checks
    that they agree bit for bit. Neither merges a user's positions per contract first nor
    uses BLAS, whose grouping depends on the shapes.
    """

    row: Index
    col: Index
    data: Float
    n_rows: int
    matrix: Any  # scipy CSR when large, else None

    @classmethod
    def of(cls, row: Index, col: Index, data: Float, n_rows: int, n_cols: int) -> _Grouped:
        matrix = None
        if row.shape[0] >= _SPARSE_MIN:
            order = np.argsort(row, kind="stable")
            indptr = np.zeros(n_rows + 1, np.intp)
            np.cumsum(np.bincount(row, minlength=n_rows), out=indptr[1:])
            matrix = sp.csr_array((data[order], col[order], indptr), shape=(n_rows, n_cols))
        return cls(row, col, data, n_rows, matrix)

    def dot(self, table: Float, rows: Index | None = None) -> Float:
        """``(n_rows or len(rows), K)`` sums; ``rows`` restricts to those rows."""
        if self.matrix is not None:
            return np.asarray((self.matrix if rows is None else self.matrix[rows]) @ table)
        k = table.shape[1]
        cells = (self.row[:, None] * k + np.arange(k)).ravel()
        products = (self.data[:, None] * table[self.col]).ravel()
        out = _sum_by(cells, products, self.n_rows * k).reshape(self.n_rows, k)
        return out if rows is None else out[rows]


@dataclass(frozen=True, slots=True, eq=False)
class _Rows:
    """Row ``account x U + u`` of every position, notionals and linear exposure per row."""

    n_rows: int
    option: Index
    option_notional_usd: Float
    perp_notional_usd: Float
    linear_usd: Float  # moves 1:1 with the row's underlying: perps + tied collateral

    @classmethod
    def of(cls, book: MarginBook, spot_usd: Float) -> _Rows:
        n_u, n_rows = book.n_underlyings, book.n_accounts * book.n_underlyings
        opt_u = book.instruments.underlying[book.option_instrument]
        opt_row = book.option_account * n_u + opt_u
        perp_row = book.perp_account * n_u + book.perp_underlying
        perp_spot = spot_usd[book.perp_underlying]
        tied = book.collateral_underlying >= 0
        coll_row = book.collateral_account[tied] * n_u + book.collateral_underlying[tied]
        linear = _sum_by(perp_row, book.perp_size * perp_spot, n_rows)
        linear += _sum_by(coll_row, book.collateral_value_usd[tied], n_rows)
        return cls(
            n_rows=n_rows,
            option=opt_row,
            option_notional_usd=_sum_by(
                opt_row, np.abs(book.option_size) * spot_usd[opt_u], n_rows
            ),
            perp_notional_usd=_sum_by(perp_row, np.abs(book.perp_size) * perp_spot, n_rows),
            linear_usd=linear,
        )


def portfolio_margin(
    book: MarginBook,
    valuation: Valuation,
    params: MarginParams | None = None,
    *,
    return_pnl: bool = False,
) -> PortfolioMargin:
    """Cross-margin requirement of every account on ``valuation.grid`` (module docstring)."""
    p = params or MarginParams()
    n_acc, n_u = book.n_accounts, book.n_underlyings
    inst = book.instruments
    rows = _Rows.of(book, valuation.spot_usd)
    forward = valuation.forward_usd
    otm = np.where(inst.is_call, inst.strike_usd > forward, inst.strike_usd < forward)
    best, worst_col, pnl_all = _scan_scenarios(
        book, rows, valuation.grid, valuation.scenario_change_usd, otm, return_pnl=return_pnl
    )
    loss = np.maximum(0.0, -best)
    mm_rows = p.mm_factor * loss
    mm_rows += p.perp_mm_contingency * rows.perp_notional_usd
    mm_rows += p.option_mm_contingency * rows.option_notional_usd
    im_rows = mm_rows + p.perp_im_addon * rows.perp_notional_usd
    im_rows += p.option_im_addon * rows.option_notional_usd
    loss_au = loss.reshape(n_acc, n_u)
    worst_u = np.argmax(loss_au, axis=1)
    at = np.arange(n_acc)
    has_loss = loss_au[at, worst_u] > 0.0
    worst_s = worst_col.reshape(n_acc, n_u)[at, worst_u]
    mm_au, im_au = mm_rows.reshape(n_acc, n_u), im_rows.reshape(n_acc, n_u)
    return PortfolioMargin(
        im_usd=_row_sums(im_au),
        mm_usd=_row_sums(mm_au),
        worst_loss_usd=_row_sums(loss_au),
        worst_scenario=np.where(has_loss, worst_s, -1),
        worst_underlying=np.where(has_loss, worst_u, -1),
        im_by_underlying_usd=im_au,
        mm_by_underlying_usd=mm_au,
        pnl_usd=pnl_all,
    )


def _scan_scenarios(
    book: MarginBook,
    rows: _Rows,
    grid: ScenarioGrid,
    change: Float,
    otm: NDArray[np.bool_],
    *,
    return_pnl: bool,
) -> tuple[Float, Index, Float | None]:
    """Lowest weighted P&L per row and its scenario, over blocks of scenarios.

    Blocks bound the memory (rows x block, not rows x S) and read the positions once per
    block. ``change`` is each instrument's value change per scenario ``(I, S)``.
    """
    n_acc, n_u, n_s = book.n_accounts, book.n_underlyings, grid.n_scenarios
    n_inst = change.shape[0]
    grouped = _Grouped.of(
        rows.option, book.option_instrument, book.option_size, rows.n_rows, n_inst
    )
    extended = grid.short_otm_array()
    short_otm_only = grouped
    if extended.any():  # Deribit: extended moves charge short OTM options only
        short_otm = (book.option_size < 0.0) & otm[book.option_instrument]
        sizes = np.where(short_otm, book.option_size, 0.0)
        short_otm_only = _Grouped.of(
            rows.option, book.option_instrument, sizes, rows.n_rows, n_inst
        )
    mult, weight = grid.spot_multipliers(n_u), grid.weight_array()
    linear = rows.linear_usd.reshape(n_acc, n_u, 1)
    pnl_all = np.empty((n_acc, n_u, n_s)) if return_pnl else None
    best = np.full(rows.n_rows, np.inf)
    worst_col = np.zeros(rows.n_rows, dtype=np.intp)
    step = n_s if rows.n_rows * n_s <= _FULL_SCAN_MAX else _SCENARIO_BLOCK
    for start in range(0, n_s, step):
        cols = slice(start, start + step)
        block = grouped.dot(change[:, cols])
        ext = extended[cols]
        if ext.any():
            block[:, ext] = short_otm_only.dot(change[:, cols][:, ext])
        block3 = block.reshape(n_acc, n_u, -1)
        block3 += linear * np.where(ext, 0.0, mult[:, cols] - 1.0)[None, :, :]
        block *= weight[cols]
        if pnl_all is not None:
            pnl_all[:, :, cols] = block3
        j = np.argmin(block, axis=1)
        value = block[np.arange(block.shape[0]), j]
        better = value < best
        best = np.where(better, value, best)
        worst_col = np.where(better, j + start, worst_col)
    return best, worst_col, pnl_all


def standard_margin(
    book: MarginBook, valuation: Valuation, params: StandardMarginParams | None = None
) -> StandardMargin:
    """Isolated requirement: the sum of per-position requirements (module docstring)."""
    p = params or StandardMarginParams()
    inst = book.instruments
    spot, strike = valuation.spot_usd[inst.underlying], inst.strike_usd
    mark = valuation.greeks.price
    otm = np.where(inst.is_call, np.maximum(strike - spot, 0.0), np.maximum(spot - strike, 0.0))
    put_cap = np.where(inst.is_call, np.inf, np.maximum(strike - mark, 0.0))
    im_unit = np.minimum(np.maximum(p.option_base - otm / spot, p.option_min) * spot, put_cap)
    mm_unit = np.minimum(p.option_mm * spot, put_cap)
    short = np.maximum(-book.option_size, 0.0)
    rows = _Rows.of(book, valuation.spot_usd)
    inst_of = book.option_instrument
    im_rows = _sum_by(rows.option, short * im_unit[inst_of], rows.n_rows)
    mm_rows = _sum_by(rows.option, short * mm_unit[inst_of], rows.n_rows)
    im_rows += p.perp_im * rows.perp_notional_usd
    mm_rows += p.perp_mm * rows.perp_notional_usd
    shape = (book.n_accounts, book.n_underlyings)
    im_au, mm_au = im_rows.reshape(shape), mm_rows.reshape(shape)
    return StandardMargin(_row_sums(im_au), _row_sums(mm_au), im_au, mm_au)


def margin_liquidation_moves(
    book: MarginBook,
    valuation: Valuation,
    *,
    equity_usd: Float,
    mm_usd: Float,
    mm_by_underlying_usd: Float,
    coarse_every: int = 4,
) -> tuple[Float, Float]:
    """First move of each underlying, down and up, that puts equity below maintenance.

    Returns ``(down, up)``, each ``(n_accounts, U)``: the move of underlying ``u`` alone at
    which ``f(m) = equity(m) - MM(m) < 0`` first happens along ``valuation.moves_down`` /
    ``moves_up`` (fractions sorted by |move|); 0 when it already does, NaN when no trial
    move triggers. ``MM(m) = MM + m x MM_u``: the underlying's share of the requirement
    scales with its spot -- exact for perps, collateral and contingencies, first order for
    the options' scenario loss (re-running the grid at every trial spot would cost a factor
    of the grid size). Options are revalued in full at each trial move.

    Precision: rows without options have ``f`` linear in ``m`` and get the exact root
    (within the grid's range). Rows with options are scanned on every ``coarse_every``-th
    trial move; inside the first coarse bracket with ``f < 0`` every move is scanned and
    the root is linearly interpolated between the last move with ``f >= 0`` and the first
    with ``f < 0``: error below one grid step (1 % of spot within +-20 %), in practice
    second order in it. A dip below maintenance that opens and closes between two coarse
    points is not seen.
    """
    n_acc, n_u = book.n_accounts, book.n_underlyings
    rows = _Rows.of(book, valuation.spot_usd)
    f0 = np.repeat(equity_usd - mm_usd, n_u)
    slope = rows.linear_usd - mm_by_underlying_usd.reshape(-1)  # df/dm without options
    has_options = np.zeros(rows.n_rows, dtype=np.bool_)
    has_options[rows.option] = True
    option_rows = np.flatnonzero(has_options)
    compact = np.cumsum(has_options) - 1
    n_inst = book.instruments.strike_usd.shape[0]
    grouped = _Grouped.of(
        compact[rows.option], book.option_instrument, book.option_size, option_rows.size, n_inst
    )
    out: list[Float] = []
    for moves, change in (
        (valuation.moves_down, valuation.down_change_usd),
        (valuation.moves_up, valuation.up_change_usd),
    ):
        end = float(moves[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            root = -f0 / slope
        reachable = (root * end >= 0.0) & (np.abs(root) <= abs(end)) & (slope * end < 0.0)
        result = np.where(f0 < 0.0, 0.0, np.where(reachable, root, np.nan))
        if option_rows.size:
            scan = _Scan(grouped, change, f0[option_rows], slope[option_rows], moves, coarse_every)
            result[option_rows] = scan.roots()
        out.append(result.reshape(n_acc, n_u))
    return out[0], out[1]


@dataclass(frozen=True, slots=True, eq=False)
class _Scan:
    """``f(m) = f0 + options' value change + slope x m`` on the trial moves of one side."""

    grouped: _Grouped
    change: Float  # (I, G)
    f0: Float
    slope: Float
    moves: Float
    coarse_every: int

    def values(self, cols: Any, rows: Index | None = None) -> Float:
        f0 = self.f0 if rows is None else self.f0[rows]
        slope = self.slope if rows is None else self.slope[rows]
        f: Float = f0[:, None] + self.grouped.dot(self.change[:, cols], rows)
        f += slope[:, None] * self.moves[cols]
        return f

    def roots(self) -> Float:
        n_moves = self.moves.shape[0]
        coarse = np.arange(self.coarse_every - 1, n_moves, self.coarse_every)
        if coarse.size == 0 or coarse[-1] != n_moves - 1:
            coarse = np.append(coarse, n_moves - 1)
        if self.f0.shape[0] * n_moves <= _FULL_SCAN_MAX:
            f = self.values(slice(None))
            return self._interpolate(f, coarse, f[:, coarse], None)
        f_coarse = self.values(coarse)
        roots = np.where(self.f0 < 0.0, 0.0, np.nan)
        negative = f_coarse < 0.0
        hit = negative.any(axis=1) & (self.f0 >= 0.0)
        bracket = np.argmax(negative, axis=1)
        for j in np.unique(bracket[hit]):  # at most len(coarse) brackets
            sel = np.flatnonzero(hit & (bracket == j))
            lo = int(coarse[j - 1]) + 1 if j > 0 else 0
            window = slice(lo, int(coarse[j]) + 1)
            f = np.full((sel.size, n_moves), np.inf)
            f[:, window] = self.values(window, sel)
            f[:, coarse[: j + 1]] = f_coarse[sel, : j + 1]  # the same points, bit for bit
            roots[sel] = self._interpolate(f, coarse, f_coarse[sel], sel)
        return roots

    def _interpolate(self, f: Float, coarse: Index, f_coarse: Float, rows: Index | None) -> Float:
        """Root in the first coarse bracket with ``f < 0`` (NaN where there is none yet)."""
        f0 = self.f0 if rows is None else self.f0[rows]
        negative = f_coarse < 0.0
        hit = negative.any(axis=1) & (f0 >= 0.0)
        roots = np.where(f0 < 0.0, 0.0, np.nan)
        if not hit.any():
            return roots
        f, f_coarse, f0, negative = f[hit], f_coarse[hit], f0[hit], negative[hit]
        j = np.argmax(negative, axis=1)
        lo = np.where(j > 0, coarse[j - 1] + 1, 0)
        col = np.arange(f.shape[1])
        window = (f < 0.0) & (col >= lo[:, None]) & (col <= coarse[j][:, None])
        k = np.argmax(window, axis=1)
        at = np.arange(f.shape[0])
        f_prev = np.where(k > 0, f[at, k - 1], f0)
        m_prev = np.where(k > 0, self.moves[k - 1], 0.0)
        f_hit = f[at, k]
        roots[hit] = m_prev + (self.moves[k] - m_prev) * f_prev / (f_prev - f_hit)
        return roots
