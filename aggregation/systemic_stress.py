"""Stress report of one shock on a store snapshot: the cascade and the protocol network.

Concept: :func:`stress_report` runs :func:`aggregation.cascade.cascade` for a
:class:`~aggregation.stress.Shock` on a :class:`~aggregation.snapshot.Snapshot` and labels
what it returns: per round the prices (every asset, USD), liquidated collateral, repaid
debt, closed notional and bad debt, with the non-zero (protocol, chain) rows; the same
summed over rounds; users affected; the deficits summed per (protocol, chain, asset); and
the contagion of that shock through the protocol network
(:func:`aggregation.contagion.protocol_network`, nodes = (protocol, chain)):

- reserves of a node are ``reserve_ratio x`` (its lending debt + margin collateral, USD at
  the snapshot's prices); the initial DebtRank distress is ``min(1, bad debt / reserves)``
  (1 with bad debt and no reserves); both DebtRank variants propagate it;
- Eisenberg-Noe clears the node liabilities (tokens one node issues held by another,
  ``asset_issuer``) with each node's external assets cut by its bad debt.

Market depth (``StressParams.depth_usd``) is infinite unless given: no price impact, as on
the devnet, whose oracles do not react to liquidation sales, and no fire-sale edges in the
network. With a depth, the asset trades in a linear market in the cascade and, for a root,
its shared collateral links the nodes (fire-sale edges).

Scenarios resolve by name or by a date they cover (:func:`scenario`); moves on assets the
snapshot does not hold are left out with a warning. Pure: no I/O, no clock, no logging.
Invariants: per-venue bad debt sums to the total, and so do the deficit rows; a zero shock
liquidates only what is liquidatable already. Units: USD (``_usd``), coins of the asset
(``_coin``), moves and distress as fractions, rounds as integers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from aggregation.cascade import CascadeParams, CascadeResult, LinearImpact, cascade
from aggregation.contagion import debtrank, eisenberg_noe, protocol_network
from aggregation.exceptions import InvalidParamsError
from aggregation.exposure import CanonicalMap
from aggregation.snapshot import Snapshot
from aggregation.stress import (
    DEFAULT_ALIASES,
    HISTORICAL,
    Shock,
    historical,
    parse_shock,
    resolve_asset,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "DeficitRow",
    "NetworkContagion",
    "NodeContagion",
    "StressParams",
    "StressReport",
    "StressRound",
    "VenueLoss",
    "cascade_params",
    "fill_record",
    "scenario",
    "shock_vector",
    "snapshot_warnings",
    "stress_report",
]

Float = NDArray[np.float64]
Record = TypeVar("Record", bound="DataclassInstance")


def _sum(index: NDArray[np.intp], weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


def fill_record(cls: type[Record], arrays: Mapping[str, Any], at: Any, **given: Any) -> Record:
    """``cls`` with every field not ``given`` read from the same-named array at ``at``."""
    values = {
        f.name: given[f.name] if f.name in given else np.asarray(arrays[f.name])[at].item()
        for f in fields(cls)
    }
    return cls(**values)


def scenario(name: str) -> Shock:
    """A historical scenario by name or by a date it covers (``2020-03-12``, ``2022-05``)."""
    key = name.strip()
    dated = re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", key) is not None
    for shock in HISTORICAL:
        covers = dated and shock.start[: len(key)] <= key <= shock.end[: len(key)]
        if shock.name == key.lower() or covers:
            return shock
    return historical(key)  # raises, with a did-you-mean


def snapshot_warnings(snapshot: Snapshot, *extra: str) -> tuple[str, ...]:
    """The snapshot's warnings, a note if it holds listed users only, then ``extra``."""
    partial = () if snapshot.complete else ("snapshot of listed users only: totals are partial",)
    return (*snapshot.warnings, *partial, *extra)


@dataclass(frozen=True, slots=True)
class StressParams:
    """``depth_usd``: linear market depth per asset id (USD sold that would take the price
    to 0; missing: infinite), used by the cascade (:class:`~aggregation.cascade.LinearImpact`
    with ``half_life_rounds``) and, for roots, by the fire-sale edges of the network.
    ``reserve_ratio``: nodes' reserves per USD of lending debt + margin collateral.
    ``asset_issuer``: asset id -> (protocol, chain id) issuing it (direct network edges).
    ``cascade``: rounds, lending and margin parameters (and liquidity of other assets)."""

    depth_usd: Mapping[str, float] = field(default_factory=dict)
    half_life_rounds: float = math.inf
    reserve_ratio: float = 0.05
    asset_issuer: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    cascade: CascadeParams = field(default_factory=CascadeParams)


