"""How fast does the insurance backstop size its capital and pay a new deficit?
(``python bench/insurance.py``)

In one run:

(a) **capital sizing**: :func:`insurance.sizing.size_capital` with 10,000 Monte Carlo paths
    on a synthetic book of 100,000 users and 1,000,000 positions (``bench/risk_portfolio.py``'s
    book: options, perps and margin collateral, lending supplies and borrows on 3 chains and
    3 protocols, 4 underlyings plus a liquid-staked ETH and two stablecoins), with a
    synthetic oracle history (90 days of irregular rounds, correlated) for the EWMA vols.
    A live book holds no liquidatable account (keepers would have closed it), so before
    timing, margin accounts (one per user, market and chain, as on chain) below 1.2x their
    maintenance get USDC margin up to it and lending accounts below HF 1.1 repay debt down
    to it; a zero-shock cascade then liquidates nobody (checked and printed). Timed with
    the ``max_cascades`` screen that ``size_capital`` offers (``rtrm insurance size``'s
    default, 200): only the paths with the largest two-sided first-order bad debt
    (:func:`insurance.sizing.first_order_bad_debt`) go through the cascade, plus a
    stratified random sample of the others for the means.
    **Reference**, same run and same paths: the naive approach, every path through the
    full cascade, timed on a random sample of the 10,000 paths and scaled.
    **Screen check** at 100k users (every path would take ~20 min): probe paths through
    the full cascade -- the random naive sample, the ``--check`` paths ranked just below
    the cut, and the ``--check`` paths the *previous*, one-sided screen (collateral lost in
    a fall) ranked first and last (the largest falls and rallies; its blind spot) -- and
    the catch rate: of the probes whose bad debt exceeds the screened VaR, the share the
    screen ran.

(a') **screen vs the exact answer** on a small book (``--exact-users``, 5,000 users,
    2,000 paths): every path through the cascade, then the true ES (99.5 %) against the
    screened ES at several ``max_cascades``, for the two-sided screen and the previous
    one-sided one, with the catch rate (the share of the true ES tail the screen ran);
    the GPD ES at the screened run's threshold; the stratified means against the true
    ones.

(b) **detection-to-payout-sent** on a real anvil devnet (one chain, a small seeded world,
    a block per transaction): the indexer follows the head in a thread
    (:func:`indexer.runner.run_indexers`), the insurance trigger
    (:func:`insurance.trigger.run_trigger`, the ``rtrm insurance trigger`` code) runs in
    another thread, woken by every indexed batch and at least every second, with
    ``pay_after_finality = false`` (otherwise nothing is paid before the deficit's block is
    32 blocks deep, which is the chain's finality and not the backstop's latency). The
    outside world acts through ``rtrm devnet crash`` subprocesses (oracle crash + keeper
    liquidations), several times in a row. For every deficit the crashes create
    (``DeficitCreated``, ``BadDebt``, ``Liquidated.badDebt``): from the moment the batch
    holding its block is committed (cursor >= that block; the indexer's ``on_batch``) to
    the moment its last ``payClaim`` is recorded ``sent`` with its tx hash (the executor
    sends every due payout, each recorded ``sent`` before the next, then waits for the
    receipts together). The operator signs locally with a key of its own
    (``RTRM_INSURANCE_OPERATOR_KEY``'s path), made an operator of the fund before the run.

Prints a markdown table (ours, the reference, the target) and the machine. Targets:
sizing <= 60 s; detection-to-payout-sent <= 2 s. Smaller sizes for a quick look:
``--users 5000 --positions 50000 --paths 2000 --crashes 2 --exact-users 1000``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/insurance.py`, this folder comes first on sys.path and this file's
# name would shadow the `insurance` package: drop the folder before importing the project
# (with a sys.path call, which ruff's E402 accepts above imports).
sys.path.remove(str(Path(__file__).resolve().parent))

import argparse
import asyncio
import functools
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import numpy as np
from eth_account import Account
from eth_utils.crypto import keccak
from sqlalchemy import text

from aggregation.accounts import account_state
from aggregation.cascade import cascade
from aggregation.lending import LendingBook, account_health, lending_accounts
from aggregation.risk import CollateralPositions, RiskInputs
from aggregation.snapshot import PriceHistory, Snapshot
from chains.abi import encode_call
from chains.deploy import DEPLOYER
from chains.devnet import DevnetOptions, up
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int, to_hex
from chains.spec import Registry
from indexer.pipeline import BatchReport
from indexer.runner import run_indexers
from indexer.store import Store, open_store
from insurance.config import InsuranceConfig, SizingConfig
from insurance.executor import ChainPayoutExecutor, Operator, PaidClaim, TxOutcome
from insurance.payouts import PayoutView
from insurance.sizing import (
    SizingResult,
    TailFit,
    correlated_shocks,
    first_order_bad_debt,
    oracle_vols,
    simulate_bad_debt,
    size_capital,
    tail_count,
    tail_fit,
)
from insurance.trigger import TriggerReport, run_trigger

MARGIN_BUFFER = 1.2  # x maintenance margin, for margin accounts topped up before timing
LENDING_BUFFER = 1.1  # health factor, for lending accounts deleveraged before timing
UNDERLYINGS = ("BTC", "ETH", "SOL", "ARB")  # bench/risk_portfolio.py's 4 underlyings
ASSETS = (*UNDERLYINGS, "WSTETH", "USDC", "USDT")  # its 7 assets, in its order
ASSET_ROOT = np.array([0, 1, 2, 3, 1, 5, 6], dtype=np.intp)  # wstETH rolls up to ETH
CHAIN_IDS = (1, 10, 42161)
HISTORY_DAYS = 90
HISTORY_CORRELATION = np.array(
    [[1.0, 0.8, 0.65, 0.6], [0.8, 1.0, 0.7, 0.65], [0.65, 0.7, 1.0, 0.6], [0.6, 0.65, 0.6, 1.0]]
)
NOW_S = 1_767_225_600
DAY_S = 86_400
# (asset, move) of the successive `rtrm devnet crash` runs of (b); each finds new victims
CRASHES = (("ETH", -0.35), ("BTC", -0.4), ("ETH", -0.3), ("BTC", -0.35), ("ETH", -0.3))
WAKE_S = 1.0  # the trigger runs at least this often, besides after every indexed batch
SETTLE_TIMEOUT_S = 30.0
Floats = np.ndarray[Any, np.dtype[np.float64]]
Ints = np.ndarray[Any, np.dtype[np.intp]]
_STORES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@functools.cache
def _sibling(name: str) -> ModuleType:
    """Another script of bench/ (off sys.path, see the top of this file), loaded by path."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench/{name}.py is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def timed(fn: Any) -> tuple[float, float, Any]:
    """Wall and CPU seconds of ``fn()``, and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


# ---------------------------------------------------------------- (a) capital sizing


def healthy(x: RiskInputs) -> RiskInputs:
    """``x`` with no account liquidatable at today's prices (module docstring, (a))."""
    state = account_state(x)  # the protocol rule the cascade liquidates margin accounts by
    short_usd = np.maximum(MARGIN_BUFFER * state.mm_usd - state.equity_usd, 0.0)
    need = np.flatnonzero(short_usd > 0.0)
    usdc = ASSETS.index("USDC")
    acc = state.accounts
    top_up = CollateralPositions(
        user=acc.user[need], asset=np.full(need.size, usdc, np.intp), chain=acc.chain[need],
        protocol=acc.protocol[need], amount=short_usd[need] / x.asset_price_usd[usdc],
        haircut=np.zeros(need.size),
    )  # fmt: skip
    s, b = x.supplies, x.borrows
    lending = lending_accounts(
        (s.user, s.protocol, s.chain), (b.user, b.protocol, b.chain), x.n_protocols, x.n_chains
    )
    book = LendingBook(
        lending.user.shape[0], lending.supply_account, s.asset, s.amount,
        s.liquidation_threshold, s.ltv, s.liquidation_bonus, lending.borrow_account, b.asset,
        b.amount,
    )  # fmt: skip
    health = account_health(book, x.asset_price_usd).health_factor
    scale = np.minimum(1.0, health / LENDING_BUFFER)[lending.borrow_account]
    return replace(x.append(collateral=top_up), borrows=replace(b, amount=b.amount * scale))


