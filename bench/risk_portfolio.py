"""How fast is full per-user risk? (``python bench/risk_portfolio.py``)

Builds a synthetic snapshot (default 100,000 users and 1,000,000 positions: 60 % options
on a listed strike/expiry grid, 20 % perps, 10 % margin collateral, 6 % lending supplies,
4 % borrows; 4 underlyings, 3 chains, 3 protocols) and times, in one run:

- **build**: sort every book by user and index the unique option contracts (the loader's
  last step);
- **(b) full risk**: :func:`aggregation.risk.unified_risk` on the Derive PMRM grid --
  Black-76 prices and Greeks, all 31 scenarios, cross margin, lending health, distance to
  liquidation, per-chain and per-protocol breakdowns;
- **(c) incremental**: one user's risk after one new option: slice that user, append the
  trade, recompute, write the row back;
- **reference**: a straightforward per-user Python loop with the same ``black76`` (one
  call per user over its options x scenarios, then Greeks, margin and lending health; no
  liquidation search, no breakdowns) over a 1,000-user sample, scaled to every user.

Times are the best of ``--repeat`` runs (wall clock; shared machines are noisy, so the
CPU time of the same run and the load average are printed too). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aggregation.black76 import black76
from aggregation.risk import (
    BorrowPositions,
    CollateralPositions,
    OptionPositions,
    PerpPositions,
    RiskInputs,
    SupplyPositions,
    unified_risk,
)
from aggregation.scenarios import ScenarioGrid, derive_pmrm_grid

N_UNDERLYINGS, N_CHAINS, N_PROTOCOLS = 4, 3, 3
SPOT_USD = np.array([100_000.0, 3_000.0, 150.0, 0.6])
CARRY = np.array([0.05, 0.04, 0.06, 0.08])
VOL_BASE = np.array([0.5, 0.65, 0.8, 0.9])
# assets: the 4 underlyings, a liquid-staked ETH (tied to ETH), 2 stablecoins
ASSET_PRICE = np.array([100_000.0, 3_000.0, 150.0, 0.6, 3_300.0, 1.0, 1.0])
ASSET_UNDERLYING = np.array([0, 1, 2, 3, 1, -1, -1], dtype=np.intp)
USDC = 5
Ints = np.ndarray[Any, np.dtype[np.intp]]


def synthetic_inputs(n_users: int, n_positions: int, seed: int = 7) -> RiskInputs:
    """A random but plausible snapshot; every user has USDC margin sized to its book."""
    rng = np.random.default_rng(seed)
    n_opt, n_perp = int(0.6 * n_positions), int(0.2 * n_positions)
    n_coll, n_sup = int(0.1 * n_positions), int(0.06 * n_positions)
    n_bor = n_positions - n_opt - n_perp - n_coll - n_sup

    def idx(high: int, n: int) -> Ints:
        return rng.integers(0, high, n).astype(np.intp)

    und = idx(N_UNDERLYINGS, n_opt)
    moneyness = rng.choice(np.linspace(0.6, 1.6, 21), n_opt)
    opt_user = idx(n_users, n_opt)
    opt_size = rng.choice([-1.0, 1.0], n_opt) * rng.integers(1, 10, n_opt) * 1e3 / SPOT_USD[und]
    options = OptionPositions(
        user=opt_user, underlying=und, chain=idx(N_CHAINS, n_opt),
        protocol=idx(N_PROTOCOLS, n_opt), size=opt_size, strike_usd=SPOT_USD[und] * moneyness,
        expiry_years=rng.choice([1.0, 2.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0], n_opt) / 365,
        is_call=rng.random(n_opt) < 0.5,
        vol_annual=VOL_BASE[und] * (1.0 + 0.3 * (moneyness - 1.0) ** 2),
    )  # fmt: skip
    p_und, p_user = idx(N_UNDERLYINGS, n_perp), idx(n_users, n_perp)
    p_size = rng.normal(0.0, 3e3, n_perp) / SPOT_USD[p_und]
    perps = PerpPositions(
        user=p_user, underlying=p_und, chain=idx(N_CHAINS, n_perp),
        protocol=idx(N_PROTOCOLS, n_perp), size=p_size,
        open_notional_usd=p_size * SPOT_USD[p_und] * rng.normal(1.0, 0.05, n_perp),
        funding_usd=rng.normal(0.0, 5.0, n_perp),
    )  # fmt: skip
    notional = np.bincount(opt_user, np.abs(opt_size) * SPOT_USD[und], minlength=n_users)
    notional += np.bincount(p_user, np.abs(p_size) * SPOT_USD[p_und], minlength=n_users)
    n_margin = min(n_users, n_coll)  # one USDC balance per user, the rest random assets
    c_user = np.concatenate([np.arange(n_margin, dtype=np.intp), idx(n_users, n_coll - n_margin)])
    c_asset = np.concatenate([np.full(n_margin, USDC, np.intp), idx(7, n_coll - n_margin)])
    c_usd = np.concatenate(
        [0.3 * notional[:n_margin] + rng.uniform(1e3, 1e4, n_margin),
         rng.uniform(1e3, 2e4, n_coll - n_margin)]
    )  # fmt: skip
    collateral = CollateralPositions(
        user=c_user, asset=c_asset, chain=idx(N_CHAINS, n_coll), protocol=idx(N_PROTOCOLS, n_coll),
        amount=c_usd / ASSET_PRICE[c_asset],
        haircut=np.where(ASSET_UNDERLYING[c_asset] < 0, 0.0, 0.1),
    )  # fmt: skip
    s_asset = idx(5, n_sup)  # the underlyings and stETH
    s_usd = rng.uniform(2e3, 5e4, n_sup)
    supplies = SupplyPositions(
        user=idx(n_users, n_sup), asset=s_asset, chain=idx(N_CHAINS, n_sup),
        protocol=idx(N_PROTOCOLS, n_sup), amount=s_usd / ASSET_PRICE[s_asset],
        liquidation_threshold=np.full(n_sup, 0.83), ltv=np.full(n_sup, 0.8),
        liquidation_bonus=np.full(n_sup, 1.05),
    )  # fmt: skip
    against = rng.integers(0, n_sup, n_bor)  # each borrow sits in a supply's account
    b_asset = rng.choice([0, 1, USDC], n_bor).astype(np.intp)
    borrows = BorrowPositions(
        user=supplies.user[against], asset=b_asset, chain=supplies.chain[against],
        protocol=supplies.protocol[against],
        amount=s_usd[against] * rng.uniform(0.2, 0.75, n_bor) / ASSET_PRICE[b_asset],
    )  # fmt: skip
    return RiskInputs.build(
        tuple(f"0x{i:040x}" for i in range(n_users)),
        spot_usd=SPOT_USD, carry_annual=CARRY, asset_price_usd=ASSET_PRICE,
        asset_underlying=ASSET_UNDERLYING, options=options, perps=perps,
        collateral=collateral, supplies=supplies, borrows=borrows,
        n_chains=N_CHAINS, n_protocols=N_PROTOCOLS,
    )  # fmt: skip


def rebuild(inputs: RiskInputs) -> RiskInputs:
    return RiskInputs.build(
        inputs.users, spot_usd=inputs.spot_usd, carry_annual=inputs.carry_annual,
        asset_price_usd=inputs.asset_price_usd, asset_underlying=inputs.asset_underlying,
        options=inputs.options, perps=inputs.perps, collateral=inputs.collateral,
        supplies=inputs.supplies, borrows=inputs.borrows, n_chains=inputs.n_chains,
        n_protocols=inputs.n_protocols,
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


def reference_user(inputs: RiskInputs, grid: ScenarioGrid, i: int) -> float:
    """One user's Greeks, portfolio margin and lending HF the straightforward way."""
    one = inputs.user_slice(i)
    o, p, c = one.options, one.perps, one.collateral
    spot = inputs.spot_usd
    mult = grid.spot_multipliers(inputs.n_underlyings)
    forward = spot[o.underlying] * np.exp(inputs.carry_annual[o.underlying] * o.expiry_years)
    fwd = np.concatenate([forward[:, None], forward[:, None] * mult[o.underlying]], axis=1)
    vol = np.concatenate(
        [o.vol_annual[:, None], grid.shocked_vols(o.vol_annual, o.expiry_years)], 1
    )
    g = black76(fwd, o.strike_usd[:, None], o.expiry_years[:, None], vol, 0.0, o.is_call[:, None])
    margin = 0.0
    for u in range(inputs.n_underlyings):
        on_u = o.underlying == u
        pnl = (o.size[on_u, None] * (g.price[on_u, 1:] - g.price[on_u, :1])).sum(axis=0)
        linear = p.size[p.underlying == u].sum() * spot[u]
        tied = inputs.asset_underlying[c.asset] == u
        linear += (c.amount[tied] * inputs.asset_price_usd[c.asset[tied]]).sum()
        pnl = (pnl + linear * (mult[u] - 1.0)) * grid.weight_array()
        margin += 0.8 * max(0.0, -pnl.min()) + 0.03 * abs(p.size[p.underlying == u]).sum() * spot[u]
        margin += 0.003 * abs(o.size[on_u]).sum() * spot[u]
    delta = float((o.size * g.delta[:, 0]).sum())
    s, b = one.supplies, one.borrows
    health = float("inf")
    for key in set(zip(s.protocol, s.chain, strict=True)) | set(
        zip(b.protocol, b.chain, strict=True)
    ):
        in_s = (s.protocol == key[0]) & (s.chain == key[1])
        in_b = (b.protocol == key[0]) & (b.chain == key[1])
        coll = (s.amount * inputs.asset_price_usd[s.asset] * s.liquidation_threshold)[in_s].sum()
        debt = (b.amount * inputs.asset_price_usd[b.asset])[in_b].sum()
        health = min(health, coll / debt if debt > 0 else float("inf"))
    return margin + delta + (0.0 if np.isinf(health) else health)


