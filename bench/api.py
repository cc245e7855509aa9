"""Load on ``/v1/users/{address}/risk`` over loopback: requests/s, p50 and p99, against
a bare aiohttp server measured in the same run.

``python bench/api.py [--users 100000] [--seconds 20] [--concurrency 16] [--config rtrm.toml]``

Seeds a devnet of ``--users`` users on 3 chains (or uses ``--config`` of one), indexes it
once, starts ``rtrm serve --no-index --full-recompute 3600`` as a subprocess (one snapshot
for the whole run; rate limit off) and drives it from this process with
``--concurrency`` keep-alive connections (aiohttp), ``--seconds`` per phase:

- **cold**: every request a user not asked before (each computes its report: the cold
  path), after a few seconds of warm-up in which the snapshot's report basis is prepared;
- **warm**: random users among the last 10,000 of the cold phase (memoised answers);
- **mixed**: random users of all of them (the memo holds ``ApiSettings.memo_entries``,
  50,000, answers per snapshot: beyond that, misses) -- the target applies here:
  >= 1,500 requests/s at p99 <= 30 ms on 2 cores;
- **reference**: the same load generator against a bare aiohttp app in its own process
  answering one fixed risk answer (same size), with no middleware: the most this client
  and aiohttp can do on this machine, run twice (their spread is the run's noise).
  ``vs reference`` is each phase's requests/s over the faster of the two.

A second table times one cold report in-process on the same snapshot: the library's
``user_risk_report`` (the basis of the user's slice) against the API's (assembled from the
whole book's :class:`aggregation.report_basis.ReportBasis`), both encoded and checked
equal, and how long the basis takes to prepare (tail draws, then one grid's
``unified_risk`` of every user). Client and server share the machine's cores.
"""

