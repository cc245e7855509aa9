"""What every risk report on one snapshot shares, computed once: a report's *basis*.

Concept: a report (:mod:`aggregation.user_report`) reads a user's row of
:func:`~aggregation.risk.unified_risk` and a one-day tail estimate. Everything it reads
that is not the user's own is per snapshot, and lives here:

- :class:`TailBasis` (per snapshot and set of users): one-day returns from the oracle
  history, their EWMA vols, the seeded bootstrap draws (filtered historical simulation,
  :mod:`aggregation.tailrisk`) and each option contract's Black-76 P&L in each draw;
- :class:`ReportBasis` (adds a scenario grid): every covered user's
  :class:`~aggregation.risk.UnifiedRisk` and delta hedge, in one vectorised pass.

A basis covers the whole book (the API prepares one per snapshot and grid, then each
report costs O(the user's positions x tail scenarios)) or one user's slice (what
:func:`~aggregation.user_report.user_risk_report` does: O(that user)). Both give a user the
same bits, by construction rather than by a check: ``unified_risk`` is batch invariant
(every per-user sum adds the same values in the same order whoever else is in the batch;
``tests/aggregation/test_risk_batch.py``), the draws depend on the snapshot's history and
the settings only, and a user's tail P&L is summed from per-position values (elementwise
Black-76 on the position's own contract terms), in the user's position order, by code that
sees nothing but that user's rows.

Tail risk: returns are daily closes (the last round of each day, ending at the snapshot's
now) when the history spans at least ``min_returns + 1`` days; otherwise consecutive
oracle rounds on a common time grid, each return scaled to one day by sqrt(1 day / its
interval) (Brownian scaling -- a devnet's history spans minutes). Fewer than
``min_returns`` returns: no estimate, with a note. Options are fully revalued (Black-76,
vol and time held), everything else is linear in each underlying's move: the user's spot
delta in USD (``UnifiedRisk.delta_usd``) less its options' part. VaR 99 % and ES 97.5 % of
the one-day P&L, USD, positive = loss. Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from aggregation.black76 import black76
from aggregation.hedging import HedgePlan, plan_delta_hedge
from aggregation.risk import RiskInputs, UnifiedRisk, unified_risk
from aggregation.scenarios import ScenarioGrid
from aggregation.snapshot import Snapshot
from aggregation.tailrisk import ewma_volatility, fhs_scenarios, var_es

__all__ = ["ReportBasis", "ReportParams", "TailBasis", "TailResult"]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
DAY_S = 86_400
_TABLE_BYTES = 256 << 20  # a larger contract table (contracts x draws): revalue per user
_CONTRACTS_AT_ONCE = 32  # Black-76 columns per call while filling the table
_POSITIONS_AT_ONCE = 64  # a user's option rows summed per pass (bounds the temporaries)


@dataclass(frozen=True, slots=True)
class ReportParams:
    """Hedging costs and tail-risk settings of a report.

    ``contagion_scenarios`` is per report (a basis ignores it): the named scenarios whose
    cascades report the user's share of losses; () leaves ``contagion`` None.
    """

    hedge_cost_fraction: float = 5e-4  # proportional cost of trading the hedge (5 bp)
    risk_aversion_per_usd: float = 1e-4  # Whalley-Wilmott gamma
    tail_scenarios: int = 10_000
    tail_seed: int = 0
    min_returns: int = 20
    contagion_scenarios: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TailResult:
    """One user's tail estimate (None, with a ``note``, when there is none)."""

    var_99_usd: float | None
    es_975_usd: float | None
    note: str | None


_NO_TAIL = TailResult(None, None, None)