def oracle_history(seed: int) -> tuple[PriceHistory, ...]:
    """Correlated GBM rounds of the 4 underlyings at common, irregular times (mean 1 h)."""
    rp = _sibling("risk_portfolio")
    rng = np.random.default_rng(seed)
    n = HISTORY_DAYS * 24
    gaps_s = np.maximum(rng.exponential(3_600.0, n), 60.0)
    times = NOW_S - np.cumsum(gaps_s[::-1])[::-1].astype(np.int64)
    dt_years = np.diff(times, prepend=times[0] - 3_600) / (365.0 * DAY_S)
    z = rng.standard_normal((n, len(UNDERLYINGS))) @ np.linalg.cholesky(HISTORY_CORRELATION).T
    vol = np.asarray(rp.VOL_BASE)
    log_moves = vol * np.sqrt(dt_years)[:, None] * z - 0.5 * vol**2 * dt_years[:, None]
    paths = np.asarray(rp.SPOT_USD) * np.exp(np.cumsum(log_moves, axis=0) - log_moves.sum(0))
    return tuple(
        PriceHistory(name, CHAIN_IDS[0], times.astype(np.int64), paths[:, j].copy())
        for j, name in enumerate(UNDERLYINGS)
    )


def synthetic_snapshot(users: int, positions: int, seed: int) -> Snapshot:
    """The sizing input: bench/risk_portfolio.py's book made healthy, with oracle history."""
    inputs = healthy(_sibling("risk_portfolio").synthetic_inputs(users, positions, seed))
    return Snapshot(
        inputs=inputs,
        watermark=dict.fromkeys(CHAIN_IDS, 0),
        block_time_s=dict.fromkeys(CHAIN_IDS, NOW_S),
        chain_ids=CHAIN_IDS,
        protocols=tuple(f"protocol{i}" for i in range(inputs.n_protocols)),
        underlyings=UNDERLYINGS,
        assets=ASSETS,
        asset_canonical=ASSET_ROOT,
        history=oracle_history(seed),
        warnings=(),
        complete=True,
    )