# ruff: noqa: E402  # the imports follow the sys.path fix below

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/api.py`, this folder comes first on sys.path and its indexer.py
# would shadow the `indexer` package: put the project's root first and this folder last
# (latency.py is found there).
_HERE = Path(__file__).resolve().parent
_PATH = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path[:] = [str(_HERE.parent), *_PATH, str(_HERE)]

import argparse
import asyncio
import os
import platform
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp
import numpy as np
import requests
from latency import start_serve  # type: ignore[import-not-found]  # sibling script
from sqlalchemy import create_engine, text

from aggregation.loader import load_snapshot
from aggregation.report_basis import ReportBasis, TailBasis
from aggregation.user_report import ReportParams, report_from_basis, user_risk_report
from api.encoding import dumps
from api.handlers_users import encode_report, scenario_grid
from chains.anvil import AnvilNode
from chains.devnet import DevnetOptions, up
from chains.registry import load_registry
from indexer.store import open_store

TARGET_RPS = 1_500
TARGET_P99_MS = 30.0
WARM_USERS = 10_000
WARM_UP_S = 5.0
REPORT_SAMPLE = 300

REFERENCE_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[1], "rb").read()
async def hello(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/v1/users/{address}/risk", hello)
async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()
import asyncio
asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    answered: int
    seconds: float
    latencies_ms: np.ndarray
    errors: int

    @property
    def rps(self) -> float:
        return self.answered / self.seconds


def index_once(config: Path) -> list[str]:
    """``rtrm index --once`` in a subprocess; the users (accounts with a row)."""
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
    name: str, base: str, next_user: Callable[[], str | None], seconds: float, concurrency: int
) -> Phase:
    """Requests until ``seconds`` pass or ``next_user`` runs out."""
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and (user := next_user()) is not None:
                sent = time.perf_counter()
                async with session.get(f"{base}/v1/users/{user}/risk") as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        continue
                latencies.append((time.perf_counter() - sent) * 1000.0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = min(time.perf_counter(), deadline) - started
    return Phase(name, len(latencies), elapsed, np.asarray(latencies), errors)


def from_list(users: list[str]) -> Callable[[], str | None]:
    """Each user once, in order (a phase of first requests)."""
    it: Iterator[str] = iter(users)
    return lambda: next(it, None)


def at_random(users: list[str], seed: int) -> Callable[[], str | None]:
    rng = random.Random(seed)
    return lambda: users[rng.randrange(len(users))]


def reference(body: bytes, seconds: float, concurrency: int, users: list[str], run: int) -> Phase:
    """The load generator against a bare aiohttp server answering ``body``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as file:
        file.write(body)
        file.flush()
        server = subprocess.Popen(
            [sys.executable, "-c", REFERENCE_SERVER, file.name], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            base = f"http://127.0.0.1:{int(server.stdout.readline())}"
            phase = load(f"reference {run}", base, at_random(users, run), seconds, concurrency)
            return asyncio.run(phase)
        finally:
            server.terminate()
            server.wait(30)
            assert server.stdout is not None
            server.stdout.close()


def serve_phases(
    config: Path, users: list[str], args: argparse.Namespace
) -> tuple[list[Phase], bytes]:
    """The phases against ``rtrm serve``, and one of its answers."""
    process, base = start_serve(config, "--no-index", "--full-recompute", "3600")
    try:
        order = users.copy()
        random.Random(args.seed).shuffle(order)
        first = from_list(order)
        asyncio.run(load("warm-up", base, first, WARM_UP_S, args.concurrency))
        cold_users: list[str] = []

        def cold_next() -> str | None:
            user = first()
            if user is not None:
                cold_users.append(user)
            return user

        cold = asyncio.run(load("cold", base, cold_next, args.seconds, args.concurrency))
        hot = cold_users[-WARM_USERS:]
        warm = asyncio.run(
            load("warm", base, at_random(hot, args.seed), args.seconds, args.concurrency)
        )
        mixed = asyncio.run(
            load("mixed", base, at_random(users, args.seed), args.seconds, args.concurrency)
        )
        body = requests.get(f"{base}/v1/users/{users[0]}/risk", timeout=60).content
        return [cold, warm, mixed], body
    finally:
        process.terminate()
        process.wait(60)


def cold_reports(config: Path, users: list[str], seed: int) -> tuple[float, float, float, float]:
    """(library ms, API ms per cold report, seconds to prepare the tail draws and the
    derive grid's risk of every user) on the store's snapshot."""
    registry = load_registry(config)
    store = open_store(registry.database_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            snapshot = load_snapshot(conn, registry)
    finally:
        store.dispose()
    grid = scenario_grid("derive")
    started = time.perf_counter()
    tail = TailBasis.prepare(snapshot, ReportParams())
    tail_s = time.perf_counter() - started
    basis = ReportBasis.prepare(tail, grid)
    risk_s = time.perf_counter() - started - tail_s
    sample = random.Random(seed).sample(users, min(REPORT_SAMPLE, len(users)))
    library, ours = 0.0, 0.0
    for user in sample:  # interleaved: the same cache and load for both
        t0 = time.perf_counter()
        expected = dumps(user_risk_report(snapshot, user, grid))
        t1 = time.perf_counter()
        fast = report_from_basis(basis, user)
        got = encode_report(fast) if fast is not None else b""
        t2 = time.perf_counter()
        assert got == expected, user
        library, ours = library + t1 - t0, ours + t2 - t1
    return 1000.0 * library / len(sample), 1000.0 * ours / len(sample), tail_s, risk_s


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--config", type=Path, default=None, help="a devnet's rtrm.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtrm-api-bench-") as home:
        run(args, Path(home))


def run(args: argparse.Namespace, home: Path) -> None:
    """Seed (into ``home``) unless given a devnet, index, measure, print the tables."""
    nodes: list[AnvilNode] = []
    started = time.perf_counter()
    if args.config is None:
        options = DevnetOptions(
            chains=3, users=args.users, seed=args.seed, block_time_s=0, state_dir=home,
            keep_states=64,
        )  # fmt: skip
        state, nodes = up(options)
        config = Path(state.config_path)
    else:
        config = args.config
    try:
        seeded_s = time.perf_counter() - started
        users = index_once(config)
        indexed_s = time.perf_counter() - started - seeded_s
    finally:
        for node in nodes:
            node.stop()
    phases, body = serve_phases(config, users, args)
    # after the server's phases (its body is one of their answers), twice: their spread is
    # the run's noise
    phases += [reference(body, args.seconds, args.concurrency, users, i) for i in (1, 2)]
    library_ms, ours_ms, tail_s, risk_s = cold_reports(config, users, args.seed)
    _report(phases, args, users, seeded_s, indexed_s)
    print(f"\ncold report in-process ({REPORT_SAMPLE} users, derive grid, encoded, equal)\n")
    print(
        "| library `user_risk_report` ms | API cold path ms | speedup "
        "| basis prepared in s (tail draws + risk of every user) |"
    )
    print("|---|---|---|---|")
    print(
        f"| {library_ms:.2f} | {ours_ms:.2f} | {library_ms / ours_ms:.1f}x "
        f"| {tail_s + risk_s:.2f} ({tail_s:.2f} + {risk_s:.2f}) |"
    )


def _report(
    phases: list[Phase], args: argparse.Namespace, users: list[str], seeded: float, indexed: float
) -> None:
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(
        f"\n/v1/users/{{address}}/risk, {len(users):,} users on 3 chains (seeded in "
        f"{seeded:.0f} s, indexed in {indexed:.0f} s), {args.concurrency} connections, "
        f"{args.seconds:.0f} s per phase; {platform.machine()}, {os.cpu_count()} cores, "
        f"{python}, load {os.getloadavg()[0]:.1f}\n"
    )
    print("| phase | requests | req/s | p50 ms | p99 ms | errors | vs reference | target met |")
    print("|---|---|---|---|---|---|---|---|")
    floor = max(p.rps for p in phases if p.name.startswith("reference"))
    for phase in phases:
        ms = phase.latencies_ms
        p50, p99 = (np.percentile(ms, 50), np.percentile(ms, 99)) if phase.answered else (0, 0)
        met = "yes" if phase.rps >= TARGET_RPS and p99 <= TARGET_P99_MS else "**no**"
        print(
            f"| {phase.name} | {phase.answered:,} | {phase.rps:,.0f} | {p50:.1f} | {p99:.1f} | "
            f"{phase.errors} | {phase.rps / floor:.2f} | "
            f"{met if phase.name == 'mixed' else '-'} |"
        )
    print(f"\ntarget (mixed): >= {TARGET_RPS:,} req/s at p99 <= {TARGET_P99_MS:.0f} ms")


if __name__ == "__main__":
    main()
