"""Protocol network contagion: DebtRank, Eisenberg-Noe clearing, and the protocol network.

Concept (REFERENCES.md s5): protocols are nodes; a loss at one spreads to those exposed to it.

**DebtRank** (Battiston et al. 2012). ``exposures[i, j]`` is what node ``i`` loses if node
``j`` fails entirely; ``W[i, j] = min(1, exposures[i, j] / equity[i])`` (diagonal
ignored). Distress ``h`` is the fraction of equity lost, in [0, 1].

- ``"original"``: a node is *distressed* the step after its distress first turns positive;
  it propagates its whole distress once, ``h_i <- min(1, h_i + sum_{j distressed} W_ij h_j)``,
  and then becomes inactive. Distress arriving later still raises ``h`` but is never
  passed on. At most n + 1 steps.
- ``"differential"`` (Bardoscia et al. 2015): every step passes on the increments,
  ``h(t+1) = min(1, h(t) + W (h(t) - h(t-1)))``. By induction this equals the Picard
  iteration ``h <- min(1, h0 + W h)`` from ``h0``, so it converges to the *least* fixed
  point above ``h0``, which is monotone in ``h0`` and in ``W``. Where W has spectral
  radius >= 1 (e.g. two nodes each exposed to the other beyond its equity), increments
  never shrink and single steps would take ~1/h0 rounds to saturate. We take plain
  vectorised steps, and jump a stretch between saturations (where the map is linear)
  only when plain steps would take long: one linear solve on the unsaturated nodes where
  the stretch converges below 1, exact binary lifting where a node saturates. The
  original variant is monotone only while the set of initially distressed nodes stays
  the same: distressing a node early can stop it passing on a larger loss later.

**Eisenberg-Noe** (2001). ``liabilities[i, j]`` is what ``i`` owes ``j``; ``pbar =
liabilities.sum(1)``, ``Pi = liabilities / pbar``. The clearing vector solves ``p =
min(pbar, e + Pi^T p)``. We compute the **greatest** clearing vector with the
fictitious-default algorithm. Start from a few Picard steps ``p <- min(pbar, e + Pi^T p)``
from ``p = pbar`` (cheap: one matrix-vector product each, and each carries a shortfall one
more link, where a round below costs a linear solve and often finds a single new default);
mark the nodes whose inflow ``e + Pi^T p`` falls short of ``pbar``; solve the linear system
in which exactly those nodes pay what they receive and everyone else pays in full; repeat
until the default set stops growing (at most n rounds). Why this is the greatest: the
iterates decrease, and by induction each stays above every clearing vector (each default
set is contained in the default set of the greatest one). The seed keeps this: the map is
monotone, so ``p >= p*`` (any clearing vector) gives ``min(pbar, e + Pi^T p) >= p*``; every
Picard iterate from ``pbar`` stays above the greatest vector ``p*``, and a node short at
such an iterate, ``e + Pi^T p < pbar``, is short at ``p*`` too (``e + Pi^T p* <= e + Pi^T
p``): the seeded default set is contained in that of ``p*``, as the induction needs. Only
the number of rounds changes, not the final default set nor its solve. The final linear
system is non-singular: at the greatest vector no closed group of nodes is entirely in
default, or scaling up its circular flows would give a larger clearing vector. If a solve
fails numerically, Picard iteration from ``pbar`` takes over; it decreases to the same
greatest fixed point (Tarski).

**The protocol network** (:func:`protocol_network`): nodes = (protocol, chain). See its
docstring for how the edges and the equity are built from a :class:`RiskInputs` snapshot.

Units: USD for exposures, equity, liabilities and payments; distress is a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregation.exceptions import InvalidParamsError
from aggregation.exposure import CanonicalMap
from aggregation.lending import lending_accounts
from aggregation.risk import RiskInputs

__all__ = [
    "ClearingResult",
    "DebtRankResult",
    "ProtocolNetwork",
    "debtrank",
    "eisenberg_noe",
    "impact_matrix",
    "protocol_network",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
Bool = NDArray[np.bool_]


def _sum(index: Index, weights: Float, n: int) -> Float:
    return np.bincount(index, weights, minlength=n).astype(np.float64, copy=False)


def _square(name: str, matrix: ArrayLike) -> Float:
    m = np.array(matrix, dtype=np.float64)  # a copy: callers' arrays stay untouched
    if m.ndim != 2 or m.shape[0] != m.shape[1]:  # noqa: PLR2004  # a matrix has 2 axes
        raise InvalidParamsError(f"{name} must be a square (n, n) matrix, got shape {m.shape}")
    if not np.isfinite(m).all() or (m < 0.0).any():
        raise InvalidParamsError(f"{name} must be finite and >= 0")
    return m


def _vector(name: str, values: ArrayLike, n: int, *, upper: float = np.inf) -> Float:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n,):
        raise InvalidParamsError(f"{name} has shape {v.shape}; expected ({n},)")
    if not np.isfinite(v).all() or (v < 0.0).any() or (v > upper).any():
        raise InvalidParamsError(f"{name} must be finite and within [0, {upper}]")
    return v


def impact_matrix(exposures: ArrayLike, equity: ArrayLike) -> Float:
    """``W[i, j] = min(1, exposures[i, j] / equity[i])``, zero diagonal; 1 where equity is 0."""
    x = _square("exposures", exposures)
    e = _vector("equity", equity, x.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(x > 0.0, np.minimum(1.0, x / e[:, None]), 0.0)
    np.fill_diagonal(w, 0.0)
    return w


@dataclass(frozen=True, slots=True, eq=False)
class DebtRankResult:
    """Final distress ``h`` (fraction of equity lost) per node, and what it adds up to.

    ``debtrank``: distress induced beyond the initial one, weighted by ``value_weights``
    (equity shares by default), Battiston's R. ``defaulted``: h = 1.
    """

    variant: str
    distress: Float
    initial_distress: Float
    loss_usd: Float  # h x equity
    induced_loss_usd: Float  # (h - h0) x equity
    debtrank: float
    defaulted: Bool
    iterations: int  # propagation steps; differential: equivalent single steps
    converged: bool


Variant = Literal["original", "differential"]


def debtrank(
    exposures: ArrayLike,
    equity: ArrayLike,
    initial_distress: ArrayLike,
    *,
    variant: Variant = "original",
    max_iter: int = 10_000,
    tol: float = 1e-12,
    value_weights: ArrayLike | None = None,
) -> DebtRankResult:
    """DebtRank of ``initial_distress`` (in [0, 1] per node) on the exposure network.

    ``max_iter`` bounds the propagation steps (original) or the linear jumps (differential,
    at most n + 1 are ever needed); ``tol`` is the increment at which the differential stops.
    """
    w = impact_matrix(exposures, equity)
    n = w.shape[0]
    e = np.asarray(equity, dtype=np.float64)
    h0 = _vector("initial_distress", initial_distress, n, upper=1.0)
    if max_iter < 1:
        raise InvalidParamsError(f"max_iter must be >= 1, got {max_iter}")
    if variant == "original":
        h, steps, done = _original(w, h0, max_iter)
    elif variant == "differential":
        h, steps, done = _differential(w, h0, max_iter, tol)
    else:
        raise InvalidParamsError(f"variant {variant!r}: expected 'original' or 'differential'")
    if value_weights is None:
        total = e.sum()
        v = e / total if total > 0.0 else np.full(n, 1.0 / max(n, 1))
    else:
        v = _vector("value_weights", value_weights, n)
    return DebtRankResult(
        variant, h, h0, h * e, (h - h0) * e, float(v @ (h - h0)), h >= 1.0, steps, done
    )


def _original(w: Float, h0: Float, max_iter: int) -> tuple[Float, int, bool]:
    """Battiston 2012: each node propagates its distress once, the step after it starts."""
    h = h0.copy()
    distressed, inactive = h > 0.0, np.zeros(h.shape[0], np.bool_)
    for step in range(max_iter):
        if not distressed.any():
            return h, step, True
        new = np.minimum(1.0, h + w[:, distressed] @ h[distressed])
        inactive |= distressed
        distressed = (new > 0.0) & ~inactive
        h = new
    return h, max_iter, not distressed.any()


def _differential(w: Float, h0: Float, max_iter: int, tol: float) -> tuple[Float, int, bool]:
    """Bardoscia 2015, as ``h <- min(1, h0 + W h)`` from ``h0`` (equal: module docstring).

    Plain vectorised steps (one ``W @ h`` each) by default, so wherever the increments die
    out within a few hundred steps the result is bit for bit that of plain stepping. Between
    two saturations (a node reaching h = 1) the map is linear, ``y <- c + A y`` on the
    unsaturated nodes, and a whole stretch is jumped only when plain steps would take
    long: when the increments shrink by a ratio close to 1, stall (W with spectral radius
    >= 1, e.g. two nodes each exposed to the other beyond equity, where a tiny ``h0`` needs
    ~1/h0 steps) or a stretch runs past ``_STRETCH`` steps (see :func:`_jump`).
    ``iterations`` counts the equivalent single steps. ``max_iter`` bounds the jumps; at
    most n + 1 are needed (each saturates a node or ends the run).
    """
    n = h0.shape[0]
    h, steps, jumps, run = h0.copy(), 0, 0, 0
    saturated = int((h >= 1.0).sum())
    previous = np.inf
    while True:
        new = np.minimum(1.0, h0 + w @ h)
        steps += 1
        inc = float(np.abs(new - h).max(initial=0.0))
        h = new
        if inc <= tol:
            return h, steps, True
        count = int((h >= 1.0).sum())
        ratio, previous = inc / previous, inc
        if count != saturated:
            saturated, run = count, 0
            continue
        run += 1
        if run < _WARMUP or (_remaining(h, inc, ratio, tol) <= _PLAIN_AHEAD and run < _STRETCH):
            continue
        if jumps >= min(max_iter, n + 2):
            return h, steps, False
        h, k = _jump(w, h0, h, tol)
        jumps, steps, run, previous = jumps + 1, steps + k, 0, np.inf
        saturated = int((h >= 1.0).sum())


_WARMUP = 8  # plain steps into a linear stretch before its ratio is trusted
_PLAIN_AHEAD = 256  # jump when more plain steps than this are predicted
_STRETCH = 1024  # ... or when a stretch runs this long whatever the prediction


def _remaining(h: Float, inc: float, ratio: float, tol: float) -> float:
    """Plain steps still predicted if the max increment keeps changing by ``ratio``: to
    fall below ``tol`` (ratio < 1), or for a node to cover its gap to 1 (ratio >= 1)."""
    if ratio < 1.0 - 1e-9:
        return float(np.log(tol / inc) / np.log(ratio)) if tol > 0.0 else np.inf
    gap = float((1.0 - h)[h < 1.0].min(initial=1.0))
    if ratio <= 1.0 + 1e-9:
        return gap / inc
    return float(np.log1p((ratio - 1.0) * gap / inc) / np.log(ratio))


def _jump(w: Float, h0: Float, h: Float, tol: float) -> tuple[Float, int]:
    """Jump the linear stretch ``y <- c + A y`` on the free nodes (h < 1), where
    ``c = h0 + W[:, saturated] 1``; returns the new ``h`` and the steps it stands for.

    1. One linear solve ``y* = (I - A)^-1 c``. If it succeeds with ``y <= y* <= 1``, then
       y* is the limit: the iterates rise monotonically (``A >= 0``, first increment
       ``>= 0``) and stay below y* (``y_k <= y*`` gives ``c + A y_k <= y*``), so they
       converge to a fixed point of the non-singular linear map, y* itself; they never
       reach the cap, so the capped run has the same limit. It is the least fixed point
       above ``h0`` because plain iterates stay below that one and converge to y*.
    2. Otherwise some node saturates after ``K`` steps: ``K`` is found exactly by
       doubling and binary lifting (:func:`_linear_jump`), on the nodes the increments
       can reach only (the rest stay put), followed by one capped step.
    """
    free = np.flatnonzero(h < 1.0)
    if free.size == 0:
        return h, 0
    a = w[np.ix_(free, free)]
    y = h[free]
    c = h0[free] + w[free][:, h >= 1.0].sum(axis=1)
    with np.errstate(all="ignore"):
        try:
            star = np.linalg.solve(np.eye(free.size) - a, c)
        except np.linalg.LinAlgError:
            star = np.full_like(y, np.nan)
    if np.isfinite(star).all() and (star >= y - 1e-12).all() and (star < 1.0).all():
        out = h.copy()
        out[free] = np.maximum(star, y)
        return out, 1
    d = c + a @ y - y  # the next (uncapped) increment, >= 0
    reach = d > 0.0
    frontier = reach.copy()
    while frontier.any():  # nodes the increments can reach: closed under A's edges
        grown = (a[:, frontier] > 0.0).any(axis=1) & ~reach
        reach |= grown
        frontier = grown
    r = np.flatnonzero(reach)
    jump, k = _linear_jump(a[np.ix_(r, r)], y[r], d[r], tol)
    out = h.copy()
    out[free[r]] = y[r] + jump
    return np.minimum(1.0, h0 + w @ out), k + 1


def _linear_jump(a: Float, y: Float, d: Float, tol: float) -> tuple[Float, int]:
    """Largest ``K`` (and ``P_K d``, ``P_K = I + A + ... + A^(K-1)``) with ``y + P_K d <= 1``,
    or the converged sum when increments vanish first (``K`` then a power of two)."""
    powers, sums = [a], [d]  # A^(2^j), P_(2^j) d
    if (y + d > 1.0).any():
        return np.zeros_like(y), 0
    for _ in range(62):
        step = powers[-1] @ sums[-1]
        if step.max(initial=0.0) <= tol:  # the linear run converges below 1: jump to it
            return sums[-1] + step, 2 ** len(sums)
        if (y + sums[-1] + step > 1.0).any():
            break
        sums.append(sums[-1] + step)
        powers.append(powers[-1] @ powers[-1])
    # K is in [2^j, 2^(j+1)): lift from P_(2^j) d down the stored levels
    total, power, k = sums[-1], powers[-1], 2 ** (len(sums) - 1)
    for j in range(len(sums) - 2, -1, -1):
        candidate = total + power @ sums[j]
        if not (y + candidate > 1.0).any():
            total, power, k = candidate, power @ powers[j], k + 2**j
    return total, k


@dataclass(frozen=True, slots=True, eq=False)
class ClearingResult:
    """Greatest Eisenberg-Noe clearing vector and what it means for each node (USD).

    ``shortfall`` = what each debtor fails to pay; ``creditor_loss`` = unpaid claims owed
    to each node; ``equity`` = e + received - paid (>= 0); ``iterations``: default sets
    the fictitious-default algorithm went through (one per set, whether a seeding Picard
    step or a linear solve found it), or Picard steps; ``solves``: its linear solves.
    """

    payments: Float
    total_liabilities: Float
    recovery_rate: Float  # p / pbar, 1 where nothing is owed
    shortfall: Float
    creditor_loss: Float
    equity: Float
    defaulted: Bool
    iterations: int
    method: str
    solves: int = 0


def eisenberg_noe(
    liabilities: ArrayLike,
    external_assets: ArrayLike,
    *,
    tol: float = 1e-12,
    max_iter: int = 100_000,
) -> ClearingResult:
    """Greatest clearing vector of the network (module docstring); ``tol`` is relative to
    the largest total liability."""
    lia = _square("liabilities", liabilities)
    n = lia.shape[0]
    e = _vector("external_assets", external_assets, n)
    np.fill_diagonal(lia, 0.0)
    pbar = lia.sum(axis=1)
    pi = np.divide(lia, pbar[:, None], out=np.zeros_like(lia), where=pbar[:, None] > 0.0)
    eps = tol * max(1.0, float(pbar.max(initial=0.0)))
    p, rounds, seen = _seed(pi, pbar, e, eps)
    solves, method = 0, "fictitious-default"
    default = np.zeros(n, np.bool_)
    for _ in range(n):  # the default set grows every round, so at most n rounds
        grown = default | (e + pi.T @ p < pbar - eps)
        if (grown == default).all():
            if solves == 0:  # nobody short even at the seed: nobody at pbar either
                p = pbar.copy()
            break
        rounds += int(solves > 0 or int(grown.sum()) > seen)  # a set the seed had not seen
        default, solves = grown, solves + 1
        d, ok = np.flatnonzero(default), ~default
        a = np.eye(d.size) - pi[np.ix_(d, d)].T
        rhs = e[d] + pi[np.ix_(ok, d)].T @ pbar[ok]
        try:
            p = pbar.copy()
            p[d] = np.clip(np.linalg.solve(a, rhs), 0.0, pbar[d])
        except np.linalg.LinAlgError:
            break
    if np.abs(np.minimum(pbar, e + pi.T @ p) - p).max(initial=0.0) > eps * 10.0:
        p, rounds, method = _picard(pi, pbar, e, eps, max_iter)
    received = pi.T @ p
    shortfall = pbar - p
    return ClearingResult(
        payments=p,
        total_liabilities=pbar,
        recovery_rate=np.divide(p, pbar, out=np.ones(n), where=pbar > 0.0),
        shortfall=shortfall,
        creditor_loss=pi.T @ shortfall,
        equity=np.maximum(e + received - p, 0.0),
        defaulted=shortfall > eps,
        iterations=rounds,
        method=method,
        solves=solves,
    )


_SEED_STEPS = 512  # at most this many Picard steps seed the default set
_SEED_PATIENCE = 8  # ... stopping once it has not grown for max(this, steps / 4) steps


def _seed(pi: Float, pbar: Float, e: Float, eps: float) -> tuple[Float, int, int]:
    """A few Picard steps ``p <- min(pbar, e + Pi^T p)`` from ``pbar`` (module docstring):
    each costs one matrix-vector product, against a linear solve per fictitious-default
    round, and each moves a shortfall one more link down the network. Stops once the set
    of nodes short of ``pbar`` has not grown for a while (plateaus happen mid-cascade, so
    the patience grows with the steps taken), or at a cap. Returns the last iterate, the
    number of distinct default sets met and the size of the last one."""
    p, short, still, sets = pbar.copy(), 0, 0, 0
    for step in range(_SEED_STEPS):
        inflow = e + pi.T @ p
        count = int((inflow < pbar - eps).sum())
        still = still + 1 if count == short else 0
        if still >= max(_SEED_PATIENCE, step // 4):
            break
        sets += int(count > short)  # the set only grows: a larger count is a new set
        short, p = count, np.minimum(pbar, inflow)
    return p, sets, short


def _picard(pi: Float, pbar: Float, e: Float, eps: float, max_iter: int) -> tuple[Float, int, str]:
    """``p <- min(pbar, e + Pi^T p)`` from ``pbar``: decreasing to the greatest fixed point."""
    p = pbar.copy()
    for step in range(1, max_iter + 1):
        new = np.minimum(pbar, e + pi.T @ p)
        if np.abs(new - p).max(initial=0.0) <= eps:
            return new, step, "picard"
        p = new
    return p, max_iter, "picard (max_iter reached)"


@dataclass(frozen=True, slots=True, eq=False)
class ProtocolNetwork:
    """Nodes ``k = protocol x n_chains + chain`` with DebtRank and Eisenberg-Noe inputs (USD).

    DebtRank: ``exposure_usd`` (= direct + fire-sale) with ``equity_usd``.
    Eisenberg-Noe: ``liabilities_usd`` with ``external_assets_usd``.
    """

    protocol: Index
    chain: Index
    exposure_usd: Float
    direct_exposure_usd: Float
    fire_sale_exposure_usd: Float
    liabilities_usd: Float
    equity_usd: Float
    external_assets_usd: Float
    collateral_usd: Float
    debt_usd: Float


def protocol_network(
    inputs: RiskInputs,
    canonical: CanonicalMap | ArrayLike,
    asset_issuer: ArrayLike,
    *,
    reserves_usd: ArrayLike | None = None,
    reserve_ratio: float = 0.05,
    depth_usd: ArrayLike | None = None,
) -> ProtocolNetwork:
    """Build the protocol network from the lending accounts of ``inputs``.

    ``asset_issuer[a]``: the node that issues asset ``a`` (e.g. the rvETH vault on its home
    chain, for the vault share bridged everywhere), -1 for none (native coins, stables).

    Edges, for each lending account (user, protocol, chain) with collateral ``C`` and debt
    ``D`` (USD), its node being (protocol, chain):

    - *direct* (token issued by one protocol held as collateral in another): node ``i`` is
      exposed to issuer ``j`` by the extra bad debt its borrowers would leave if ``j``'s
      tokens became worthless, ``max(0, D - C + C_j) - max(0, D - C)`` summed over accounts
      (``C_j``: collateral issued by ``j``). Only the uncovered part counts, so
      over-collateralised loans absorb the first loss. ``liabilities_usd[j, i]`` is the
      face value ``C_j`` of ``j``'s tokens held at ``i``: what ``j`` owes ``i``.
    - *fire sale* (shared collateral; needs ``depth_usd`` per root asset): if node ``j``
      dumped all its collateral of root ``k`` (``S_jk`` USD, variants included) into a
      linear market of depth ``depth_usd[k]``, that price would fall by
      ``x = min(0.99, S_jk / depth_k)``. Node ``i``'s exposure to ``j`` is the extra bad
      debt of its accounts at that price (their debt in ``k`` falls too), summed over roots.

    Equity (DebtRank): ``reserves_usd`` per node (the reserve or insurance balance that
    absorbs bad debt), by default ``reserve_ratio`` x the node's debt. External assets
    (Eisenberg-Noe): equity, plus each issuer's backing of the tokens it owes, assumed at
    par at today's prices. Stress a node by cutting its external assets.
    """
    cmap = CanonicalMap.of(inputs, canonical)
    n_p, n_c, n_a = inputs.n_protocols, inputs.n_chains, inputs.asset_price_usd.shape[0]
    n = n_p * n_c
    issuer = np.asarray(asset_issuer, dtype=np.intp)
    if issuer.shape != (n_a,) or (issuer < -1).any() or (issuer >= n).any():
        raise InvalidParamsError(f"asset_issuer must hold one node in -1..{n - 1} per asset")
    s, b, price = inputs.supplies, inputs.borrows, inputs.asset_price_usd
    acc = lending_accounts((s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain), n_p, n_c)
    n_acc, k_roots = acc.user.shape[0], cmap.n_roots
    s_val, b_val = s.amount * price[s.asset], b.amount * price[b.asset]
    s_node, b_node = s.protocol * n_c + s.chain, b.protocol * n_c + b.chain
    node = np.zeros(n_acc, np.intp)
    node[acc.supply_account], node[acc.borrow_account] = s_node, b_node
    coll = _sum(acc.supply_account, s_val, n_acc)
    debt = _sum(acc.borrow_account, b_val, n_acc)
    uncovered = np.maximum(debt - coll, 0.0)

    issued = issuer[s.asset] >= 0
    pair = acc.supply_account[issued] * n + issuer[s.asset][issued]
    keys, inv = np.unique(pair, return_inverse=True)
    held = _sum(inv.reshape(-1), s_val[issued], keys.shape[0])
    k_acc, k_issuer = keys // n, keys % n
    loss = np.maximum(debt[k_acc] - coll[k_acc] + held, 0.0) - uncovered[k_acc]
    direct = _sum(node[k_acc] * n + k_issuer, loss, n * n).reshape(n, n)
    liabilities = _sum(k_issuer * n + node[k_acc], held, n * n).reshape(n, n)
    np.fill_diagonal(direct, 0.0)
    np.fill_diagonal(liabilities, 0.0)

    fire = np.zeros((n, n))
    if depth_usd is not None:
        depth = _vector("depth_usd", depth_usd, k_roots)
        s_slot, b_slot = cmap.asset_slot[s.asset], cmap.asset_slot[b.asset]
        c_k = _sum(acc.supply_account * k_roots + s_slot, s_val, n_acc * k_roots)
        d_k = _sum(acc.borrow_account * k_roots + b_slot, b_val, n_acc * k_roots)
        c_k, d_k = c_k.reshape(n_acc, k_roots), d_k.reshape(n_acc, k_roots)
        sale = _sum(s_node * k_roots + s_slot, s_val, n * k_roots).reshape(n, k_roots)
        for k in np.flatnonzero(depth > 0.0):  # roots x sellers: a few dozen vector passes
            for j in np.flatnonzero(sale[:, k] > 0.0):
                fall = min(0.99, sale[j, k] / depth[k])
                gap = debt - fall * d_k[:, k] - (coll - fall * c_k[:, k])
                fire[:, j] += _sum(node, np.maximum(gap, 0.0) - uncovered, n)
        np.fill_diagonal(fire, 0.0)
        fire = np.maximum(fire, 0.0)

    node_debt = _sum(b_node, b_val, n)
    if reserves_usd is None:
        if reserve_ratio < 0.0:
            raise InvalidParamsError(f"reserve_ratio must be >= 0, got {reserve_ratio}")
        equity = np.asarray(reserve_ratio * node_debt, dtype=np.float64)
    else:
        equity = _vector("reserves_usd", np.broadcast_to(reserves_usd, (n,)), n)
    nodes = np.arange(n, dtype=np.intp)
    return ProtocolNetwork(
        protocol=nodes // n_c,
        chain=nodes % n_c,
        exposure_usd=direct + fire,
        direct_exposure_usd=direct,
        fire_sale_exposure_usd=fire,
        liabilities_usd=liabilities,
        equity_usd=equity,
        external_assets_usd=equity + liabilities.sum(axis=1),
        collateral_usd=_sum(s_node, s_val, n),
        debt_usd=node_debt,
    )