@dataclass(frozen=True, slots=True)
class PortfolioBench:
    """One run's timings (best wall and CPU seconds) and the sizes they refer to."""

    users: int
    positions: int
    contracts: int
    scenarios: int
    incremental_options: int
    sample: int
    build: tuple[float, float]
    full: tuple[float, float]  # (b)
    incremental: tuple[float, float]  # (c)
    reference: tuple[float, float]  # the per-user loop, scaled to every user
    load: tuple[float, float]  # load average before and after


def measure(users: int, positions: int, sample: int, repeat: int) -> PortfolioBench:
    """Time the build, (b) full risk, (c) one incremental update and the reference loop."""
    grid = derive_pmrm_grid()
    load_before = os.getloadavg()[0]

    inputs = synthetic_inputs(users, positions)
    b_wall, b_cpu, _ = timed(repeat, lambda: rebuild(inputs))
    f_wall, f_cpu, full = timed(repeat, lambda: unified_risk(inputs, grid))

    user = int(np.argmax(np.diff(inputs.offsets[0])))  # the busiest option trader
    o = inputs.options
    first = int(inputs.offsets[0][user])
    trade = OptionPositions(
        user=np.zeros(1, np.intp), underlying=o.underlying[first : first + 1],
        chain=o.chain[first : first + 1], protocol=o.protocol[first : first + 1],
        size=np.array([-1.0]), strike_usd=o.strike_usd[first : first + 1] * 1.1,
        expiry_years=o.expiry_years[first : first + 1], is_call=np.array([True]),
        vol_annual=o.vol_annual[first : first + 1],
    )  # fmt: skip

    def incremental() -> None:
        one = inputs.user_slice(user).append(options=trade)
        full.set_user(user, unified_risk(one, grid))

    i_wall, i_cpu, _ = timed(max(repeat, 200), incremental)
    chosen = range(min(sample, users))
    r_wall, r_cpu, _ = timed(1, lambda: [reference_user(inputs, grid, i) for i in chosen])
    scale = users / len(chosen)
    return PortfolioBench(
        users=users,
        positions=sum(int(book.user.shape[0]) for book in inputs._books()),
        contracts=int(inputs.instruments.strike_usd.shape[0]),
        scenarios=grid.n_scenarios,
        incremental_options=int(np.diff(inputs.offsets[0])[user]),
        sample=len(chosen),
        build=(b_wall, b_cpu),
        full=(f_wall, f_cpu),
        incremental=(i_wall, i_cpu),
        reference=(r_wall * scale, r_cpu * scale),
        load=(load_before, os.getloadavg()[0]),
    )