@dataclass(frozen=True, slots=True)
class Probe:
    """Paths of the screen check, through the full cascade."""

    name: str
    paths: Ints
    losses: Floats


@dataclass(frozen=True, slots=True)
class SizingBench:
    users: int
    generated: int  # positions of the synthetic book
    positions: int  # ... plus the margin top-ups of healthy()
    paths: int
    max_cascades: int
    build_s: float
    t0_liquidated: int  # users a zero-shock cascade liquidates (0: the book is live-like)
    t0_bad_debt_usd: float
    ours: tuple[float, float]  # wall, CPU seconds
    result: SizingResult
    sample: int
    sample_s: tuple[float, float]  # the naive sample's wall, CPU (unscaled)
    screened: Ints  # the paths the screen ran (mirrors size_capital's choice)
    old_screened: Ints  # the paths the previous, one-sided screen would have run
    probes: tuple[Probe, ...]  # the naive sample first

    @property
    def naive_s(self) -> tuple[float, float]:
        scale = self.paths / self.sample
        return self.sample_s[0] * scale, self.sample_s[1] * scale

    def caught(self, screened: Ints) -> tuple[int, int]:
        """(probe paths above the screened VaR that ``screened`` holds, probe paths above it)."""
        var = self.result.tail.var_usd
        tail = np.unique(np.concatenate([p.paths[p.losses > var] for p in self.probes]))
        return int(np.isin(tail, screened).sum()), int(tail.size)


def one_sided_order(snapshot: Snapshot, moves: Floats) -> Ints:
    """Paths in the order of the *previous* screen (before the two-sided one): the largest
    first-order loss of lending supplies and margin collateral in a fall first, so the
    largest rallies come last."""
    x, roots = snapshot.inputs, snapshot.asset_canonical
    weight = np.zeros(len(snapshot.assets))
    for book in (x.supplies, x.collateral):
        np.add.at(weight, roots[book.asset], book.amount * x.asset_price_usd[book.asset])
    shocks = np.zeros((moves.shape[0], len(snapshot.assets)))
    for j, name in enumerate(snapshot.underlyings):
        shocks[:, snapshot.assets.index(name)] = moves[:, j]
    return np.argsort(shocks @ weight, kind="stable").astype(np.intp)


def two_sided_order(snapshot: Snapshot, moves: Floats) -> Ints:
    """Paths in the order ``size_capital``'s screen takes them (largest first)."""
    return np.argsort(-first_order_bad_debt(snapshot, moves), kind="stable").astype(np.intp)


def _moves(snapshot: Snapshot, config: SizingConfig) -> Floats:
    """Exactly ``size_capital``'s paths for ``config``."""
    vols, corr = oracle_vols(snapshot)
    return correlated_shocks(
        vols, corr, paths=config.paths, horizon_days=config.horizon_days, dof=config.tail_dof,
        seed=config.seed,
    )  # fmt: skip


def _cascade(snapshot: Snapshot, moves: Floats, paths: Ints) -> Floats:
    return simulate_bad_debt(snapshot, moves[paths]).loss_usd