@dataclass(frozen=True, slots=True, eq=False)
class TailBasis:
    """The tail-risk draws of one snapshot, and what its contracts make in each.

    ``inputs``: the users covered (the snapshot's, or one user's slice). ``shocks``: simple
    returns ``(draws, moving underlyings)``, None when there is nothing to simulate (then
    every user gets ``fixed``). Per contract of ``inputs.instruments``: the forward, its
    growth ``e^(carry T)``, the Black-76 price and forward delta, and ``change_usd``, the
    price change in each draw ``(contracts, draws)`` (None when too large: revalued per
    user, with the same arithmetic).
    """

    snapshot: Snapshot
    inputs: RiskInputs
    params: ReportParams
    n_returns: int
    source: str  # how the returns were made ("" without returns)
    fixed: TailResult | None
    moving: NDArray[np.bool_]  # (U,) underlyings whose price moved in the history
    shocks: Float | None
    forward_usd: Float
    growth: Float
    price_usd: Float
    delta: Float
    change_usd: Float | None

    @classmethod
    def prepare(
        cls, snapshot: Snapshot, params: ReportParams, inputs: RiskInputs | None = None
    ) -> TailBasis:
        """The draws of ``snapshot`` for the users of ``inputs`` (default: all of them)."""
        x = snapshot.inputs if inputs is None else inputs
        inst = x.instruments
        growth = np.exp(x.carry_annual[inst.underlying] * inst.expiry_years)
        forward = x.spot_usd[inst.underlying] * growth
        g = black76(forward, inst.strike_usd, inst.expiry_years, inst.vol_annual, 0.0, inst.is_call)
        returns, source = _returns(snapshot, params.min_returns)
        moving = np.zeros(x.n_underlyings, np.bool_)
        fixed, shocks, n_returns = None, None, 0
        if returns is None:
            fixed, source = TailResult(None, None, source), ""
        else:
            n_returns = int(returns.shape[0])
            moving = (returns != 0.0).any(axis=0)  # a constant price has no vol (nor shocks)
            if not moving.any():
                fixed = TailResult(0.0, 0.0, None)
            else:
                r = returns[:, moving]
                vol = ewma_volatility(r)
                shocks = fhs_scenarios(
                    r, vol.vol, vol.forecast, n_scenarios=params.tail_scenarios,
                    horizon_days=1, seed=params.tail_seed,
                )  # fmt: skip
        made = cls(
            snapshot, x, params, n_returns, source, fixed, moving, shocks, forward, growth,
            g.price, g.delta, None,
        )  # fmt: skip
        if shocks is None or shocks.shape[0] * inst.strike_usd.shape[0] * 8 > _TABLE_BYTES:
            return made
        table = np.empty((inst.strike_usd.shape[0], shocks.shape[0]))
        for lo in range(0, table.shape[0], _CONTRACTS_AT_ONCE):
            rows = np.arange(lo, min(lo + _CONTRACTS_AT_ONCE, table.shape[0]))
            table[rows] = made._change(rows)
        return replace(made, change_usd=table)

    def _change(self, contracts: Index) -> Float:
        """Each of ``contracts``' price change in each draw, ``(len(contracts), draws)``:
        elementwise, so a contract's row is the same bits in any table."""
        assert self.shocks is not None
        inst = self.inputs.instruments
        full = np.zeros((self.shocks.shape[0], self.moving.shape[0]))
        full[:, self.moving] = self.shocks
        c = contracts
        shocked = self.forward_usd[None, c] * (1.0 + full[:, inst.underlying[c]])
        price = black76(
            shocked, inst.strike_usd[c], inst.expiry_years[c], inst.vol_annual[c], 0.0,
            inst.is_call[c],
        ).price  # fmt: skip
        return np.ascontiguousarray((price - self.price_usd[c]).T)

    def estimate(self, user_index: int, delta_usd: Float) -> TailResult:
        """VaR 99 % and ES 97.5 % of user ``user_index`` of ``inputs``, whose spot delta in
        USD per underlying is ``delta_usd`` (module docstring)."""
        if self.fixed is not None or self.shocks is None:
            return self.fixed or _NO_TAIL
        x, i = self.inputs, user_index
        lo, hi = int(x.offsets[0][i]), int(x.offsets[0][i + 1])
        contracts, size = x.option_instrument[lo:hi], x.options.size[lo:hi]
        u = x.instruments.underlying[contracts]
        option_delta_usd = np.bincount(
            u,
            size * self.delta[contracts] * self.growth[contracts] * x.spot_usd[u],
            minlength=x.n_underlyings,
        )
        linear = delta_usd - option_delta_usd
        pnl = np.zeros(self.shocks.shape[0])
        for j, k in enumerate(self.moving.nonzero()[0].tolist()):  # a few underlyings
            pnl += linear[k] * self.shocks[:, j]
        for start in range(0, contracts.shape[0], _POSITIONS_AT_ONCE):
            c = contracts[start : start + _POSITIONS_AT_ONCE]
            change = self._change(c) if self.change_usd is None else self.change_usd[c]
            change *= size[start : start + _POSITIONS_AT_ONCE, None]
            pnl += np.add.reduce(change, axis=0)
        var_99, es_975 = var_es(pnl)
        var, es = float(var_99), float(es_975)
        if math.isfinite(var) and math.isfinite(es):
            return TailResult(var, es, None)
        return TailResult(None, None, "non-finite result")


