"""Load on ``/v1/users/{address}/risk`` over loopback: requests/s, p50 and p99.

``python bench/api.py [--users 100000] [--seconds 20] [--concurrency 16]``

Seeds a devnet of ``--users`` users on 3 chains (or uses ``--config`` of an indexed one),
indexes it once, starts ``rtrm serve --no-index`` as a subprocess (rate limit off) and
drives it from this process with ``--concurrency`` keep-alive connections (aiohttp), each
asking for a random user's risk, for ``--seconds``. Two phases in the same run: **cold**
(the first request of each user computes its report) and **warm** (reports memoised on
the snapshot; ``--users`` beyond the memo size keep missing). Target: >= 1,500
requests/s at p99 <= 30 ms on 2 cores. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from latency import start_serve  # type: ignore[import-not-found]  # sibling script
from sqlalchemy import create_engine, text

from chains.devnet import DevnetOptions, up
from chains.registry import load_registry

TARGET_RPS = 1_500
TARGET_P99_MS = 30.0


def index_once(config: Path) -> list[str]:
    """``rtrm index --once`` (a subprocess: this folder's ``indexer.py`` shadows the
    package here); the users (accounts with a row)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTRM_")}
    rtrm = Path(sys.executable).with_name("rtrm")
    subprocess.run(
        [str(rtrm), "--config", str(config), "index", "--once", "--no-progress"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = create_engine(load_registry(config).database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT DISTINCT account FROM account_balance"))
            return sorted(str(account) for (account,) in rows)
    finally:
        engine.dispose()


async def load(
    base: str, users: list[str], seconds: float, concurrency: int, seed: int
) -> tuple[int, np.ndarray, int]:
    """(requests answered 200, latencies in ms, errors) over ``seconds``."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                user = users[rng.randrange(len(users))]
                started = time.perf_counter()
                async with session.get(f"{base}/v1/users/{user}/risk") as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        continue
                latencies.append((time.perf_counter() - started) * 1000.0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), np.asarray(latencies), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--config", type=Path, default=None, help="an indexed devnet's rtrm.toml")
    args = parser.parse_args()
    nodes = []
    if args.config is None:
        home = Path(tempfile.mkdtemp(prefix="rtrm-api-bench-"))
        options = DevnetOptions(
            chains=3, users=args.users, seed=args.seed, block_time_s=0, state_dir=home,
            keep_states=64,
        )  # fmt: skip
        state, nodes = up(options)
        config = Path(state.config_path)
    else:
        config = args.config
    process = None
    try:
        users = index_once(config)
        process, base = start_serve(config, "--no-index")
        rows = []
        for phase in ("cold", "warm"):
            done, ms, errors = asyncio.run(
                load(base, users, args.seconds, args.concurrency, args.seed)
            )
            rows.append((phase, done, done / args.seconds, ms, errors))
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)
        for node in nodes:
            node.stop()
    print(
        f"\n/v1/users/{{address}}/risk, {len(users):,} users, {args.concurrency} connections, "
        f"{args.seconds:.0f} s per phase, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "cores\n"
    )
    print("| phase | requests | req/s | p50 ms | p99 ms | errors | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    for phase, done, rps, ms, errors in rows:
        p50, p99 = (np.percentile(ms, 50), np.percentile(ms, 99)) if done else (0.0, 0.0)
        met = "yes" if rps >= TARGET_RPS and p99 <= TARGET_P99_MS else "**no**"
        print(
            f"| {phase} | {done:,} | {rps:,.0f} | {p50:.1f} | {p99:.1f} | {errors} | "
            f">= {TARGET_RPS:,}/s, p99 <= {TARGET_P99_MS:.0f} ms | {met} |"
        )


if __name__ == "__main__":
    main()
