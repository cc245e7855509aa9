"""Systemic views of a store snapshot: exposure per asset and each user's contagion.

Concept: the math of issue 5 (:mod:`aggregation.exposure`, :mod:`aggregation.cascade`,
:mod:`aggregation.contagion`, :mod:`aggregation.stress`) works on index arrays; this module
and :mod:`aggregation.systemic_stress` run it on a :class:`~aggregation.snapshot.Snapshot`
and label the answers (asset ids, ``"lending@1"``, chain ids, addresses) as frozen
dataclasses with stable field names, which :func:`rtrm.output.to_json` writes as they are.
Pure: no I/O, no clock, no logging. The public surface is here (``stress_report`` and its
types are re-exported).

- :func:`exposure_report`: per root asset (variants rolled up: wstETH and rvETH into ETH),
  collateral, debt and option/perp deltas per (protocol, chain), holder concentration
  (HHI and top holders on collateral USD) and the liquidation ladder on
  :data:`~aggregation.exposure.LADDER_MOVES` (-90 % .. +200 % in 5 % steps).
- :func:`user_contagion` (the ``contagion`` field of the user risk report): a user's share
  of the losses in named scenarios (:data:`DEFAULT_SCENARIOS`): their liquidated
  collateral (``initial - final`` amounts, at the cascade's final prices) and bad debt, as
  shares of all users'. And how much of their collateral sits in *loaded* assets. The
  **load** of a root is the USD value, at the stressed price, of the collateral in that
  root (variants included) held by accounts that a :data:`LOAD_MOVE` (-30 %) fall of that
  root alone makes liquidatable (the ladder's ``collateral_coin`` at that level): what
  forced sellers would dump into its market. A root is **loaded** when its load is > 0 and
  at least :data:`LOADED_SHARE` (25 %) of the loads summed over roots. The scenario
  cascades run once per (snapshot, scenarios, params) and are cached (the last four).

Invariants: venue rows sum to the asset's totals; exposure totals equal the positions'
sums; a user's shares lie in [0, 1] and sum to 1 over users when the total is > 0; an
address without positions gets zeros. Units: USD (``_usd``), coins of the root asset
(``_coin``), moves and shares as fractions.
"""

from __future__ import annotations

import difflib
import threading
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

from aggregation.cascade import cascade
from aggregation.exceptions import InvalidParamsError, UnknownAssetError
from aggregation.exposure import LADDER_MOVES, CanonicalMap, asset_exposure, liquidation_ladder
from aggregation.snapshot import Snapshot, checksummed
from aggregation.stress import DEFAULT_ALIASES, Shock
from aggregation.systemic_stress import (
    DeficitRow,
    NetworkContagion,
    NodeContagion,
    StressParams,
    StressReport,
    StressRound,
    VenueLoss,
    cascade_params,
    fill_record,
    scenario,
    shock_vector,
    snapshot_warnings,
    stress_report,
)

__all__ = [
    "DEFAULT_SCENARIOS",
    "LOADED_SHARE",
    "LOAD_MOVE",
    "AssetExposureReport",
    "AssetLoad",
    "DeficitRow",
    "ExposureReport",
    "Holder",
    "LadderLevel",
    "NetworkContagion",
    "NodeContagion",
    "ScenarioShare",
    "StressParams",
    "StressReport",
    "StressRound",
    "UserContagion",
    "VenueExposure",
    "VenueLoss",
    "exposure_report",
    "root_asset",
    "scenario",
    "stress_report",
    "user_contagion",
]

