"""``/v1/users/{address}/…``: one address's unified risk and its positions.

- ``GET /v1/users/{address}/risk[?grid=derive|deribit|span][&contagion=true]``: the
  :class:`aggregation.user_report.RiskReport` of ``rtrm risk --json``, from the cached
  snapshot (the overlay's when the address changed since the last full load), memoised
  per snapshot. ``contagion=true`` adds the address's share of systemic losses in the
  default historical scenarios (computed once per full snapshot, then O(1) per user).
- ``GET /v1/users/{address}/positions``: the address's rows in the store at the
  snapshot's watermark, exact: balances (collateral, debt, perps margin) in the token's
  smallest unit with its symbol and decimals, option positions with their series (WAD
  sizes and strikes), perp positions (WAD).

A malformed or mis-checksummed address is a 400 ``bad_address``; an address without
positions gets an all-zero report and empty lists (no risk is an answer).

Cold reports (the first of a user in a snapshot) are the library's arithmetic without its
per-snapshot part: a :class:`ReportBasis`, prepared once per snapshot in a worker thread,
holds what ``user_risk_report`` recomputes for every user -- the tail-risk scenarios (the
oracle returns, EWMA vols and seeded bootstrap draws depend on the snapshot only) and
each option contract's Black-76 P&L in each scenario -- so a report costs the user's own
``unified_risk`` (on its one-user slice) plus a gather and a dot product, ~2.5x less.
``unified_risk`` stays per user: rows of one pass over every user differ from one-user
results in the last bits for about one user in ten (the margin sums group positions
differently), and answers must equal the library's byte for byte. Each basis checks that
on a few users before it is used (a library change that breaks it turns the basis off,
with a warning); until it is ready, for users absent from the snapshot, and on overlays
of touched users (replaced every block), reports come from the library itself.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from numpy.typing import NDArray
from sqlalchemy import Connection, text

from aggregation.black76 import black76
from aggregation.hedging import plan_delta_hedge
from aggregation.risk import RiskInputs, UnifiedRisk, unified_risk
from aggregation.scenarios import ScenarioGrid, deribit_pm_grid, derive_pmrm_grid, span16_grid
from aggregation.snapshot import Snapshot, protocol_labels
from aggregation.systemic import DEFAULT_SCENARIOS, user_contagion
from aggregation.tailrisk import ewma_volatility, fhs_scenarios, var_es
from aggregation.user_report import (
    BreakdownRow,
    HedgeAdvice,
    LiquidationDistance,
    ReportParams,
    RiskReport,
    TailEstimate,
    UnderlyingGreeks,
    WorstScenario,
    user_risk_report,
)
from api.encoding import dumps
from api.http import (
    address_param,
    bool_param,
    choice_param,
    context,
    json_body_response,
    json_response,
)
from chains.spec import Registry

__all__ = ["GRIDS", "ReportBasis", "encode_report", "routes", "scenario_grid"]

GRIDS = ("derive", "deribit", "span")
_GRID_MAKERS: dict[str, Callable[[], ScenarioGrid]] = {
    "derive": derive_pmrm_grid,
    "deribit": deribit_pm_grid,
    "span": span16_grid,
}
_GRID_CACHE: dict[str, ScenarioGrid] = {}
_PLAIN = ReportParams()
_CONTAGION = replace(_PLAIN, contagion_scenarios=DEFAULT_SCENARIOS)

log = logging.getLogger(__name__)

Float = NDArray[np.float64]
Index = NDArray[np.intp]
# A basis costs tens of library reports of work (its check, its option table) and saves
# ~2 ms a report: overlays of touched users (replaced every block, each user asked a few
# times) and tiny books take the library's path.
_BASIS_MIN_USERS = 32
_CONTRACT_TABLE_BYTES = 256 << 20  # larger (scenarios x contracts): revalue per user
_CONTRACTS_AT_ONCE = 32  # Black-76 columns per call (bounds its temporaries)
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
_FIELDS: dict[type, tuple[str, ...]] = {}
_BREAKDOWN_FIELDS = tuple(f.name for f in fields(BreakdownRow))

_AS_OF = (
    "chain_id = :c AND account = :a AND valid_from <= :b AND (valid_to IS NULL OR valid_to > :b)"
)
_BALANCES = (
    "SELECT protocol, protocol_kind, kind, asset, amount FROM account_balance WHERE "
    + _AS_OF
    + " ORDER BY protocol, kind, asset"
)
_OPTIONS = (
    "SELECT p.protocol, p.series_id, p.size_wad, s.underlying, s.expiry, s.strike_wad, s.is_call "
    "FROM option_position p JOIN option_series s ON s.chain_id = p.chain_id "
    "AND s.protocol = p.protocol AND s.series_id = p.series_id AND s.block_number <= :b "
    "WHERE p.chain_id = :c AND p.account = :a AND p.valid_from <= :b "
    "AND (p.valid_to IS NULL OR p.valid_to > :b) ORDER BY p.protocol, s.expiry, p.series_id"
)
_PERPS = (
    "SELECT protocol, market, size_wad, open_notional_wad, entry_funding_index_wad "
    "FROM perp_position WHERE " + _AS_OF + " ORDER BY protocol, market"
)


def scenario_grid(name: str) -> ScenarioGrid:
    """The grid called ``name`` (one of :data:`GRIDS`), built once."""
    grid = _GRID_CACHE.get(name)
    if grid is None:
        grid = _GRID_CACHE[name] = _GRID_MAKERS[name]()
    return grid


async def user_risk(request: web.Request) -> web.Response:
    address = address_param(request)
    grid = choice_param(request, "grid", GRIDS, "derive")
    contagion = bool_param(request, "contagion")
    cache = context(request).snapshots
    entry = await (cache.entry() if contagion else cache.entry_for(address))
    params = _CONTAGION if contagion else _PLAIN

    def report() -> bytes:
        snapshot = entry.snapshot
        basis = None
        if snapshot.complete and snapshot.inputs.n_users >= _BASIS_MIN_USERS:
            basis = entry.prepared("report-basis", lambda: ReportBasis.prepare(snapshot))
        fast = None if basis is None else basis.report(address, grid, params.contagion_scenarios)
        if fast is not None:
            return encode_report(fast)
        return dumps(user_risk_report(snapshot, address, scenario_grid(grid), params))

    return json_body_response(entry.remembered(("risk", address, grid, contagion), report))


# ---------------------------------------------------------------------- cold reports
@dataclass(frozen=True, slots=True, eq=False)
class ReportBasis:
    """What every report on one snapshot shares: the tail-risk scenarios (the returns, the
    EWMA vols and the bootstrap draws of ``user_report._tail``, which depend on the
    snapshot only) and each option contract's P&L in each scenario."""

    snapshot: Snapshot
    fixed_tail: TailEstimate | None  # everybody's, when there is nothing to simulate
    moving: NDArray[np.bool_]  # underlyings whose price moved in the history
    shocks: Float  # (scenarios, moving underlyings), simple returns
    n_returns: int
    basis: str
    contract_pnl: Float | None  # (contracts, scenarios): Black-76 shocked - unshocked

    @classmethod
    def prepare(cls, snapshot: Snapshot) -> ReportBasis | None:
        """The basis, or None when its reports differ from the library's (logged)."""
        p = _PLAIN
        returns, basis = _returns(snapshot, p.min_returns)
        none, still = np.zeros((0, 0)), np.zeros(len(snapshot.underlyings), bool)
        if returns is None:
            fixed = TailEstimate(None, None, 1, "ewma", p.tail_scenarios, 0, "", basis)
            made = cls(snapshot, fixed, still, none, 0, basis, None)
        elif not (moving := (returns != 0.0).any(axis=0)).any():
            n = returns.shape[0]
            fixed = TailEstimate(0.0, 0.0, 1, "ewma", p.tail_scenarios, n, basis, None)
            made = cls(snapshot, fixed, moving, none, n, basis, None)
        else:
            r = returns[:, moving]  # tail_risk's scenarios: the same seed draws the same days
            vol = ewma_volatility(r)
            shocks = fhs_scenarios(
                r, vol.vol, vol.forecast, n_scenarios=p.tail_scenarios, horizon_days=1,
                seed=p.tail_seed,
            )  # fmt: skip
            table = _contract_pnl(snapshot, moving, shocks)
            made = cls(snapshot, None, moving, shocks, returns.shape[0], basis, table)
        return made if made._agrees() else None

    def _agrees(self) -> bool:
        """Whether a few users' reports are the library's, byte for byte (every grid)."""
        for i, address in enumerate(_checked_users(self.snapshot)):
            name = GRIDS[i % len(GRIDS)]
            fast = self.report(address, name, ())
            slow = user_risk_report(self.snapshot, address, scenario_grid(name), _PLAIN)
            if fast is not None and encode_report(fast) != dumps(slow):
                differ = [
                    f.name
                    for f in fields(RiskReport)
                    if dumps(getattr(fast, f.name)) != dumps(getattr(slow, f.name))
                ]
                log.warning(
                    "fast %s risk reports differ from the library's (%s: %s) at %s; "
                    "serving the library's reports, ~3 ms each, on this snapshot",
                    name, address, ", ".join(differ) or "order", dict(self.snapshot.watermark),
                )  # fmt: skip
                return False
        return True

    def report(self, address: str, grid_name: str, contagion: tuple[str, ...]) -> RiskReport | None:
        """``user_risk_report(snapshot, address, scenario_grid(grid_name), params)`` with
        ``params.contagion_scenarios = contagion``, for a checksummed ``address`` with
        positions in the snapshot (None for anybody else: the library answers them)."""
        snapshot = self.snapshot
        x = snapshot.inputs
        at = bisect_left(x.users, address)
        if not (at < x.n_users and x.users[at] == address):
            return None
        # user_report.user_risk_report, line for line, but for the tail
        grid, p = scenario_grid(grid_name), _PLAIN
        one = x.user_slice(at)
        contracts = x.option_instrument[x.offsets[0][at] : x.offsets[0][at + 1]]
        risk = unified_risk(one, grid)
        und, spot = snapshot.underlyings, x.spot_usd
        plan = plan_delta_hedge(
            net_delta=risk.delta_coin[0], net_gamma=risk.gamma[0], current_hedge=np.zeros(len(und)),
            spot_usd=spot, cost_fraction=p.hedge_cost_fraction,
            risk_aversion_per_usd=p.risk_aversion_per_usd,
        )  # fmt: skip
        return RiskReport(
            address=address,
            watermark=dict(snapshot.watermark),
            block_time_s=dict(snapshot.block_time_s),
            grid=grid.name,
            has_positions=any(int(offsets[-1]) for offsets in one.offsets),
            equity_usd=float(risk.equity_usd[0]),
            collateral_usd=float(risk.collateral_usd[0]),
            collateral_after_haircuts_usd=float(risk.collateral_haircut_usd[0]),
            debt_usd=float(risk.debt_usd[0]),
            options_mtm_usd=float(risk.options_mtm_usd[0]),
            perp_pnl_usd=float(risk.perp_pnl_usd[0]),
            margin_equity_usd=float(risk.margin_equity_usd[0]),
            initial_margin_usd=float(risk.im_usd[0]),
            maintenance_margin_usd=float(risk.mm_usd[0]),
            margin_ratio=float(risk.margin_ratio[0]),
            account_equity_usd=float(risk.account_equity_usd[0]),
            account_initial_margin_usd=float(risk.account_im_usd[0]),
            account_maintenance_margin_usd=float(risk.account_mm_usd[0]),
            account_margin_ratio=float(risk.account_margin_ratio[0]),
            liquidatable_accounts=int(risk.liquidatable_accounts[0]),
            health_factor=float(risk.health_factor[0]),
            greeks={
                u: UnderlyingGreeks(
                    float(spot[k]),
                    float(risk.delta_coin[0, k]),
                    float(risk.delta_usd[0, k]),
                    float(risk.gamma[0, k]),
                    float(risk.vega_per_vol_point[0, k]),
                    float(risk.theta_per_day[0, k]),
                )
                for k, u in enumerate(und)
            },
            distance_to_liquidation={
                u: LiquidationDistance(
                    100.0 * float(risk.liq_move_down[0, k]), 100.0 * float(risk.liq_move_up[0, k])
                )
                for k, u in enumerate(und)
            },
            hedge={
                u: HedgeAdvice(
                    float(risk.delta_coin[0, k]),
                    float(plan.target_hedge[k]),
                    float(plan.band_half_width[k]),
                    float(plan.lower[k]),
                    float(plan.upper[k]),
                    float(plan.trade[k]),
                    float(plan.trade[k] * spot[k]),
                    bool(plan.rebalance[k]),
                )
                for k, u in enumerate(und)
            },
            worst_scenario=_worst(snapshot, risk, grid),
            by_chain={c: _row(risk, "by_chain", j) for j, c in enumerate(snapshot.chain_ids)},
            by_protocol={
                name: _row(risk, "by_protocol", j) for j, name in enumerate(snapshot.protocols)
            },
            tail=self._tail(one, risk, contracts),
            warnings=snapshot.warnings,
            contagion=user_contagion(snapshot, address, contagion) if contagion else None,
        )

    def _tail(self, one: RiskInputs, risk: UnifiedRisk, contracts: Index) -> TailEstimate:
        """``user_report._tail`` on the shared scenarios; ``contracts``: the snapshot's
        contract of each of the user's options."""
        p = _PLAIN
        if self.fixed_tail is not None:
            return self.fixed_tail
        n_u = len(self.snapshot.underlyings)
        inst, k, o = one.instruments, one.option_instrument, one.options
        growth = np.exp(one.carry_annual[inst.underlying] * inst.expiry_years)
        forward = one.spot_usd[inst.underlying] * growth
        g = black76(forward, inst.strike_usd, inst.expiry_years, inst.vol_annual, 0.0, inst.is_call)
        held = np.bincount(k, o.size, minlength=inst.strike_usd.shape[0])  # units per contract
        option_delta_usd = np.bincount(
            inst.underlying, held * g.delta * growth * one.spot_usd[inst.underlying], minlength=n_u
        )
        linear = risk.delta_usd[0] - option_delta_usd
        pnl = linear[None, self.moving] @ self.shocks.T  # tail_risk's P&L, for one user
        if held.size:
            if self.contract_pnl is not None:
                # (scenarios, options) in C order, as the library's own array: the same
                # BLAS call on the same numbers gives the same bits
                change = np.ascontiguousarray(self.contract_pnl[contracts].T)
            else:
                full = np.zeros((self.shocks.shape[0], n_u))
                full[:, self.moving] = self.shocks
                shocked = forward[None, :] * (1.0 + full[:, inst.underlying])
                price = black76(
                    shocked, inst.strike_usd, inst.expiry_years, inst.vol_annual, 0.0, inst.is_call
                ).price
                change = price - g.price
            pnl += (change @ held)[:, None].T
        var_99, es_975 = var_es(pnl)
        var, es = float(var_99[0]), float(es_975[0])
        finite = math.isfinite(var) and math.isfinite(es)
        return TailEstimate(
            var if finite else None, es if finite else None, 1, "ewma", p.tail_scenarios,
            self.n_returns, self.basis, None if finite else "non-finite result",
        )  # fmt: skip