def measure_sizing(
    *,
    users: int,
    positions: int,
    paths: int,
    max_cascades: int,
    sample: int,
    check: int,
    seed: int,
) -> SizingBench:
    """(a): the screened sizing; the naive reference on a random sample of the same paths;
    then the probes of the screen check."""
    build_s, _, snapshot = timed(lambda: synthetic_snapshot(users, positions, seed))
    x = snapshot.inputs
    t0 = cascade(x, snapshot.asset_canonical, np.zeros(x.asset_price_usd.shape[0]))
    config = SizingConfig(paths=paths, seed=seed)
    wall, cpu, result = timed(
        lambda: size_capital(snapshot, config, decimals=6, max_cascades=max_cascades)
    )
    moves = _moves(snapshot, config)
    chosen = np.sort(np.random.default_rng(seed + 1).choice(paths, sample, replace=False))
    s_wall, s_cpu, naive = timed(lambda: _cascade(snapshot, moves, chosen))
    ours = two_sided_order(snapshot, moves)
    old = one_sided_order(snapshot, moves)
    probes = [Probe("random (naive sample)", chosen, naive)]
    for name, picked in (
        ("just below the cut", ours[max_cascades : max_cascades + check]),
        ("previous screen's first (largest falls)", old[:check]),
        ("previous screen's last (largest rallies)", old[::-1][:check]),
    ):
        probes.append(Probe(name, picked, _cascade(snapshot, moves, picked)))
    return SizingBench(
        users=x.n_users,
        generated=positions,
        positions=sum(
            int(book.user.shape[0])
            for book in (x.options, x.perps, x.collateral, x.supplies, x.borrows)
        ),
        paths=paths,
        max_cascades=max_cascades,
        build_s=build_s,
        t0_liquidated=t0.users_affected,
        t0_bad_debt_usd=float(t0.bad_debt_usd.sum()),
        ours=(wall, cpu),
        result=result,
        sample=sample,
        sample_s=(s_wall, s_cpu),
        screened=np.sort(ours[:max_cascades]),
        old_screened=np.sort(old[:max_cascades]),
        probes=tuple(probes),
    )


@dataclass(frozen=True, slots=True)
class ExactBench:
    """(a'): the screen against every path through the cascade, on a small book."""

    users: int
    paths: int
    exact_s: float
    true_var: float
    true_es: float  # empirical, the k worst paths
    k: int
    rows: tuple[tuple[str, int, float, float], ...]  # (screen, max_cascades, ES, catch rate)
    gpd: tuple[float, float, float]  # GPD ES: exact (tail_quantile), exact and screened at
    # the screened run's threshold
    means: tuple[float, float, float, float, float, float]  # true, estimate, SE (mean, P)


def measure_exact(users: int, paths: int, cascades: tuple[int, ...], seed: int) -> ExactBench:
    """(a'): every path of a small book through the cascade, then each screen's answer."""
    snapshot = synthetic_snapshot(users, 10 * users, seed)
    config = SizingConfig(paths=paths, seed=seed)
    moves = _moves(snapshot, config)
    exact_s, _, losses = timed(lambda: simulate_bad_debt(snapshot, moves).loss_usd)
    k = tail_count(paths, config.confidence)
    worst = np.argsort(-losses, kind="stable")[:k]

    def fit(values: Floats, screened: int | None = None) -> TailFit:
        q, u = config.confidence, config.tail_quantile
        return tail_fit(values, confidence=q, tail_quantile=u, screened=screened)

    rows = []
    for name, order in (
        ("two-sided", two_sided_order(snapshot, moves)),
        ("previous, one-sided", one_sided_order(snapshot, moves)),
    ):
        for m in cascades:
            kept = np.where(np.isin(np.arange(paths), order[:m]), losses, np.nan)
            es = fit(kept, m).es_empirical_usd
            rows.append((name, m, es, float(np.isin(worst, order[:m]).mean())))
    m = max(cascades)
    screened = size_capital(snapshot, config, decimals=6, max_cascades=m)
    at_cut, full = fit(losses, m), fit(losses)
    r = screened
    return ExactBench(
        users=users,
        paths=paths,
        exact_s=exact_s,
        true_var=full.var_usd,
        true_es=full.es_empirical_usd,
        k=k,
        rows=tuple(rows),
        gpd=(full.es_usd, at_cut.es_usd, r.tail.es_usd),
        means=(float(losses.mean()), r.mean_bad_debt_usd, r.mean_bad_debt_se_usd,
               float((losses > 0).mean()), r.loss_probability, r.loss_probability_se),
    )  # fmt: skip


