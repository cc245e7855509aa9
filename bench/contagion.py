"""How fast are the cascade and the network contagion? (``python bench/contagion.py``)

Issue 5's benchmark, in one run:

- **cascade**: a synthetic book of 100,000 users on 3 chains, each chain with a lending
  pool, an options market and a perps market (9 protocols): every user has a lending
  account, an options account (shorts and longs on ETH/BTC, USDC and WETH collateral)
  and a perps account (USDC margin at par), each on a random chain -- about 1,000,000
  positions. One :func:`aggregation.cascade.cascade` per shock (ETH -10 %, -30 %, -50 %
  with its variants, and a wstETH depeg on top), linear market depth on every volatile
  asset so that fire sales run several rounds; timed per shock (target <= 1 s). The
  reference is a straightforward per-account Python loop of the protocol rule and the
  lending health factor over a sample of accounts (one round's evaluation, scaled to
  every account), which also checks that both agree on who is liquidatable.
- **network**: DebtRank (original and differential) and Eisenberg-Noe on a random
  1,000-node network (each node owes 8 others; some distressed from the start), and on a
  1,000-node chain of defaults (the hard case for the fictitious-default algorithm, which
  adds about one defaulting link per round); target <= 0.5 s each. References:
  Eisenberg-Noe by plain Picard iteration from full payment, DebtRank original by a
  per-node propagation loop, differential by plain step-by-step iteration; the largest
  difference from ours is printed.

Times are the best of ``--repeat`` runs (wall clock; CPU time and load average printed
too). Prints a markdown table and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregation.accounts import OnchainRates, ProtocolRules, account_state, margin_accounts
from aggregation.cascade import CascadeParams, CascadeResult, LinearImpact, cascade
from aggregation.contagion import debtrank, eisenberg_noe, impact_matrix
from aggregation.lending import LendingBook, account_health, lending_accounts
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
)

Float = NDArray[np.float64]
Ints = NDArray[np.intp]
N_CHAINS = 3
LENDING, OPTIONS, PERPS = 0, 1, 2  # protocol p on chain c is index c x 3 + p
# assets: ETH, BTC, USDC, wstETH (1.18 ETH), rvETH (1 ETH); underlyings ETH, BTC
ETH, BTC, USDC, WSTETH, RVETH = range(5)
PRICE = np.array([3_000.0, 60_000.0, 1.0, 3_540.0, 3_000.0])
UNDERLYING = np.array([0, 1, -1, 0, 0], dtype=np.intp)
CANONICAL = np.array([ETH, BTC, USDC, ETH, ETH], dtype=np.intp)
SPOT = PRICE[:2]
SHOCKS = {
    "ETH -10 %": {ETH: -0.10},
    "ETH -30 %": {ETH: -0.30},
    "ETH -50 %, BTC -25 %": {ETH: -0.50, BTC: -0.25},
    "ETH -30 %, wstETH -8 %": {ETH: -0.30, WSTETH: -0.08},
}


def _protocol(chain: Ints, kind: int | Ints) -> Ints:
    return np.asarray(chain * 3 + kind, dtype=np.intp)


def synthetic_book(n_users: int, seed: int = 5) -> RiskInputs:
    """Lending, options and perps accounts per user on random chains (module docstring)."""
    rng = np.random.default_rng(seed)
    users = np.arange(n_users, dtype=np.intp)
    rates = OnchainRates()
    # lending: 1-2 supplies of ETH/wstETH/rvETH/BTC, one USDC borrow, HF 1.02..3
    n_sup = n_users + n_users // 2
    s_user = np.concatenate([users, rng.integers(0, n_users, n_sup - n_users)]).astype(np.intp)
    l_chain = rng.integers(0, N_CHAINS, n_users).astype(np.intp)
    s_asset = rng.choice([ETH, WSTETH, RVETH, BTC], n_sup).astype(np.intp)
    s_usd = rng.lognormal(np.log(20_000.0), 1.0, n_sup)
    lt = np.select([s_asset == BTC, s_asset == ETH], [0.78, 0.83], 0.79)
    supplies = SupplyPositions(
        s_user, s_asset, l_chain[s_user], _protocol(l_chain[s_user], LENDING),
        s_usd / PRICE[s_asset], lt, lt - 0.05, np.full(n_sup, 1.06),
    )  # fmt: skip
    capacity = np.bincount(s_user, s_usd * lt, minlength=n_users)
    borrows = BorrowPositions(
        users, np.full(n_users, USDC, np.intp), l_chain, _protocol(l_chain, LENDING),
        capacity / rng.uniform(1.05, 3.0, n_users),
    )  # fmt: skip
    # options: 4 per user on one chain, strikes 0.8..1.2 spot, 60 % short
    n_opt = 4 * n_users
    o_user = np.repeat(users, 4)
    o_chain = rng.integers(0, N_CHAINS, n_users).astype(np.intp)[o_user]
    und = (rng.random(n_opt) < 0.3).astype(np.intp)
    strike = SPOT[und] * rng.choice([0.8, 0.9, 1.0, 1.1, 1.2], n_opt)
    is_call = rng.random(n_opt) < 0.5
    size = np.where(rng.random(n_opt) < 0.6, -1.0, 1.0) * rng.uniform(0.2, 3.0, n_opt)
    size *= SPOT[0] / SPOT[und]
    options = OptionPositions(
        o_user, und, o_chain, _protocol(o_chain, OPTIONS), size, strike,
        rng.choice([1.0, 7.0, 30.0, 90.0], n_opt) / 365.0, is_call, np.full(n_opt, 0.65),
    )  # fmt: skip
    intrinsic = np.where(is_call, np.maximum(SPOT[und] - strike, 0.0),
                         np.maximum(strike - SPOT[und], 0.0))  # fmt: skip
    im = np.maximum(-size, 0.0) * (rates.option_im * SPOT[und] + intrinsic)
    opt_im = np.bincount(o_user, im, minlength=n_users) + 500.0
    # perps: 2 per user on one chain
    n_perp = 2 * n_users
    p_user = np.repeat(users, 2)
    p_chain = rng.integers(0, N_CHAINS, n_users).astype(np.intp)[p_user]
    p_und = (rng.random(n_perp) < 0.3).astype(np.intp)
    p_size = rng.normal(0.0, 15_000.0, n_perp) / SPOT[p_und]
    perps = PerpPositions(
        p_user, p_und, p_chain, _protocol(p_chain, PERPS), p_size,
        p_size * SPOT[p_und] * rng.normal(1.0, 0.03, n_perp), rng.normal(0.0, 5.0, n_perp),
    )  # fmt: skip
    perp_im = np.bincount(p_user, np.abs(p_size) * SPOT[p_und] * rates.perp_im, n_users)
    # collateral: options accounts USDC + WETH (haircut 15 %), perps accounts USDC margin
    cover = rng.uniform(1.2, 4.0, n_users) * opt_im
    weth = rng.random(n_users) < 0.5
    c_user = np.concatenate([users, users[weth], users])
    c_asset = np.concatenate([np.full(n_users, USDC), np.full(int(weth.sum()), ETH),
                              np.full(n_users, USDC)]).astype(np.intp)  # fmt: skip
    c_usd = np.concatenate([np.where(weth, 0.4, 1.0) * cover, 0.6 * cover[weth] / 0.85,
                            perp_im * rng.uniform(1.3, 10.0, n_users) + 200.0])  # fmt: skip
    opt_c, perp_c = o_chain[::4], p_chain[::2]
    c_chain = np.concatenate([opt_c, opt_c[weth], perp_c]).astype(np.intp)
    kind = np.concatenate([np.full(n_users + int(weth.sum()), OPTIONS), np.full(n_users, PERPS)])
    collateral = CollateralPositions(
        c_user, c_asset, c_chain, _protocol(c_chain, kind), c_usd / PRICE[c_asset],
        np.where(c_asset == ETH, 0.15, 0.0),
    )  # fmt: skip
    rules = ProtocolRules.uniform(3 * N_CHAINS, 2, rates)
    rules.collateral_at_par[PERPS::3] = True
    return RiskInputs.build(
        tuple(f"0x{i:040x}" for i in range(n_users)), spot_usd=SPOT.copy(),
        carry_annual=np.zeros(2), asset_price_usd=PRICE.copy(), asset_underlying=UNDERLYING,
        options=options, perps=perps, collateral=collateral, supplies=supplies,
        borrows=borrows, n_chains=N_CHAINS, n_protocols=3 * N_CHAINS, rules=rules,
    )  # fmt: skip


def timed(repeat: int, fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best wall time and best CPU time over ``repeat`` runs, and the last result."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu, out


def _rows_of(account: Ints, n: int) -> list[Ints]:
    order = np.argsort(account, kind="stable")
    bounds = np.searchsorted(account[order], np.arange(n + 1))
    return [order[bounds[a] : bounds[a + 1]] for a in range(n)]


def reference_round(x: RiskInputs, sample: int) -> tuple[int, int, bool]:
    """The protocol rule and lending HF account by account in Python, on the first
    ``sample`` margin and lending accounts: (margin accounts, lending accounts, agree)."""
    acc = margin_accounts(x)
    n_m = min(sample, acc.n_accounts)
    o, p, c, r = x.options, x.perps, x.collateral, x.rules
    spot, price = x.spot_usd.tolist(), x.asset_price_usd.tolist()
    rows = [_rows_of(a, acc.n_accounts) for a in (acc.option_account, acc.perp_account,
                                                  acc.collateral_account)]  # fmt: skip
    liquidatable = []
    for a in range(n_m):
        equity = mm = 0.0
        for i in rows[2][a].tolist():
            at = price[c.asset[i]] if not r.collateral_at_par[c.protocol[i]] else 1.0
            equity += float(c.amount[i]) * at * (1.0 - float(c.haircut[i]))
        for i in rows[1][a].tolist():
            s = spot[p.underlying[i]]
            value = float(p.size[i]) * s
            equity += value - float(p.open_notional_usd[i]) + float(p.funding_usd[i])
            mm += abs(value) * float(r.perp_mm_rate[p.protocol[i], p.underlying[i]])
        for i in rows[0][a].tolist():
            if o.size[i] >= 0.0:
                continue
            s, k = spot[o.underlying[i]], float(o.strike_usd[i])
            intrinsic = max(s - k, 0.0) if o.is_call[i] else max(k - s, 0.0)
            need = float(r.option_mm_rate[o.protocol[i]]) * s + intrinsic
            mm += -float(o.size[i]) * (need if o.is_call[i] else min(need, k))
        liquidatable.append(equity < mm)
    s, b = x.supplies, x.borrows
    la = lending_accounts((s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain),
                          x.n_protocols, x.n_chains)  # fmt: skip
    n_l = min(sample, la.user.shape[0])
    s_rows, b_rows = (_rows_of(a, la.user.shape[0]) for a in (la.supply_account, la.borrow_account))
    unhealthy = []
    for a in range(n_l):
        coll = sum(float(s.amount[i]) * price[s.asset[i]] * float(s.liquidation_threshold[i])
                   for i in s_rows[a].tolist())  # fmt: skip
        debt = sum(float(b.amount[i]) * price[b.asset[i]] for i in b_rows[a].tolist())
        unhealthy.append(debt > 0.0 and coll / debt < 1.0)
    ours = account_state(x, acc).liquidatable[:n_m]
    book = LendingBook(la.user.shape[0], la.supply_account, s.asset, s.amount,
                       s.liquidation_threshold, s.ltv, s.liquidation_bonus, la.borrow_account,
                       b.asset, b.amount)  # fmt: skip
    health = account_health(book, x.asset_price_usd).liquidatable[:n_l]
    agree = bool((ours == np.array(liquidatable)).all() and (health == np.array(unhealthy)).all())
    return acc.n_accounts, la.user.shape[0], agree


@dataclass(frozen=True, slots=True)
class ShockRun:
    name: str
    wall: float
    cpu: float
    rounds: int
    accounts: int
    bad_debt_usd: float


def bench_cascade(n_users: int, repeat: int) -> tuple[RiskInputs, list[ShockRun]]:
    x = synthetic_book(n_users)
    depth = {ETH: 2e10, BTC: 3e10, WSTETH: 2e9, RVETH: 1e9}
    liquidity = tuple(LinearImpact(depth[a]) if a in depth else None for a in range(len(PRICE)))
    prm = CascadeParams(liquidity=liquidity)
    runs = []
    for name, moves in SHOCKS.items():
        shock = np.zeros(len(PRICE))
        for a, m in moves.items():
            shock[a] = m

        def run(s: Float = shock) -> CascadeResult:
            return cascade(x, CANONICAL, s, prm)

        wall, cpu, r = timed(repeat, run)
        runs.append(ShockRun(name, wall, cpu, r.n_rounds, int(r.accounts.user.shape[0]),
                             float(r.bad_debt_usd.sum())))  # fmt: skip
    return x, runs


# ---------------------------------------------------------------- network


Network = tuple[Float, Float, Float, Float, Float]


def random_network(n: int, seed: int = 11) -> Network:
    """(liabilities, external assets, exposures, equity, initial distress): every node
    owes 8 random others, outside assets 0-60 % of what it owes, 1 % of nodes failed."""
    rng = np.random.default_rng(seed)
    liabilities = np.zeros((n, n))
    for i in range(n):
        creditors = rng.choice(np.delete(np.arange(n), i), 8, replace=False)
        liabilities[i, creditors] = rng.lognormal(3.0, 1.0, 8)
    pbar = liabilities.sum(1)
    external = pbar * rng.uniform(0.0, 0.6, n)
    exposures = liabilities.T.copy()  # i loses what j owes it if j fails
    equity = exposures.sum(1) * rng.uniform(0.3, 1.5, n)
    h0 = np.where(rng.random(n) < 0.01, 1.0, 0.0)
    return liabilities, external, exposures, equity, h0


def default_chain(n: int) -> Network:
    """A line of debts of 100 (node i owes node i + 1) with a little ring flow (1 to node
    i + 7) and thin outside assets: defaults run down the line, one link at a time."""
    liabilities = np.zeros((n, n))
    liabilities[np.arange(n - 1), np.arange(1, n)] = 100.0
    liabilities[np.arange(n), (np.arange(n) + 7) % n] += 1.0
    external = np.full(n, 0.5)
    external[0] = 10.0
    exposures = liabilities.T.copy()
    h0 = np.zeros(n)
    h0[0] = 1.0
    return liabilities, external, exposures, exposures.sum(1) * 0.5 + 1.0, h0


def picard_clearing(liabilities: Float, external: Float, tol: float) -> tuple[Float, int]:
    pbar = liabilities.sum(1)
    pi = np.divide(liabilities, pbar[:, None], out=np.zeros_like(liabilities),
                   where=pbar[:, None] > 0)  # fmt: skip
    p, step = pbar.copy(), 0
    while True:
        step += 1
        new = np.minimum(pbar, external + pi.T @ p)
        if np.abs(new - p).max() <= tol:
            return new, step
        p = new


def loop_debtrank_original(w: Float, h0: Float) -> Float:
    """Battiston 2012 node by node: each distressed node passes its distress once."""
    n = w.shape[0]
    h = h0.copy()
    distressed, inactive = [j for j in range(n) if h[j] > 0.0], [False] * n
    while distressed:
        new = h.copy()
        for j in distressed:
            for i in np.flatnonzero(w[:, j]).tolist():
                new[i] = min(1.0, new[i] + w[i, j] * h[j])
            inactive[j] = True
        h = new
        distressed = [j for j in range(n) if h[j] > 0.0 and not inactive[j]]
    return h


def step_debtrank_differential(w: Float, h0: Float, tol: float) -> tuple[Float, int]:
    """Bardoscia 2015 one step at a time: h <- min(1, h0 + W h) until it stops moving."""
    h, step = h0.copy(), 0
    while True:
        step += 1
        new = np.minimum(1.0, h0 + w @ h)
        if np.abs(new - h).max() <= tol:
            return new, step
        h = new


@dataclass(frozen=True, slots=True)
class NetworkRun:
    network: str
    name: str
    ours: tuple[float, float]
    reference: tuple[float, float]
    reference_name: str
    max_diff: float
    note: str


def bench_network(name: str, net: Network, repeat: int) -> list[NetworkRun]:
    liabilities, external, exposures, equity, h0 = net
    out = []
    ow, oc, en = timed(repeat, lambda: eisenberg_noe(liabilities, external))
    rw, rc, (p_ref, steps) = timed(1, lambda: picard_clearing(liabilities, external, 1e-9))
    out.append(NetworkRun(
        name, "Eisenberg-Noe (fictitious default)", (ow, oc), (rw, rc),
        f"Picard from full payment ({steps:,} steps)", float(np.abs(en.payments - p_ref).max()),
        f"{int(en.defaulted.sum())} defaults, {en.iterations} default sets, "
        f"{en.solves} linear solves ({en.method})",
    ))  # fmt: skip
    ow, oc, dr = timed(repeat, lambda: debtrank(exposures, equity, h0))
    w = impact_matrix(exposures, equity)
    rw, rc, h_ref = timed(1, lambda: loop_debtrank_original(w, h0))
    out.append(NetworkRun(
        name, "DebtRank original", (ow, oc), (rw, rc), "per-node propagation loop",
        float(np.abs(dr.distress - h_ref).max()),
        f"R = {dr.debtrank:.4f}, {int(dr.defaulted.sum())} at h = 1, {dr.iterations} steps",
    ))  # fmt: skip
    ow, oc, dd = timed(repeat, lambda: debtrank(exposures, equity, h0, variant="differential"))
    rw, rc, (h_ref, steps) = timed(1, lambda: step_debtrank_differential(w, h0, 1e-12))
    out.append(NetworkRun(
        name, "DebtRank differential", (ow, oc), (rw, rc), f"plain steps ({steps:,})",
        float(np.abs(dd.distress - h_ref).max()),
        f"R = {dd.debtrank:.4f}, {int(dd.defaulted.sum())} at h = 1",
    ))  # fmt: skip
    return out


# ---------------------------------------------------------------- report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=5_000, help="accounts in the reference")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    x, runs = bench_cascade(args.users, args.repeat)
    positions = sum(int(b.user.shape[0]) for b in (x.options, x.perps, x.collateral,
                                                   x.supplies, x.borrows))  # fmt: skip
    rw, rc, (n_margin, n_lending, agree) = timed(1, lambda: reference_round(x, args.sample))
    sampled = min(args.sample, n_margin) + min(args.sample, n_lending)
    scale = (n_margin + n_lending) / sampled
    nets = bench_network("random, 8 creditors each", random_network(args.nodes), args.repeat)
    nets += bench_network("a chain of defaults", default_chain(args.nodes), args.repeat)

    print(f"\n### Cascade: {args.users:,} users, {N_CHAINS} chains, {positions:,} positions, "
          f"{n_margin:,} margin + {n_lending:,} lending accounts\n")  # fmt: skip
    print("| shock | wall (best) | CPU (best) | rounds | account liquidations | bad debt | "
          "target | met |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in runs:
        print(f"| {r.name} | {r.wall:.3f} s | {r.cpu:.3f} s | {r.rounds} | {r.accounts:,} | "
              f"${r.bad_debt_usd:,.0f} | <= 1 s | {_met(r.wall <= 1.0)} |")  # fmt: skip
    per_round = min(r.wall / r.rounds for r in runs)
    print(f"| reference: per-account Python loop, one round's rule + HF, {sampled:,} accounts "
          f"x {scale:.0f} | {rw * scale:.2f} s | {rc * scale:.2f} s | 1 | - | - | - | "
          f"agrees: {'yes' if agree else '**no**'} |")  # fmt: skip
    print(f"| ratio reference / ours, per round | {rw * scale / per_round:.0f}x | | | | | | |")
    print(f"\n### Network contagion: {args.nodes:,} nodes\n")
    print("| network | method | wall (best) | CPU (best) | reference | reference wall | ratio | "
          "max abs diff | target | met | |")  # fmt: skip
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---|---|")
    for n in nets:
        print(f"| {n.network} | {n.name} | {n.ours[0] * 1e3:.1f} ms | {n.ours[1] * 1e3:.1f} ms | "
              f"{n.reference_name} | {n.reference[0] * 1e3:.1f} ms | "
              f"{n.reference[0] / n.ours[0]:.1f}x | {n.max_diff:.1e} | <= 0.5 s | "
              f"{_met(n.ours[0] <= 0.5)} | {n.note} |")  # fmt: skip
    print(f"\nMachine: {_cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}, numpy {np.__version__}; load average {load:.1f} "
          f"before / {os.getloadavg()[0]:.1f} after.")  # fmt: skip


if __name__ == "__main__":
    main()