def encode_report(report: RiskReport) -> bytes:
    """``api.encoding.dumps(report)``, ~5x faster: orjson walks the dataclasses itself
    (fields as key-sorted objects, NaN and infinities as null, chain ids as strings)."""
    try:
        return orjson.dumps(report, default=_as_object, option=_ORJSON)
    except TypeError:  # an integer beyond 64 bits
        return dumps(report)


def _as_object(value: object) -> dict[str, Any]:
    names = _FIELDS.get(type(value))
    if names is None:
        if not dataclasses.is_dataclass(value):
            raise TypeError(f"{type(value).__name__} is not JSON")
        names = _FIELDS[type(value)] = tuple(f.name for f in fields(value))
    return {name: getattr(value, name) for name in names}


def _worst(snapshot: Snapshot, risk: UnifiedRisk, grid: ScenarioGrid) -> WorstScenario | None:
    s, u = int(risk.worst_scenario[0]), int(risk.worst_underlying[0])
    if s < 0 or u < 0:
        return None
    move = grid.spot_multipliers(len(snapshot.underlyings))[u, s] - 1.0
    return WorstScenario(
        snapshot.underlyings[u], 100.0 * float(move), int(grid.vol_direction[s]),
        float(grid.weights[s]), float(risk.worst_loss_usd[0]),
    )  # fmt: skip