@dataclass(frozen=True, slots=True)
class VenueLoss:
    """Liquidations at one (protocol, chain), in one round or summed over the cascade."""

    protocol: str
    chain_id: int
    liquidated_collateral_usd: float
    repaid_debt_usd: float
    closed_notional_usd: float
    bad_debt_usd: float


@dataclass(frozen=True, slots=True)
class StressRound:
    """Round ``round``, evaluated at ``prices_usd``; ``by_venue``: non-zero rows only."""

    round: int
    prices_usd: dict[str, float]
    liquidated_collateral_usd: float
    repaid_debt_usd: float
    closed_notional_usd: float
    bad_debt_usd: float
    users_liquidated: int
    by_venue: tuple[VenueLoss, ...]


@dataclass(frozen=True, slots=True)
class DeficitRow:
    """Bad debt left at one (protocol, chain) in one asset, and how many users left it."""

    protocol: str
    chain_id: int
    asset: str
    amount_coin: float
    amount_usd: float
    users: int


@dataclass(frozen=True, slots=True)
class NodeContagion:
    """One (protocol, chain) node: DebtRank distress (fraction of reserves lost) and its
    Eisenberg-Noe clearing (``owed``/``paid``/``shortfall``: its liabilities to other
    nodes; ``creditor_loss``: what others fail to pay it). ``defaulted``: its own bad debt
    wipes out its reserves (initial distress 1), or it cannot pay its liabilities in full."""

    protocol: str
    chain_id: int
    reserves_usd: float
    bad_debt_usd: float
    initial_distress: float
    distress_original: float
    distress_differential: float
    loss_original_usd: float
    loss_differential_usd: float
    owed_usd: float
    paid_usd: float
    shortfall_usd: float
    creditor_loss_usd: float
    defaulted: bool


@dataclass(frozen=True, slots=True)
class NetworkContagion:
    """DebtRank R (induced distress, reserve-weighted) of both variants, and the nodes."""

    debtrank_original: float
    debtrank_differential: float
    defaulted_original: int
    defaulted_differential: int
    clearing_shortfall_usd: float
    direct_edges: int
    fire_sale_edges: int
    nodes: tuple[NodeContagion, ...]


@dataclass(frozen=True, slots=True)
class StressReport:
    watermark: dict[int, int]
    block_time_s: dict[int, int]
    scenario: str
    start: str
    end: str
    moves: dict[str, float]
    depth_usd: dict[str, float]
    converged: bool
    n_rounds: int
    rounds: tuple[StressRound, ...]
    final_prices_usd: dict[str, float]
    liquidated_collateral_usd: float
    repaid_debt_usd: float
    closed_notional_usd: float
    bad_debt_usd: float
    users_affected: int
    by_venue: tuple[VenueLoss, ...]
    deficits: tuple[DeficitRow, ...]
    contagion: NetworkContagion
    warnings: tuple[str, ...]


def shock_vector(snapshot: Snapshot, shock: Shock | str) -> tuple[Shock, Float, tuple[str, ...]]:
    """The shock, its vector on the snapshot's assets, and a warning for moves left out."""
    if isinstance(shock, str):
        shock = parse_shock(shock, snapshot.assets) if "=" in shock else scenario(shock)
    held = {a.upper() for a in snapshot.assets}
    absent = [a for a, _ in shock.moves if DEFAULT_ALIASES.get(a.upper(), a.upper()) not in held]
    note = f"{shock.name}: no {', '.join(absent)} in this snapshot; those moves are left out"
    return shock, shock.vector(snapshot.assets, missing="ignore"), (note,) if absent else ()


def _depths(snapshot: Snapshot, prm: StressParams) -> Float:
    """``depth_usd`` per asset index (0: infinite depth)."""
    depth = np.zeros(len(snapshot.assets))
    for name, usd in prm.depth_usd.items():
        if not (math.isfinite(usd) and usd > 0.0):
            raise InvalidParamsError(f"depth of {name} must be a finite USD amount > 0, got {usd}")
        depth[resolve_asset(name, snapshot.assets)] = usd
    return depth