# ---------------------------------------------------------------- (b) detection to payout


class TimedExecutor(ChainPayoutExecutor):
    """The chain executor, noting when each payout's tx hash is committed as ``sent``:
    :func:`insurance.executor.execute_payouts` records ``sent`` right after the send and
    before its next call on the executor (the next claim's check, or a wait), which is
    when the stamp is taken (an upper bound, by one call's overhead)."""

    def __init__(self, registry: Registry, operator: Operator) -> None:
        super().__init__(registry, operator)
        self.sent_at: dict[str, float] = {}
        self._unstamped: list[str] = []

    def _stamp(self) -> None:
        """The executor's first call after a send: its ``sent`` record is committed by now."""
        now = time.perf_counter()
        for tx_hash in self._unstamped:
            self.sent_at.setdefault(tx_hash, now)
        self._unstamped.clear()

    def fund_balance(self, chain_id: int, fund: str) -> int:
        self._stamp()
        return super().fund_balance(chain_id, fund)

    def claim_paid(self, chain_id: int, fund: str, claim_id: str) -> PaidClaim | None:
        self._stamp()
        return super().claim_paid(chain_id, fund, claim_id)

    def send_claim(self, payout: PayoutView) -> str:
        self._stamp()
        tx_hash = super().send_claim(payout)
        self._unstamped.append(tx_hash)
        return tx_hash

    def wait(self, chain_id: int, tx_hash: str, timeout_s: float) -> TxOutcome:
        self._stamp()
        return super().wait(chain_id, tx_hash, timeout_s)


class Follower:
    """``run_indexers`` following the head in a thread; notes when each batch committed."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store, self.registry = store, registry
        self.batches: list[tuple[int, float]] = []  # (last block, commit time)
        self.wake = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="indexer", daemon=True)

    def _on_batch(self, report: BatchReport) -> None:
        self.batches.append((report.last, time.perf_counter()))
        self.wake.set()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await run_indexers(
            self.store, self.registry.chains, stop=self._stop, on_batch=self._on_batch
        )

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    @property
    def indexed(self) -> int:
        return max((last for last, _ in self.batches), default=-1)

    def indexed_at(self, block: int) -> float | None:
        """When the first batch reaching ``block`` committed."""
        return next((t for last, t in self.batches if last >= block), None)


class TriggerLoop:
    """``run_trigger`` in a thread: after every indexed batch, and at least every second."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        config: InsuranceConfig,
        executor: TimedExecutor,
        wake: threading.Event,
    ) -> None:
        self.args = (store, registry, config, executor)
        self.wake = wake
        self.runs: list[tuple[float, float, TriggerReport]] = []  # (start, end, report)
        self.error: BaseException | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trigger", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                self.wake.wait(WAKE_S)
                self.wake.clear()
                started = time.perf_counter()
                report = run_trigger(*self.args)
                self.runs.append((started, time.perf_counter(), report))
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self.wake.set()
        self._thread.join(timeout=60)

    def completed_since(self, moment: float) -> bool:
        """Whether a whole trigger run started at or after ``moment``."""
        return any(start >= moment for start, _, _ in self.runs)


@dataclass(slots=True)
class PayoutBench:
    users: int
    crashes: int
    latencies_s: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    payouts: int = 0
    unpaid: int = 0  # deficits without a sent payout at the end (reported, never hidden)
    trigger_runs_s: list[float] = field(default_factory=list)
    largest_epoch: tuple[int, float] = (0, 0.0)  # (payouts, seconds) of the busiest run
    store: str = "SQLite"


def _operator(url: str, fund: str) -> Operator:
    """A fresh operator key, made an operator of ``fund`` by its owner (the deployer)."""
    account = Account.from_key(keccak(b"rtrm.bench.insurance.operator"))
    with RpcClient(url) as client:
        client.call("anvil_setBalance", [account.address, to_hex(10**20)])
        data = encode_call("setOperator(address,bool)", account.address, True)
        tx = {"from": DEPLOYER, "to": fund, "data": data, "gas": to_hex(100_000)}
        tx_hash = client.call("eth_sendTransaction", [tx])
        for _ in range(200):
            receipt = client.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                break
            time.sleep(0.01)
        if receipt is None or receipt["status"] != "0x1":
            raise SystemExit(f"setOperator on the fund {fund} failed: {receipt}")
    return Operator(str(account.address), bytes(account.key))