def _row(risk: UnifiedRisk, which: str, j: int) -> BreakdownRow:
    b = getattr(risk, which)
    return BreakdownRow(*(float(getattr(b, name)[0, j]) for name in _BREAKDOWN_FIELDS))


def _contract_pnl(snapshot: Snapshot, moving: NDArray[np.bool_], shocks: Float) -> Float | None:
    """Each option contract's Black-76 P&L in each tail scenario, or None when the table
    would be too large or the contracts are not exactly their positions' terms."""
    x = snapshot.inputs
    inst, o, k = x.instruments, x.options, x.option_instrument
    n_s, n_c = shocks.shape[0], inst.strike_usd.shape[0]
    terms = ("underlying", "strike_usd", "expiry_years", "is_call", "vol_annual")
    if n_s * n_c * 8 > _CONTRACT_TABLE_BYTES or not all(
        np.array_equal(getattr(inst, name)[k], getattr(o, name)) for name in terms
    ):
        return None
    full = np.zeros((n_s, len(snapshot.underlyings)))
    full[:, moving] = shocks
    growth = np.exp(x.carry_annual[inst.underlying] * inst.expiry_years)
    forward = x.spot_usd[inst.underlying] * growth
    g = black76(forward, inst.strike_usd, inst.expiry_years, inst.vol_annual, 0.0, inst.is_call)
    table = np.empty((n_c, n_s))  # a contract's row is contiguous: cheap to gather
    for lo in range(0, n_c, _CONTRACTS_AT_ONCE):  # elementwise: columns in any grouping
        c = slice(lo, lo + _CONTRACTS_AT_ONCE)
        shocked = forward[None, c] * (1.0 + full[:, inst.underlying[c]])
        price = black76(
            shocked, inst.strike_usd[c], inst.expiry_years[c], inst.vol_annual[c], 0.0,
            inst.is_call[c],
        ).price  # fmt: skip
        table[c] = (price - g.price[c]).T
    return table