@dataclass(frozen=True, slots=True, eq=False)
class ReportBasis:
    """Every covered user's unified risk on ``grid`` and delta hedge (Whalley-Wilmott band,
    from no hedge held; ``(users, U)`` arrays), and the tail draws they share.
    ``move_pct``: each grid scenario's spot move per underlying, ``(U, S)``, percent."""

    tail: TailBasis
    grid: ScenarioGrid
    risk: UnifiedRisk
    hedge: HedgePlan
    move_pct: Float

    @classmethod
    def prepare(cls, tail: TailBasis, grid: ScenarioGrid) -> ReportBasis:
        """``unified_risk`` of ``tail.inputs`` on ``grid``: one pass over their books."""
        x, p = tail.inputs, tail.params
        risk = unified_risk(x, grid)
        hedge = plan_delta_hedge(
            net_delta=risk.delta_coin, net_gamma=risk.gamma,
            current_hedge=np.zeros_like(risk.gamma), spot_usd=x.spot_usd,
            cost_fraction=p.hedge_cost_fraction, risk_aversion_per_usd=p.risk_aversion_per_usd,
        )  # fmt: skip
        move_pct = 100.0 * (grid.spot_multipliers(x.n_underlyings) - 1.0)
        return cls(tail, grid, risk, hedge, move_pct)

    @property
    def snapshot(self) -> Snapshot:
        return self.tail.snapshot

    @property
    def inputs(self) -> RiskInputs:
        return self.tail.inputs

    def user_index(self, address: str) -> int | None:
        """Row of a checksummed ``address``, None when the basis does not cover it."""
        users = self.tail.inputs.users
        at = bisect_left(users, address)
        return at if at < len(users) and users[at] == address else None

    def has_positions(self, user_index: int) -> bool:
        i = user_index
        return any(int(off[i + 1]) > int(off[i]) for off in self.tail.inputs.offsets)


def _returns(snapshot: Snapshot, min_returns: int) -> tuple[Float | None, str]:
    """Aligned one-day-equivalent log returns ``(n, U)`` and how they were made (or why
    there are none)."""
    history = snapshot.history
    if not history or any(h.price_usd.shape[0] < 2 for h in history):  # noqa: PLR2004
        return None, "no oracle history for some underlying"
    start = max(int(h.updated_at_s[0]) for h in history)
    now = max(snapshot.now_s, *(int(h.updated_at_s[-1]) for h in history))
    days = (now - start) // DAY_S
    daily = days >= min_returns + 1
    if daily:
        grid = now - DAY_S * np.arange(days, -1, -1, dtype=np.int64)
        basis = f"{days} daily closes"
    else:
        times = np.unique(np.concatenate([h.updated_at_s for h in history]))
        grid = times[times >= start]
        basis = f"{grid.size - 1} oracle-round returns scaled to 1 day by sqrt(1 day / interval)"
    prices = np.stack(
        [h.price_usd[np.searchsorted(h.updated_at_s, grid, side="right") - 1] for h in history],
        axis=1,
    )
    returns: Float = np.diff(np.log(prices), axis=0)
    if not daily and returns.shape[0]:
        returns *= np.sqrt(DAY_S / np.diff(grid).astype(np.float64))[:, None]
    if returns.shape[0] < min_returns:
        return None, f"history too short: {returns.shape[0]} returns, {min_returns} needed"
    chains = sorted({h.chain_id for h in history})
    return returns, f"{basis}; oracle history of chain(s) {', '.join(map(str, chains))}"
