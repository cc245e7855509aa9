"""How fast and exact are RTRM's Black-76 Greeks and implied vols? ``python bench/risk_greeks.py``

Prices 1,000,000 random crypto options (forward 500-5,000 USD, strike 0.5-2x forward,
1 day to 2 years, vol 20-150 %, rate 0-8 %, calls and puts) with ``aggregation.black76``
and inverts them with ``aggregation.implied_vol``, next to the reference measured in the
same run on identical inputs: ``vollib`` (Jäckel's "Let's Be Rational", one Python call
per option and Greek), timed on a sample of 20,000 options and scaled to 1M. Units are
aligned: vollib's Black vega is per 1 % of vol and its theta per calendar day, as ours.

Times are CPU seconds of this process (``time.process_time``; everything runs on one
core), so a busy shared machine slows both sides alike. Implied-vol accuracy is measured
where the price carries the vol: its own rounding (eps of the price, or of the forward in
the money) moves the vol by < 1e-12. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from aggregation.black76 import black76
from aggregation.implied_vol import implied_vol

GREEKS = ("price", "delta", "gamma", "vega", "theta")


def make_inputs(n: int, seed: int) -> dict[str, NDArray[Any]]:
    rng = np.random.default_rng(seed)
    forward = rng.uniform(500.0, 5000.0, n)
    return {
        "forward": forward,
        "strike": forward * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n)),
        "t_years": rng.uniform(1 / 365, 2.0, n),
        "vol": rng.uniform(0.2, 1.5, n),
        "rate": rng.uniform(0.0, 0.08, n),
        "is_call": rng.random(n) < 0.5,
    }


def informative(
    x: dict[str, NDArray[Any]], price: NDArray[np.float64], vega: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Where a price pins the vol to 1e-10: rounding / vega_per_unit_vol < 1e-12."""
    f, k = x["forward"], x["strike"]
    itm = np.where(x["is_call"], f > k, k > f)
    rounding = np.finfo(np.float64).eps * (price + np.where(itm, np.maximum(f, k), 0.0))
    with np.errstate(all="ignore"):  # vega underflows deep in the wings
        mask: NDArray[np.bool_] = (rounding / (vega * 100.0) < 1e-12) & (price > 1e-300)
    return mask


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def vollib_greeks(x: dict[str, NDArray[Any]]) -> tuple[dict[str, NDArray[np.float64]], float]:
    """vollib's price and analytical Greeks, one call per option and Greek; seconds taken."""
    from vollib.black import black  # type: ignore[import-untyped]  # noqa: PLC0415
    from vollib.black.greeks import analytical  # type: ignore[import-untyped]  # noqa: PLC0415

    functions = {
        "price": black,
        "delta": analytical.delta,
        "gamma": analytical.gamma,
        "vega": analytical.vega,  # per 1 % of vol (x 0.01), as ours
        "theta": analytical.theta,  # per calendar day (/ 365), as ours
    }
    rows = list(
        zip(
            np.where(x["is_call"], "c", "p"),
            x["forward"].tolist(),
            x["strike"].tolist(),
            x["t_years"].tolist(),
            x["rate"].tolist(),
            x["vol"].tolist(),
            strict=True,
        )
    )
    out: dict[str, NDArray[np.float64]] = {}
    started = time.process_time()
    for name, fn in functions.items():
        out[name] = np.array([float(fn(*row)) for row in rows])
    return out, time.process_time() - started


def vollib_implied(
    price: NDArray[np.float64], x: dict[str, NDArray[Any]]
) -> tuple[NDArray[np.float64], float]:
    from vollib.black.implied_volatility import (  # type: ignore[import-untyped]  # noqa: PLC0415
        implied_volatility,
    )

    rows = zip(
        price.tolist(),
        x["forward"].tolist(),
        x["strike"].tolist(),
        x["rate"].tolist(),
        x["t_years"].tolist(),
        np.where(x["is_call"], "c", "p"),
        strict=True,
    )
    vols = []
    started = time.process_time()
    for row in rows:
        try:
            vols.append(float(implied_volatility(*row)))
        except Exception:  # vollib raises on prices it cannot invert
            vols.append(float("nan"))
    return np.array(vols), time.process_time() - started


