"""The running service (``rtrm serve``): indexers, snapshot refresh, jobs and the API.

Composition root: :class:`Service` builds the :class:`~api.context.ApiContext`, starts
the HTTP API on loopback, runs the live indexers for every configured chain on the same
event loop (:func:`indexer.runner.run_indexers`), and schedules the periodic jobs with
APScheduler. Everything stops when ``stop`` is set (SIGTERM / SIGINT in ``rtrm serve``):
the indexers finish the range in flight (nothing half-written: data, ledger and cursor
commit together), the scheduler lets a running job end, the API answers the requests in
flight, and only then does :meth:`Service.run` return.

Freshness: each written range (``on_batch``) kicks the snapshot cache, which loads the
accounts that range touched in a worker thread; full loads (market data moved, the
overlay grew old, this job) run beside it in the background and never hold a block back
(see :mod:`api.snapshots`). Jobs (intervals in :class:`ServiceOptions`):

- ``full-recompute``: reload the whole snapshot in the background and wait for it (it
  replaces the incremental overlay, brings option decay up to the latest block time,
  refreshes exposure, stress and contagion);
- ``capital-sizing``: Monte Carlo capital requirement at the cached snapshot, published
  to the store (``rtrm insurance size``);
- ``insurance-trigger`` (only with an operator configured: ``[insurance] operator`` or
  ``RTRM_INSURANCE_OPERATOR_KEY``): detect deficits, allocate an epoch, publish its
  attestation root and pay its claims (``rtrm insurance trigger``);
- ``stale-check``: warn about chains that are paused or whose indexed block has not
  moved for ``stale_after_s`` while their head has.

A job that fails is logged and tried again at its next interval; it never stops the
service.

Threads: the snapshot cache's full loads, the fast lane's per-user loads and the
indexers' commits are threads of this one process, sharing the GIL. A thread that does
many short queries (a per-user load) must win the GIL back after each one, and by default
waits up to 5 ms for a CPU-bound thread (a full load) to let go: measured, 300 queries
took 40 ms alone and 980 ms beside a full-load-like thread. While it serves, the switch
interval is 0.5 ms (125 ms in that test), restored when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from api.app import create_app, start_site
from api.context import ApiContext, ApiSettings
from chains.spec import ChainSpec, Registry
from indexer.metrics import IndexerMetrics
from indexer.pipeline import BatchReport, IndexerOptions
from indexer.runner import ChainOutcome, run_indexers
from indexer.status import chain_status
from indexer.store import Store
from insurance.config import InsuranceConfig
from insurance.executor import ChainPayoutExecutor, operator_from
from insurance.planning import fund_decimals
from insurance.sizing import default_max_cascades, publish_requirement, size_capital
from insurance.trigger import run_trigger

__all__ = ["Service", "ServiceOptions"]

log = logging.getLogger(__name__)

_SWITCH_INTERVAL_S = 0.0005  # the GIL hand-over while serving (module docstring)


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """What ``rtrm serve`` runs, and how often (seconds; ``None`` turns a job off)."""

    index: bool = True  # run the live indexers in this process
    chains: tuple[ChainSpec, ...] | None = None  # default: every configured chain
    indexer: IndexerOptions = field(default_factory=IndexerOptions)
    full_recompute_s: float | None = 30.0
    sizing_s: float | None = 300.0
    trigger_s: float | None = 60.0  # only when an insurance operator is configured
    stale_check_s: float | None = 15.0
    stale_after_s: float = 60.0


class Service:
    """One process: indexers, snapshot cache, jobs and the API (module docstring)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        settings: ApiSettings,
        insurance: InsuranceConfig,
        options: ServiceOptions | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.options = options or ServiceOptions()
        self.metrics = IndexerMetrics()
        self.context = ApiContext.build(
            store,
            registry,
            insurance=insurance,
            settings=settings,
            indexer_metrics=self.metrics,
            live=self.options.index,
        )
        self.port: int | None = None
        self._progress: dict[int, tuple[int, float]] = {}  # chain -> (indexed, since)

    @property
    def url(self) -> str:
        host = self.context.settings.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    async def run(
        self, stop: asyncio.Event, *, ready: Callable[[Service], None] | None = None
    ) -> list[ChainOutcome]:
        """Serve until ``stop`` is set; returns how each chain's indexer ended."""
        settings = self.context.settings
        app = create_app(self.context)
        runner, self.port = await start_site(app, settings.host, settings.port)
        scheduler = self._scheduler()
        switch_s = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_s, _SWITCH_INTERVAL_S))
        try:
            scheduler.start()
            if ready is not None:
                ready(self)
            if not self.options.index:
                await stop.wait()
                return []
            chains = self.options.chains or self.registry.chains
            return await run_indexers(
                self.store,
                chains,
                stop=stop,
                metrics=self.metrics,
                on_batch=self._on_batch,
                options=self.options.indexer,
            )
        finally:
            scheduler.shutdown(wait=False)
            await runner.cleanup()
            sys.setswitchinterval(switch_s)
            log.info("service stopped")

    def _on_batch(self, report: BatchReport) -> None:
        self._progress[report.chain_id] = (report.last, time.monotonic())
        self.context.snapshots.kick()

    # ------------------------------------------------------------------ jobs
    def _scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        o = self.options
        jobs: list[tuple[str, float | None, Callable[[], Any]]] = [
            ("full-recompute", o.full_recompute_s, self.full_recompute),
            ("capital-sizing", o.sizing_s, self.capital_sizing),
            ("stale-check", o.stale_check_s, self.stale_check),
        ]
        if self._operator_configured():
            jobs.append(("insurance-trigger", o.trigger_s, self.insurance_trigger))
        for name, every_s, job in jobs:
            if every_s is None:
                continue
            scheduler.add_job(
                self._guarded(name, job),
                "interval",
                seconds=every_s,
                id=name,
                name=name,
                max_instances=1,
                coalesce=True,
            )
        return scheduler

    def _operator_configured(self) -> bool:
        try:
            return operator_from(self.context.insurance) is not None
        except Exception as exc:
            log.warning("insurance trigger disabled: %s", exc)
            return False

    @staticmethod
    def _guarded(name: str, job: Callable[[], Any]) -> Callable[[], Any]:
        async def run() -> None:
            started = time.perf_counter()
            try:
                await job()
            except Exception as exc:  # a job never stops the service
                log.warning("job %s failed: %s: %s", name, type(exc).__name__, exc)
            else:
                log.debug("job %s done in %.2f s", name, time.perf_counter() - started)

        return run

    async def full_recompute(self) -> None:
        """Reload the whole snapshot in the background (the fast lane keeps going)."""
        await self.context.snapshots.refresh(full=True)

    async def capital_sizing(self) -> None:
        """Size the capital requirement on the cached snapshot and publish it."""
        entry = await self.context.snapshots.entry()
        config = self.context.insurance

        def size() -> int:
            decimals = fund_decimals(self.registry)
            sizing = config.sizing  # screened: only the worst paths go through the cascade
            cascades = default_max_cascades(sizing.paths, sizing.confidence)
            result = size_capital(entry.snapshot, sizing, decimals=decimals, max_cascades=cascades)
            with self.store.transaction() as conn:
                return publish_requirement(conn, result, config.sizing.max_step_bps)

        required = await asyncio.get_running_loop().run_in_executor(None, size)
        log.info("capital requirement published: %s (fund units)", required)

    async def insurance_trigger(self) -> None:
        """Detect deficits, allocate an epoch (with its attestation) and pay its claims."""
        config = self.context.insurance

        def trigger() -> Any:
            executor = ChainPayoutExecutor(self.registry, operator_from(config))
            try:
                return run_trigger(self.store, self.registry, config, executor)
            finally:
                executor.close()

        report = await asyncio.get_running_loop().run_in_executor(None, trigger)
        if report.payouts:
            log.info(
                "insurance epoch %s: %s payouts, %s paid",
                report.epoch,
                len(report.payouts),
                report.paid_amount,
            )

    async def stale_check(self) -> None:
        """Warn about paused chains and chains whose indexing stopped moving."""

        def read() -> list[Any]:
            with self.store.engine.connect() as conn:
                return chain_status(conn)

        rows = await asyncio.get_running_loop().run_in_executor(None, read)
        now = time.monotonic()
        for row in rows:
            if row.paused_reason:
                log.warning("chain %s is paused: %s", row.chain_id, row.paused_reason)
                continue
            indexed, since = self._progress.setdefault(row.chain_id, (row.indexed_block, now))
            if indexed != row.indexed_block:
                self._progress[row.chain_id] = (row.indexed_block, now)
            elif row.lag_blocks > 0 and now - since > self.options.stale_after_s:
                log.warning(
                    "chain %s: indexed block %s has not moved for %.0f s (head %s); "
                    "check its RPC endpoints (`rtrm status`)",
                    row.chain_id,
                    row.indexed_block,
                    now - since,
                    row.head,
                )
        self.context.snapshots.kick()