def _returns(snapshot: Snapshot, min_returns: int) -> tuple[Float | None, str]:
    """``user_report._returns``: aligned one-day-equivalent log returns ``(n, U)``."""
    day_s = 86_400
    history = snapshot.history
    if not history or any(h.price_usd.shape[0] < 2 for h in history):  # noqa: PLR2004
        return None, "no oracle history for some underlying"
    start = max(int(h.updated_at_s[0]) for h in history)
    now = max(snapshot.now_s, *(int(h.updated_at_s[-1]) for h in history))
    days = (now - start) // day_s
    daily = days >= min_returns + 1
    if daily:
        grid = now - day_s * np.arange(days, -1, -1, dtype=np.int64)
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
        returns *= np.sqrt(day_s / np.diff(grid).astype(np.float64))[:, None]
    if returns.shape[0] < min_returns:
        return None, f"history too short: {returns.shape[0]} returns, {min_returns} needed"
    chains = sorted({h.chain_id for h in history})
    return returns, f"{basis}; oracle history of chain(s) {', '.join(map(str, chains))}"


def _checked_users(snapshot: Snapshot) -> list[str]:
    """Three users spread over the book, the two with the most options, the one with the
    most perps (each grid gets two of them)."""
    x = snapshot.inputs
    picks = [int(i) for i in np.linspace(0, x.n_users - 1, 3)]
    picks += [int(i) for i in np.argsort(np.diff(x.offsets[0]), kind="stable")[-2:]]
    picks += [int(np.argmax(np.diff(x.offsets[1])))]
    return [x.users[i] for i in picks]