def cascade_params(snapshot: Snapshot, prm: StressParams) -> CascadeParams:
    """The cascade's parameters, with a linear market for every asset given a depth."""
    given = prm.cascade.liquidity
    liquidity = list(given) + [None] * (len(snapshot.assets) - len(given))
    for a, depth in enumerate(_depths(snapshot, prm)):
        if depth > 0.0:
            liquidity[a] = LinearImpact(float(depth), prm.half_life_rounds)
    return replace(prm.cascade, liquidity=tuple(liquidity))


def _venues(snapshot: Snapshot, r: CascadeResult, rounds: slice) -> tuple[VenueLoss, ...]:
    """Non-zero (protocol, chain) rows of ``rounds``, summed over them."""
    names = [f.name for f in fields(VenueLoss)][2:]
    cubes = {name: getattr(r, name)[rounds].sum(axis=0) for name in names}
    nonzero = np.nonzero(np.abs(np.stack(list(cubes.values()))).sum(axis=0))
    return tuple(
        fill_record(
            VenueLoss, cubes, (p, c), protocol=snapshot.protocols[p], chain_id=snapshot.chain_ids[c]
        )
        for p, c in zip(*nonzero, strict=True)
    )


def _deficits(snapshot: Snapshot, r: CascadeResult) -> tuple[DeficitRow, ...]:
    """The cascade's deficits summed per (protocol, chain, asset), with distinct users."""
    d = r.deficits
    keys, inv = np.unique(np.stack([d.protocol, d.chain, d.asset]), axis=1, return_inverse=True)
    inv, n = inv.reshape(-1), keys.shape[1]
    users = np.bincount(np.unique(np.stack([inv, d.user]), axis=1)[0], minlength=n)
    sums = {"amount_coin": _sum(inv, d.amount_coin, n), "amount_usd": _sum(inv, d.amount_usd, n),
            "users": users}  # fmt: skip
    return tuple(
        fill_record(DeficitRow, sums, i, protocol=snapshot.protocols[p],
                    chain_id=snapshot.chain_ids[c], asset=snapshot.assets[a])
        for i, (p, c, a) in enumerate(keys.T)
    )  # fmt: skip


def stress_report(
    snapshot: Snapshot, shock: Shock | str, params: StressParams | None = None
) -> StressReport:
    """Run ``shock`` (a :class:`Shock`, ``"ETH=-0.3,stETH=-0.08"`` or a scenario name)."""
    prm = params or StressParams()
    x, ids = snapshot.inputs, snapshot.assets
    shock, vector, notes = shock_vector(snapshot, shock)
    cmap = CanonicalMap.of(x, snapshot.asset_canonical)
    r = cascade(x, cmap, vector, cascade_params(snapshot, prm))
    prices = [dict(zip(ids, map(float, row), strict=True)) for row in r.price_usd]
    rounds = tuple(
        StressRound(
            round=i,
            prices_usd=prices[i],
            liquidated_collateral_usd=float(r.liquidated_collateral_usd[i].sum()),
            repaid_debt_usd=float(r.repaid_debt_usd[i].sum()),
            closed_notional_usd=float(r.closed_notional_usd[i].sum()),
            bad_debt_usd=float(r.bad_debt_usd[i].sum()),
            users_liquidated=int(r.users_liquidated[i]),
            by_venue=_venues(snapshot, r, slice(i, i + 1)),
        )
        for i in range(r.n_rounds)
    )
    unsettled = () if r.converged else (f"the cascade did not settle in {r.n_rounds} rounds",)
    return StressReport(
        watermark=dict(snapshot.watermark),
        block_time_s=dict(snapshot.block_time_s),
        scenario=shock.name,
        start=shock.start,
        end=shock.end,
        moves={a: float(m) for a, m in zip(ids, vector, strict=True) if m},
        depth_usd=dict(prm.depth_usd),
        converged=r.converged,
        n_rounds=r.n_rounds,
        rounds=rounds,
        final_prices_usd=prices[-1],
        liquidated_collateral_usd=float(r.liquidated_collateral_usd.sum()),
        repaid_debt_usd=float(r.repaid_debt_usd.sum()),
        closed_notional_usd=float(r.closed_notional_usd.sum()),
        bad_debt_usd=float(r.bad_debt_usd.sum()),
        users_affected=r.users_affected,
        by_venue=_venues(snapshot, r, slice(None)),
        deficits=_deficits(snapshot, r),
        contagion=_network(snapshot, cmap, r.total_bad_debt_usd.reshape(-1), prm),
        warnings=snapshot_warnings(snapshot, *notes, *unsettled),
    )