def print_table(r: PortfolioBench) -> None:
    (b_wall, b_cpu), (f_wall, f_cpu), (i_wall, i_cpu) = r.build, r.full, r.incremental
    r_wall, r_cpu = r.reference
    print(f"\n### Unified risk: {r.users:,} users, {r.positions:,} positions, Derive PMRM grid\n")
    print(f"{r.contracts:,} unique option contracts, {r.scenarios} scenarios, "
          f"{r.incremental_options} options for the incremental user\n")  # fmt: skip
    print("| step | wall (best) | CPU (best) | target |")
    print("|---|---:|---:|---:|")
    print(f"| build: sort by user + index contracts | {b_wall:.3f} s | {b_cpu:.3f} s | - |")
    print(f"| (b) full unified risk | {f_wall:.3f} s | {f_cpu:.3f} s | <= 2 s |")
    print(f"| (c) incremental: 1 user, 1 new option | {i_wall * 1e3:.3f} ms | "
          f"{i_cpu * 1e3:.3f} ms | <= 1 ms |")  # fmt: skip
    print(f"| reference: per-user Python loop, {r.sample:,} users x {r.users / r.sample:.0f} | "
          f"{r_wall:.1f} s | {r_cpu:.1f} s | - |")  # fmt: skip
    print(f"| ratio reference / (b) | {r_wall / f_wall:.0f}x | {r_cpu / f_cpu:.0f}x | - |")
    print(f"\nMachine: {platform.platform()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average "
          f"{r.load[0]:.1f} before / {r.load[1]:.1f} after.")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print_table(measure(args.users, args.positions, args.sample, args.repeat))


if __name__ == "__main__":
    main()
