"""Issue 4's risk benchmark in one run: ``python bench/risk.py``

Runs, in one process and one after the other:

- **(a)** ``bench/risk_greeks.py``: Black-76 price + Greeks and implied vols of 1,000,000
  options against ``vollib`` (timed on a sample, scaled), with the largest differences;
- **(b)** and **(c)** ``bench/risk_portfolio.py``: full unified risk of 100,000 users /
  1,000,000 positions on the Derive PMRM grid against a per-user Python loop, and one
  user's incremental update after a new option;

and prints one markdown table (ours, the reference measured in the same run, the ratio,
the target and whether it is met) followed by the machine it ran on. Smaller sizes for a
quick look: ``--options 50000 --vollib-sample 2000 --users 5000 --positions 50000``.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
import risk_greeks  # type: ignore[import-not-found]  # sibling script (bench/ is sys.path[0])
import risk_portfolio  # type: ignore[import-not-found]
import scipy  # type: ignore[import-untyped]


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
    parser.add_argument("--options", type=int, default=1_000_000, help="(a) options priced")
    parser.add_argument("--vollib-sample", type=int, default=20_000, help="(a) priced by vollib")
    parser.add_argument("--users", type=int, default=100_000, help="(b) users")
    parser.add_argument("--positions", type=int, default=1_000_000, help="(b) positions")
    parser.add_argument("--loop-sample", type=int, default=1_000, help="(b) users in the loop")
    parser.add_argument("--repeat", type=int, default=5, help="(b) runs; the best is kept")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    a = risk_greeks.measure(args.options, args.vollib_sample, args.seed)
    bc = risk_portfolio.measure(args.users, args.positions, args.loop_sample, args.repeat)

    greek_ref, iv_ref = a.ref_s * a.scale, a.ref_iv_s * a.scale
    worst_diff = max(a.diffs.values(), default=float("nan"))
    diffs = ", ".join(f"{g} {d:.1e}" for g, d in a.diffs.items()) or "vollib missing"
    (f_wall, f_cpu), (i_wall, i_cpu) = bc.full, bc.incremental
    r_wall, r_cpu = bc.reference
    b_wall, b_cpu = bc.build
    print(f"\n### Issue 4 risk benchmark (one run, seed {args.seed})\n")
    print("| part | what | RTRM | reference, same run | ratio | target | met | accuracy |")
    print("|---|---|---:|---:|---:|---|---|---|")
    print(
        f"| (a) | price + delta, gamma, vega, theta of {a.n:,} options | {a.ours_s:.3f} s CPU | "
        f"vollib {greek_ref:.1f} s CPU ({a.m:,} timed, scaled) | {greek_ref / a.ours_s:,.0f}x | "
        f">= 150x, diff <= 1e-9 | {_met(greek_ref / a.ours_s >= 150 and worst_diff <= 1e-9)} | "
        f"max abs diff: {diffs} |"
    )
    print(
        f"| (a) | implied vol of {a.n:,} prices | {a.iv_s:.3f} s CPU | vollib {iv_ref:.1f} s "
        f"CPU | {iv_ref / a.iv_s:,.0f}x | - | - | vs vollib {a.iv_gap:.1e}; round trip "
        f"{a.iv_err:.1e} ({a.pinned:,} pinned) |"
    )
    print(
        f"| (b) | full unified risk: {bc.users:,} users, {bc.positions:,} positions, "
        f"{bc.contracts:,} contracts x {bc.scenarios} scenarios | {f_wall:.3f} s wall "
        f"({f_cpu:.3f} s CPU) | per-user Python loop {r_wall:.1f} s wall ({bc.sample:,} users, "
        f"scaled) | {r_wall / f_wall:,.0f}x | <= 2 s | {_met(f_wall <= 2.0)} | - |"
    )
    print(
        f"| (c) | incremental: 1 user ({bc.incremental_options} options) + 1 new option | "
        f"{i_wall * 1e3:.3f} ms wall ({i_cpu * 1e3:.3f} ms CPU) | full recompute "
        f"{f_wall * 1e3:,.0f} ms | {f_wall / i_wall:,.0f}x | <= 1 ms | {_met(i_wall <= 1e-3)} "
        "| row written back in place |"
    )
    print(
        f"| - | build: sort books by user + index contracts | {b_wall:.3f} s wall "
        f"({b_cpu:.3f} s CPU) | - | - | - | - | - |"
    )
    print(f"\nCPU-time ratio of (b) vs the loop: {r_cpu / f_cpu:,.0f}x.")
    print(
        f"Machine: {_cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"{platform.python_implementation()} {platform.python_version()}, numpy "
        f"{np.__version__}, scipy {scipy.__version__}; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (best-of timings; a busy machine slows both sides)."
    )


if __name__ == "__main__":
    main()