async def user_positions(request: web.Request) -> web.Response:
    address = address_param(request)
    ctx = context(request)
    entry = await ctx.snapshots.entry_for(address)
    cut = dict(entry.snapshot.watermark)

    def read() -> dict[str, Any]:
        with ctx.store.engine.connect() as conn:
            return _positions(conn, ctx.registry, address, cut)

    positions = await entry.computed(("positions", address), read)
    return json_response(positions)


def _positions(
    conn: Connection, registry: Registry, address: str, cut: Mapping[int, int]
) -> dict[str, Any]:
    """Every row of ``address`` as of ``cut`` (module docstring), grouped by chain."""
    chains = [c for c in registry.chains if c.chain_id in cut]
    labels = protocol_labels(chains)
    out = []
    for chain in chains:
        values = {"c": chain.chain_id, "a": address, "b": cut[chain.chain_id]}
        tokens = {t.address.lower(): t for t in chain.tokens}
        balances = []
        for protocol, protocol_kind, kind, asset, amount in conn.execute(text(_BALANCES), values):
            token = tokens.get(str(asset).lower())
            balances.append(
                {
                    "protocol": labels.get((chain.chain_id, protocol), protocol),
                    "protocol_address": protocol,
                    "protocol_kind": protocol_kind,
                    "kind": kind,
                    "token": asset,
                    "symbol": None if token is None else token.symbol,
                    "asset": None if token is None else token.asset_id,
                    "decimals": None if token is None else token.decimals,
                    "amount": int(amount),
                }
            )
        options = [
            {
                "protocol": labels.get((chain.chain_id, protocol), protocol),
                "series_id": int(series),
                "underlying": underlying,
                "expiry": int(expiry),
                "strike_wad": int(strike),
                "is_call": bool(is_call),
                "size_wad": int(size),
            }
            for protocol, series, size, underlying, expiry, strike, is_call in conn.execute(
                text(_OPTIONS), values
            )
        ]
        perps = [
            {
                "protocol": labels.get((chain.chain_id, protocol), protocol),
                "market": market,
                "size_wad": int(size),
                "open_notional_wad": int(notional),
                "entry_funding_index_wad": int(funding),
            }
            for protocol, market, size, notional, funding in conn.execute(text(_PERPS), values)
        ]
        if balances or options or perps:
            out.append(
                {
                    "chain_id": chain.chain_id,
                    "block": cut[chain.chain_id],
                    "balances": balances,
                    "options": options,
                    "perps": perps,
                }
            )
    return {"address": address, "watermark": dict(cut), "chains": out}


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/users/{address}/risk", user_risk),
        web.get("/v1/users/{address}/positions", user_positions),
    ]