Float = NDArray[np.float64]
DEFAULT_SCENARIOS = ("black-thursday-2020", "ust-luna-2022", "cascade-2025-10-10")
"""Named scenarios of :func:`user_contagion`: the worst day, a depeg week, a recent crash."""
LOAD_MOVE = -0.30
"""The fall of a root at which its load is measured."""
LOADED_SHARE = 0.25
"""A root is loaded when its load is at least this share of the loads summed over roots."""
_CACHE: dict[tuple[object, ...], tuple[Snapshot, object, _Scenarios]] = {}
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def _sum(index: NDArray[np.intp], weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


def _share(part: float, total: float) -> float:
    return part / total if total > 0.0 else 0.0


def root_asset(snapshot: Snapshot, name: str) -> str:
    """The root asset id of ``name`` (case-insensitive, aliases: stETH -> WSTETH -> ETH)."""
    upper = [a.upper() for a in snapshot.assets]
    key = name.strip().upper()
    for candidate in (key, DEFAULT_ALIASES.get(key, "")):
        if candidate in upper:
            return snapshot.assets[int(snapshot.asset_canonical[upper.index(candidate)])]
    known = sorted(set(upper) | {k for k, v in DEFAULT_ALIASES.items() if v in upper})
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UnknownAssetError(f"unknown asset {name.strip()!r}{hint} (known: {', '.join(known)})")


# ------------------------------------------------------------------------------- exposure
@dataclass(frozen=True, slots=True)
class VenueExposure:
    """One root asset at one (protocol, chain); coins of the root and USD."""

    protocol: str
    chain_id: int
    collateral_coin: float
    collateral_usd: float
    debt_coin: float
    debt_usd: float
    options_delta_coin: float
    options_delta_usd: float
    perps_delta_coin: float
    perps_delta_usd: float


@dataclass(frozen=True, slots=True)
class Holder:
    address: str
    collateral_usd: float
    share: float


@dataclass(frozen=True, slots=True)
class LadderLevel:
    """The accounts liquidatable if the root moved by ``move``: their collateral (all of it,
    and the part in this root, which liquidators would sell into its market) and debt."""

    move: float
    price_usd: float
    collateral_usd: float
    collateral_coin: float
    margin_collateral_usd: float
    debt_usd: float
    accounts: int


@dataclass(frozen=True, slots=True)
class AssetExposureReport:
    """One root asset; ``total`` is every venue summed (protocol ``"all"``, chain id 0)."""

    asset: str
    variants: tuple[str, ...]
    price_usd: float
    total: VenueExposure
    net_delta_coin: float
    by_venue: tuple[VenueExposure, ...]  # non-zero rows only
    hhi: float
    effective_holders: float
    n_holders: int
    top_holders: tuple[Holder, ...]
    ladder: tuple[LadderLevel, ...]


@dataclass(frozen=True, slots=True)
class ExposureReport:
    watermark: dict[int, int]
    block_time_s: dict[int, int]
    concentration_basis: str
    assets: tuple[AssetExposureReport, ...]
    warnings: tuple[str, ...]


def exposure_report(
    snapshot: Snapshot, asset: str | None = None, *, top_n: int = 10
) -> ExposureReport:
    """Exposure of every root asset with a position (or of ``asset``'s root) at the snapshot."""
    x, ids = snapshot.inputs, snapshot.assets
    labels, chains = snapshot.protocols, snapshot.chain_ids
    cmap = CanonicalMap.of(x, snapshot.asset_canonical)
    exp = asset_exposure(x, cmap, top_n=top_n)
    lad = liquidation_ladder(x, cmap, moves=LADDER_MOVES)
    names = [f.name for f in fields(VenueExposure)][2:]
    cubes = {name: getattr(exp, name) for name in names}
    size = np.abs(np.stack(list(cubes.values()))).sum(axis=0)  # (K, P, C)
    live = size.sum(axis=(1, 2)) + lad.collateral_usd.sum(axis=1) > 0.0
    roots = [ids[int(a)] for a in cmap.roots]
    wanted = [roots.index(root_asset(snapshot, asset))] if asset else np.flatnonzero(live)
    levels = {name: getattr(lad, name) for name in [f.name for f in fields(LadderLevel)][1:]}
    con, out = exp.concentration, []
    for k in map(int, wanted):
        venues = zip(*np.nonzero(size[k]), strict=True)
        totals = {name: cube[k].sum() for name, cube in cubes.items()}
        holders = zip(con.top_user[k], con.top_share[k], strict=True)
        report = AssetExposureReport(
            asset=roots[k],
            variants=tuple(ids[a] for a in np.flatnonzero(cmap.asset_slot == k)),
            price_usd=float(exp.price_usd[k]),
            total=fill_record(VenueExposure, totals, (), protocol="all", chain_id=0),
            net_delta_coin=float(exp.net_delta_coin[k]),
            by_venue=tuple(
                fill_record(VenueExposure, cubes, (k, p, c), protocol=labels[p], chain_id=chains[c])
                for p, c in venues
            ),
            hhi=float(con.hhi[k]),
            effective_holders=float(con.effective_holders[k]),
            n_holders=int(con.n_holders[k]),
            top_holders=tuple(
                Holder(x.users[u], float(s * con.total_usd[k]), float(s))
                for u, s in holders
                if u >= 0
            ),
            ladder=tuple(
                fill_record(LadderLevel, levels, (k, i), move=float(m))
                for i, m in enumerate(lad.moves)
            ),
        )
        out.append(report)
    return ExposureReport(
        dict(snapshot.watermark),
        dict(snapshot.block_time_s),
        con.basis,
        tuple(out),
        snapshot_warnings(snapshot),
    )


# ------------------------------------------------------------------------------- users
@dataclass(frozen=True, slots=True)
class ScenarioShare:
    """The user's part of one scenario's cascade; shares of all users' totals (0 if none).
    Liquidated collateral is valued at the cascade's final prices."""

    scenario: str
    moves: dict[str, float]
    liquidated: bool
    first_round: int | None
    liquidated_collateral_usd: float
    liquidated_collateral_share: float
    bad_debt_usd: float
    bad_debt_share: float
    system_liquidated_collateral_usd: float
    system_bad_debt_usd: float


@dataclass(frozen=True, slots=True)
class AssetLoad:
    """A root's systemic load (module docstring) and the user's collateral in it (USD)."""

    asset: str
    load_usd: float
    load_share: float
    loaded: bool
    user_collateral_usd: float
    user_share_of_asset: float


@dataclass(frozen=True, slots=True)
class UserContagion:
    address: str
    scenarios: tuple[ScenarioShare, ...]
    load_move: float
    loaded_assets: tuple[str, ...]
    collateral_usd: float
    collateral_in_loaded_usd: float
    collateral_in_loaded_fraction: float
    by_asset: tuple[AssetLoad, ...]


@dataclass(frozen=True, slots=True, eq=False)
class _Scenarios:
    """Per-user results of the scenario cascades and the roots' loads, for one snapshot."""

    shocks: tuple[Shock, ...]
    moves: tuple[dict[str, float], ...]
    liquidated_usd: Float  # (S, n_users)
    bad_debt_usd: Float  # (S, n_users)
    first_round: NDArray[np.intp]  # (S, n_users)
    holdings_usd: Float  # (n_users, K)
    load_usd: Float  # (K,)


def _scenarios(snapshot: Snapshot, shocks: tuple[Shock, ...], prm: StressParams) -> _Scenarios:
    x, n, ids = snapshot.inputs, snapshot.inputs.n_users, snapshot.assets
    cmap = CanonicalMap.of(x, snapshot.asset_canonical)
    s, c, price = x.supplies, x.collateral, x.asset_price_usd
    moves, liquidated, bad, first = [], [], [], []
    for shock in shocks:
        vector = shock_vector(snapshot, shock)[1]
        r = cascade(x, cmap, vector, cascade_params(snapshot, prm))
        f, p = r.final_inputs, r.final_inputs.asset_price_usd
        seized = _sum(s.user, (s.amount - f.supplies.amount) * p[s.asset], n)
        liquidated.append(seized + _sum(c.user, (c.amount - f.collateral.amount) * p[c.asset], n))
        bad.append(_sum(r.deficits.user, r.deficits.amount_usd, n))
        first.append(r.user_first_round)
        moves.append({a: float(m) for a, m in zip(ids, vector, strict=True) if m})
    k_roots, slot = cmap.n_roots, cmap.asset_slot
    hold = _sum(s.user * k_roots + slot[s.asset], s.amount * price[s.asset], n * k_roots)
    hold += _sum(c.user * k_roots + slot[c.asset], c.amount * price[c.asset], n * k_roots)
    lad = liquidation_ladder(x, cmap, moves=[LOAD_MOVE])
    return _Scenarios(
        shocks,
        tuple(moves),
        np.array(liquidated).reshape(len(shocks), n),
        np.array(bad).reshape(len(shocks), n),
        np.array(first, np.intp).reshape(len(shocks), n),
        hold.reshape(n, k_roots),
        lad.collateral_coin[:, 0] * lad.price_usd[:, 0],
    )


def _cached(snapshot: Snapshot, shocks: tuple[Shock, ...], prm: StressParams) -> _Scenarios:
    """:func:`_scenarios`, once per (snapshot, shocks, params) object; the last few kept."""
    key = (id(snapshot), shocks, id(prm))
    with _CACHE_LOCK:  # API threads share it; the first caller computes, the others wait
        hit = _CACHE.get(key)
        if hit is None or hit[0] is not snapshot or hit[1] is not prm:
            while len(_CACHE) >= _CACHE_SIZE:
                del _CACHE[next(iter(_CACHE))]
            hit = _CACHE[key] = (snapshot, prm, _scenarios(snapshot, shocks, prm))
        return hit[2]


def user_contagion(
    snapshot: Snapshot,
    address: str,
    scenarios: Sequence[str | Shock] = DEFAULT_SCENARIOS,
    params: StressParams | None = None,
) -> UserContagion:
    """``address``'s share of the losses in ``scenarios`` and its collateral in loaded
    assets (module docstring). Needs the whole book: a snapshot of listed users is refused.
    An address without positions gets zeros."""
    if not snapshot.complete:
        raise InvalidParamsError(
            "contagion shares need every user's positions: load the snapshot without users="
        )
    address = checksummed(address)
    shocks = tuple(scenario(s) if isinstance(s, str) else s for s in scenarios)
    run = _cached(snapshot, shocks, params or _DEFAULT_PARAMS)
    users, ids = snapshot.inputs.users, snapshot.assets
    at = bisect_left(users, address)
    u = at if at < len(users) and users[at] == address else None
    out = []
    for i, shock in enumerate(run.shocks):
        liq, bad = run.liquidated_usd[i], run.bad_debt_usd[i]
        my_liq, my_bad = (0.0, 0.0) if u is None else (float(liq[u]), float(bad[u]))
        first = -1 if u is None else int(run.first_round[i, u])
        total_liq, total_bad = float(liq.sum()), float(bad.sum())
        share = ScenarioShare(
            scenario=shock.name,
            moves=run.moves[i],
            liquidated=first >= 0,
            first_round=first if first >= 0 else None,
            liquidated_collateral_usd=my_liq,
            liquidated_collateral_share=_share(my_liq, total_liq),
            bad_debt_usd=my_bad,
            bad_debt_share=_share(my_bad, total_bad),
            system_liquidated_collateral_usd=total_liq,
            system_bad_debt_usd=total_bad,
        )
        out.append(share)
    roots = CanonicalMap.of(snapshot.inputs, snapshot.asset_canonical).roots
    load, total_load = run.load_usd, float(run.load_usd.sum())
    loaded = (load > 0.0) & (load >= LOADED_SHARE * total_load)
    held = np.zeros(roots.shape[0]) if u is None else run.holdings_usd[u]
    per_root = run.holdings_usd.sum(axis=0)
    by_asset = tuple(
        AssetLoad(
            asset=ids[int(a)],
            load_usd=float(load[k]),
            load_share=_share(float(load[k]), total_load),
            loaded=bool(loaded[k]),
            user_collateral_usd=float(held[k]),
            user_share_of_asset=_share(float(held[k]), float(per_root[k])),
        )
        for k, a in enumerate(roots)
        if load[k] > 0.0 or held[k] > 0.0
    )
    mine, in_loaded = float(held.sum()), float(held[loaded].sum())
    return UserContagion(
        address=address,
        scenarios=tuple(out),
        load_move=LOAD_MOVE,
        loaded_assets=tuple(ids[int(a)] for a in roots[loaded]),
        collateral_usd=mine,
        collateral_in_loaded_usd=in_loaded,
        collateral_in_loaded_fraction=_share(in_loaded, mine),
        by_asset=by_asset,
    )


_DEFAULT_PARAMS = StressParams()
"""One object, so that default calls share the cache."""