def _issuers(snapshot: Snapshot, prm: StressParams) -> NDArray[np.intp]:
    """The issuing node of every asset (-1: none), from ``asset_issuer``."""
    issuer = np.full(len(snapshot.assets), -1, np.intp)
    for name, (protocol, chain_id) in prm.asset_issuer.items():
        if protocol not in snapshot.protocols or chain_id not in snapshot.chain_ids:
            raise InvalidParamsError(
                f"asset_issuer: {name} is issued by {protocol} on chain {chain_id}, which is "
                f"not in the snapshot (protocols: {', '.join(snapshot.protocols)})"
            )
        j, c = snapshot.protocols.index(protocol), snapshot.chain_ids.index(chain_id)
        issuer[resolve_asset(name, snapshot.assets)] = j * len(snapshot.chain_ids) + c
    return issuer


def _network(
    snapshot: Snapshot, cmap: CanonicalMap, bad: Float, prm: StressParams
) -> NetworkContagion:
    """The protocol network's DebtRank and clearing after a cascade left ``bad`` per node."""
    if not prm.reserve_ratio >= 0.0:
        raise InvalidParamsError(f"reserve_ratio must be >= 0, got {prm.reserve_ratio}")
    x, n_c, n = snapshot.inputs, snapshot.inputs.n_chains, bad.shape[0]
    c, b, price = x.collateral, x.borrows, x.asset_price_usd
    size = _sum(b.protocol * n_c + b.chain, b.amount * price[b.asset], n)
    size += _sum(c.protocol * n_c + c.chain, c.amount * price[c.asset], n)
    reserves = prm.reserve_ratio * size
    depth = _depths(snapshot, prm)[cmap.roots]
    net = protocol_network(
        x,
        cmap,
        _issuers(snapshot, prm),
        reserves_usd=reserves,
        depth_usd=depth if depth.any() else None,
    )
    h0 = np.minimum(1.0, np.divide(bad, reserves, out=(bad > 0.0) * 1.0, where=reserves > 0.0))
    orig = debtrank(net.exposure_usd, net.equity_usd, h0, variant="original")
    diff = debtrank(net.exposure_usd, net.equity_usd, h0, variant="differential")
    en = eisenberg_noe(net.liabilities_usd, np.maximum(net.external_assets_usd - bad, 0.0))
    live = (size > 0.0) | (bad > 0.0) | (net.collateral_usd > 0.0) | (en.total_liabilities > 0.0)
    per_node = {
        "reserves_usd": reserves,
        "bad_debt_usd": bad,
        "initial_distress": h0,
        "distress_original": orig.distress,
        "distress_differential": diff.distress,
        "loss_original_usd": orig.loss_usd,
        "loss_differential_usd": diff.loss_usd,
        "owed_usd": en.total_liabilities,
        "paid_usd": en.payments,
        "shortfall_usd": en.shortfall,
        "creditor_loss_usd": en.creditor_loss,
        "defaulted": en.defaulted | (h0 >= 1.0),
    }
    nodes = tuple(
        fill_record(NodeContagion, per_node, k, protocol=snapshot.protocols[k // n_c],
                    chain_id=snapshot.chain_ids[k % n_c])
        for k in map(int, np.flatnonzero(live))
    )  # fmt: skip
    return NetworkContagion(
        debtrank_original=orig.debtrank,
        debtrank_differential=diff.debtrank,
        defaulted_original=int(orig.defaulted.sum()),
        defaulted_differential=int(diff.defaulted.sum()),
        clearing_shortfall_usd=float(en.shortfall.sum()),
        direct_edges=int((net.direct_exposure_usd > 0.0).sum()),
        fire_sale_edges=int((net.fire_sale_exposure_usd > 0.0).sum()),
        nodes=nodes,
    )