def _crash(home: Path, asset: str, move: float) -> None:
    """``rtrm devnet crash`` in a child process: the outside world, not the backstop."""
    done = subprocess.run(
        [sys.executable, "-m", "rtrm", "devnet", "--home", str(home), "crash",
         "--asset", asset, "--move", str(move), "--blocks", "2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"rtrm devnet crash failed:\n{done.stderr[-3000:]}")


def _wait_until(condition: Any, timeout_s: float, what: str, *threads: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for thread in threads:
            if thread.error is not None:
                raise SystemExit(f"{what}: {type(thread).__name__} failed: {thread.error!r}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done after {timeout_s:.0f} s")
        time.sleep(0.02)


def measure_payouts(users: int, crashes: int, seed: int, database_url: str | None) -> PayoutBench:
    """(b): crash, index, trigger, pay -- ``crashes`` times on one devnet."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "devnet"
        state, nodes = up(
            DevnetOptions(chains=1, users=users, seed=seed, block_time_s=0, state_dir=home)
        )
        try:
            node = state.nodes[0]
            url = database_url or f"sqlite:///{Path(tmp) / 'rtrm.db'}"
            registry = replace(load_registry(Path(state.config_path)), database_url=url)
            operator = _operator(
                node.rpc_url, state.contracts[str(node.chain_id)]["insurance_fund"]
            )
            store = open_store(url)
            asyncio.run(run_indexers(store, registry.chains, once=True))  # backfill, untimed
            config = InsuranceConfig(pay_after_finality=False, confirm_timeout_s=10.0)
            executor = TimedExecutor(registry, operator)
            follower = Follower(store, registry)
            trigger = TriggerLoop(store, registry, config, executor, follower.wake)
            follower.start()
            trigger.start()
            dialect = store.engine.dialect.name
            bench = PayoutBench(users, crashes, store=_STORES.get(dialect, dialect))
            try:
                for asset, move in (CRASHES * math.ceil(crashes / len(CRASHES)))[:crashes]:
                    _crash(home, asset, move)
                    with RpcClient(node.rpc_url) as client:
                        head = hex_to_int(client.call("eth_blockNumber"))
                    _wait_until(
                        lambda head=head: follower.indexed >= head,
                        SETTLE_TIMEOUT_S, "indexing", follower, trigger,
                    )  # fmt: skip
                    caught_up = time.perf_counter()
                    _wait_until(
                        lambda at=caught_up: trigger.completed_since(at),
                        SETTLE_TIMEOUT_S, "trigger", follower, trigger,
                    )  # fmt: skip
            finally:
                trigger.stop()
                follower.stop()
                executor.close()
            _collect(bench, store, follower, executor, trigger)
            store.dispose()
        finally:
            for n in nodes:
                n.stop()
    return bench


def _collect(
    bench: PayoutBench,
    store: Store,
    follower: Follower,
    executor: TimedExecutor,
    trigger: TriggerLoop,
) -> None:
    """Latency per deficit: its block indexed -> its last payout recorded ``sent``."""
    with store.engine.connect() as conn:
        deficits = conn.execute(
            text("SELECT deficit_id, block_number, protocol_kind FROM deficit ORDER BY 2")
        ).all()
        payouts = conn.execute(text("SELECT deficit_id, tx_hash FROM payout")).all()
    sent: dict[str, list[float | None]] = {}
    for deficit, tx_hash in payouts:
        sent.setdefault(str(deficit), []).append(executor.sent_at.get(str(tx_hash)))
    bench.payouts = len(payouts)
    for deficit, block, kind in deficits:
        indexed, times = follower.indexed_at(int(block)), sent.get(str(deficit), [None])
        if indexed is None or any(t is None for t in times):
            bench.unpaid += 1
            continue
        bench.latencies_s.append(max(t for t in times if t is not None) - indexed)
        bench.kinds.append(str(kind))
    bench.trigger_runs_s = [end - start for start, end, _ in trigger.runs]
    bench.largest_epoch = max(
        ((len(report.payouts), end - start) for start, end, report in trigger.runs),
        default=(0, 0.0),
    )


# ---------------------------------------------------------------- report


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usd(v: float) -> str:
    return f"{v / 1e6:,.2f}M" if abs(v) >= 1e6 else f"{v:,.0f}"


def _print_sizing_notes(a: SizingBench) -> None:
    r, t = a.result, a.result.tail
    gpd = f"GPD xi {t.gpd_shape:.2f}" if t.gpd_shape is not None else "empirical tail"
    print(
        f"\n(a) Book: {a.generated:,} generated positions + {a.positions - a.generated:,} "
        f"USDC margin rows that fund under-margined accounts; built in {a.build_s:.1f} s; a "
        f"zero-shock cascade liquidates {a.t0_liquidated} users. Screened run: requirement "
        f"{_usd(r.raw_required_usd)} USD (binding: {r.binding}; exposure / gearing "
        f"{_usd(r.gearing_usd)}), ES 99.5% {_usd(t.es_usd)} USD ({gpd} over "
        f"{t.exceedances} exceedances above {_usd(t.threshold_usd)}; empirical "
        f"{_usd(t.es_empirical_usd)}), VaR {_usd(t.var_usd)}; {r.cascades_run} cascades. "
        f"Over all paths (stratified estimates): P(bad debt > 0) {r.loss_probability:.1%} "
        f"+- {r.loss_probability_se:.1%}, mean bad debt {_usd(r.mean_bad_debt_usd)} +- "
        f"{_usd(r.mean_bad_debt_se_usd)} USD."
    )
    lines = []
    for probe in a.probes:
        inside = np.isin(probe.paths, a.screened)
        lines.append(
            f"{probe.name}: {probe.paths.size} paths, {int(inside.sum())} screened in, "
            f"max {_usd(probe.losses.max(initial=0.0))} USD, "
            f"{int((probe.losses > t.var_usd).sum())} above the VaR, largest outside the "
            f"screen {_usd(probe.losses[~inside].max(initial=0.0))}"
        )
    got, of = a.caught(a.screened)
    old, _ = a.caught(a.old_screened)
    print(
        "\nScreen check (probes through the full cascade): " + "; ".join(lines) + ". "
        f"Catch rate: {got} of the {of} probe paths above the screened VaR were screened "
        f"in (the previous one-sided screen would have run {old} of them)."
    )


def _print_exact_notes(e: ExactBench) -> None:
    rows = ", ".join(
        f"{name} {m}: {_usd(es)} (caught {catch:.0%})" for name, m, es, catch in e.rows
    )
    full, at_cut, screened = e.gpd
    tm, em, sm, tp, ep, sp = e.means
    print(
        f"\n(a') Small book, every one of {e.paths:,} paths through the cascade in "
        f"{e.exact_s:.1f} s: true VaR {_usd(e.true_var)}, true ES {_usd(e.true_es)} USD (the "
        f"{e.k} worst paths). Screened ES (caught: share of those {e.k} paths the screen "
        f"ran): {rows}. GPD ES: {_usd(full)} at the configured threshold (every path), "
        f"{_usd(at_cut)} at the screened run's higher threshold computed from every path, "
        f"{_usd(screened)} screened (same threshold; the GPD is sensitive to it when xi is "
        f"high). Means: bad debt true {_usd(tm)}, estimated {_usd(em)} +- {_usd(sm)}; "
        f"P(bad debt > 0) true {tp:.1%}, estimated {ep:.1%} +- {sp:.1%}."
    )


def print_table(
    a: SizingBench | None,
    e: ExactBench | None,
    b: PayoutBench | None,
    load: tuple[float, float],
) -> None:
    print("\n### Insurance backstop\n")
    print("| measurement | setting | ours | reference (same run) | target | met |")
    print("|---|---|---:|---:|---:|---|")
    if a is not None:
        r, (wall, cpu), (n_wall, n_cpu) = a.result, a.ours, a.naive_s
        print(
            f"| (a) capital sizing, {a.paths:,} paths, {a.users:,} users / "
            f"{a.positions:,} positions, 3 chains, 3 protocols | `max_cascades={a.max_cascades}` "
            f"({r.cascades_run} cascades) | {wall:.1f} s (CPU {cpu:.1f} s) | naive, every "
            f"path through the cascade: {n_wall:,.0f} s (CPU {n_cpu:,.0f} s; {a.sample} "
            f"paths x {a.paths / a.sample:.0f}); {n_wall / wall:.0f}x | <= 60 s "
            f"| {_met(wall <= 60)} |"
        )
        got, of = a.caught(a.screened)
        old, _ = a.caught(a.old_screened)
        probes = sum(p.paths.size for p in a.probes)
        print(
            f"| (a) screen check: probe paths above the screened VaR "
            f"({_usd(r.tail.var_usd)} USD) that the screen ran | {probes} probes through the "
            f"full cascade | {got} / {of} | previous one-sided screen: {old} / {of} | all "
            f"| {_met(got == of)} |"
        )
    if e is not None:
        ours = [row for row in e.rows if row[0] == "two-sided"]
        prev = [row for row in e.rows if row[0] != "two-sided"]
        worst = min(ours, key=lambda row: row[2])
        print(
            f"| (a') screened ES 99.5% vs every path, {e.users:,} users, {e.paths:,} paths "
            f"| `max_cascades` {'/'.join(str(m) for _, m, _, _ in ours)} | "
            f"{' / '.join(_usd(es) for _, _, es, _ in ours)} USD (caught "
            f"{' / '.join(f'{c:.0%}' for _, _, _, c in ours)}) | exact {_usd(e.true_es)} USD "
            f"({e.exact_s:.0f} s); previous screen {' / '.join(_usd(es) for _, _, es, _ in prev)}"
            f" | within 1% | {_met(abs(worst[2] - e.true_es) <= 0.01 * e.true_es)} |"
        )
    if b is not None and b.latencies_s:
        lat = b.latencies_s
        print(
            f"| (b) detection-to-payout-sent (block indexed -> `payClaim` recorded `sent`), "
            f"anvil, {b.store} | {len(lat)} deficits over {b.crashes} crashes, "
            f"`pay_after_finality = false` | p50 {statistics.median(lat):.3f} s, max "
            f"{max(lat):.3f} s | - | <= 2 s | {_met(max(lat) <= 2.0)} |"
        )
    if a is not None:
        _print_sizing_notes(a)
    if e is not None:
        _print_exact_notes(e)
    if b is not None:
        runs = b.trigger_runs_s
        kinds = ", ".join(f"{k} {b.kinds.count(k)}" for k in sorted(set(b.kinds)))
        print(
            f"\n(b) devnet: 1 chain, {b.users} users, a block per transaction; {b.payouts} "
            f"payouts for {len(b.latencies_s) + b.unpaid} deficits ({kinds}); "
            f"{b.unpaid} without a sent payout; trigger runs: {len(runs)}, p50 "
            f"{statistics.median(runs) if runs else float('nan'):.3f} s, max "
            f"{max(runs, default=float('nan')):.3f} s; the busiest paid {b.largest_epoch[0]} "
            f"claims in {b.largest_epoch[1]:.3f} s (all sent back to back, each recorded "
            "`sent` before the next, then the receipts awaited together). The indexer polls "
            "the head every 50 ms (a quarter of the block time, at least 50 ms)."
        )
    print(
        f"\nMachine: {_cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}; load average "
        f"{load[0]:.1f} before / {load[1]:.1f} after."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="(a) users")
    parser.add_argument("--positions", type=int, default=1_000_000, help="(a) positions")
    parser.add_argument("--paths", type=int, default=10_000, help="(a) Monte Carlo paths")
    parser.add_argument(
        "--max-cascades", type=int, default=200, help="(a) paths screened into the cascade"
    )
    parser.add_argument("--sample", type=int, default=40, help="(a) paths of the naive run")
    parser.add_argument(
        "--check", type=int, default=20, help="(a) paths per probe set of the screen check"
    )
    parser.add_argument("--exact-users", type=int, default=5_000, help="(a') small book")
    parser.add_argument("--exact-paths", type=int, default=2_000, help="(a') paths")
    parser.add_argument(
        "--exact-cascades", type=int, nargs="+", default=[50, 100, 200],
        help="(a') max_cascades to compare",
    )  # fmt: skip
    parser.add_argument("--devnet-users", type=int, default=200, help="(b) users seeded")
    parser.add_argument("--crashes", type=int, default=5, help="(b) crashes in a row")
    parser.add_argument(
        "--database-url", default=None, help="(b) store (default: a fresh SQLite file)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--skip", choices=("a", "a'", "b"), nargs="*", default=[], help="leave parts out"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    a = e = b = None
    if "a" not in args.skip:
        a = measure_sizing(
            users=args.users, positions=args.positions, paths=args.paths,
            max_cascades=args.max_cascades, sample=args.sample, check=args.check,
            seed=args.seed,
        )  # fmt: skip
    if "a'" not in args.skip:
        e = measure_exact(args.exact_users, args.exact_paths, tuple(args.exact_cascades), args.seed)
    if "b" not in args.skip:
        b = measure_payouts(args.devnet_users, args.crashes, 5, args.database_url)
    print_table(a, e, b, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