@dataclass(frozen=True, slots=True)
class GreeksBench:
    """One run's measurements: ours on ``n`` options, vollib on the first ``m``."""

    n: int
    m: int
    ours_s: float
    iv_s: float
    ref_s: float  # vollib, on m options
    ref_iv_s: float
    diffs: dict[str, float]  # max |ours - vollib| per Greek
    iv_gap: float  # max |our IV - vollib's IV| where the price pins the vol
    iv_err: float  # max |our IV - true vol| where pinned
    ref_iv_err: float
    pinned: int
    pinned_sample: int
    solved: int
    ref_failures: int

    @property
    def scale(self) -> float:
        return self.n / self.m


def measure(n: int, m: int, seed: int) -> GreeksBench:
    """Time and compare Greeks and implied vols (ours on ``n``, vollib on ``m`` of them)."""
    x = make_inputs(n, seed)
    pricing = (x["forward"], x["strike"], x["t_years"], x["vol"], x["rate"], x["is_call"])

    ours_s = best_of(3, lambda: black76(*pricing))
    ours = black76(*pricing)
    price = ours.price
    iv_s = best_of(3, lambda: implied_vol(price, *pricing[:3], x["rate"], x["is_call"]))
    iv = implied_vol(price, *pricing[:3], x["rate"], x["is_call"])
    pinned = informative(x, price, ours.vega)
    iv_err = float(np.nanmax(np.abs(iv.vol - x["vol"])[pinned]))

    sample = {k: v[:m] for k, v in x.items()}
    try:
        ref, ref_s = vollib_greeks(sample)
        ref_iv, ref_iv_s = vollib_implied(price[:m], sample)
    except ImportError:
        print("vollib is not installed (pip install vollib): reference columns skipped")
        ref, ref_s, ref_iv, ref_iv_s = {}, float("nan"), np.full(m, np.nan), float("nan")
    return GreeksBench(
        n=n,
        m=m,
        ours_s=ours_s,
        iv_s=iv_s,
        ref_s=ref_s,
        ref_iv_s=ref_iv_s,
        diffs={g: float(np.max(np.abs(getattr(ours, g)[:m] - ref[g]))) for g in ref},
        iv_gap=float(np.nanmax(np.abs(iv.vol[:m] - ref_iv)[pinned[:m]])),
        iv_err=iv_err,
        ref_iv_err=float(np.nanmax(np.abs(ref_iv - x["vol"][:m])[pinned[:m]])),
        pinned=int(pinned.sum()),
        pinned_sample=int(pinned[:m].sum()),
        solved=int(iv.ok.sum()),
        ref_failures=int(np.isnan(ref_iv).sum()),
    )


def print_table(r: GreeksBench) -> None:
    n, m = r.n, r.m
    print(
        f"\n{n:,} options, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}; vollib timed on {m:,} and scaled to {n:,}\n"
    )
    print(
        "| quantity | RTRM (1M) | vollib (1M, scaled) | µs/option RTRM | µs/option vollib "
        "| speed-up | max abs diff vs vollib |"
    )
    print("|---|---|---|---|---|---|---|")
    diff_text = ", ".join(f"{g} {d:.1e}" for g, d in r.diffs.items()) or "n/a"
    ref_1m = r.ref_s * r.scale
    print(
        f"| price + delta, gamma, vega, theta (+ vanna, volga) | {r.ours_s:.3f} s | "
        f"{ref_1m:.1f} s | {r.ours_s / n * 1e6:.3f} | {r.ref_s / m * 1e6:.1f} | "
        f"{ref_1m / r.ours_s:,.0f}x | {diff_text} |"
    )
    ref_iv_1m = r.ref_iv_s * r.scale
    print(
        f"| implied vol | {r.iv_s:.3f} s | {ref_iv_1m:.1f} s | {r.iv_s / n * 1e6:.3f} | "
        f"{r.ref_iv_s / m * 1e6:.1f} | {ref_iv_1m / r.iv_s:,.0f}x | vol {r.iv_gap:.1e} |"
    )
    print(
        f"\nimplied-vol round trip where the price pins the vol, max |vol - true|: RTRM "
        f"{r.iv_err:.1e} ({r.pinned:,} of {n:,}; {r.solved:,} solved), "
        f"vollib {r.ref_iv_err:.1e} ({r.pinned_sample:,} of {m:,}); "
        f"vollib failures (NaN) {r.ref_failures}"
    )
    print("targets: speed-up >= 150x, Greek differences <= 1e-9")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--options", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="options priced by vollib")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print_table(measure(args.options, args.sample, args.seed))


if __name__ == "__main__":
    main()
