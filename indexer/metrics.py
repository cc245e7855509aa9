"""Prometheus metrics of the indexers (one registry per process, names ``rtrm_indexer_*``).

Labels are the chain id (and the error kind); the HTTP exporter is started by ``rtrm``
(``rtrm index --metrics-port``, ``rtrm serve``), never here.

Invariants: ``head_block``, ``indexed_block`` and ``lag_blocks`` move on every head poll,
not only when a range is written, so a chain that stalls shows its lag growing; when no
node answers, the head is unknown and keeps its last value, while
``head_age_seconds`` (seconds since the last head poll that answered) keeps growing:
alert on it. ``paused`` is 1 during any pause (syncing node, head gone back, reorg below
finality) and 0 once the chain resumes.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IndexerMetrics"]


class IndexerMetrics:
    """The indexer's counters and gauges, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        chain = ["chain_id"]
        self.events = Counter(
            "rtrm_indexer_events", "Events indexed", chain, registry=self.registry
        )
        self.blocks = Counter(
            "rtrm_indexer_blocks", "Blocks indexed", chain, registry=self.registry
        )
        self.head = Gauge("rtrm_indexer_head_block", "Chain head", chain, registry=self.registry)
        self.indexed = Gauge(
            "rtrm_indexer_indexed_block", "Last indexed block", chain, registry=self.registry
        )
        self.lag = Gauge(
            "rtrm_indexer_lag_blocks", "Head minus indexed block", chain, registry=self.registry
        )
        self.reorgs = Counter("rtrm_indexer_reorgs", "Reorgs", chain, registry=self.registry)
        self.reorg_depth = Histogram(
            "rtrm_indexer_reorg_depth_blocks",
            "Depth of each reorg",
            chain,
            buckets=(1, 2, 3, 5, 10, 20, 50, 100, 200),
            registry=self.registry,
        )
        self.rpc_errors = Counter(
            "rtrm_indexer_rpc_errors",
            "RPC errors seen by the indexer, by kind",
            ["chain_id", "kind"],
            registry=self.registry,
        )
        self.receipt_blocks = Counter(
            "rtrm_indexer_receipt_blocks",
            "Blocks eth_getLogs could not answer, read from their receipts instead",
            chain,
            registry=self.registry,
        )
        self.range_span = Gauge(
            "rtrm_indexer_getlogs_span_blocks",
            "Current eth_getLogs block range",
            chain,
            registry=self.registry,
        )
        self.paused = Gauge(
            "rtrm_indexer_paused",
            "1 while the chain is paused (the reason is in `rtrm status`)",
            chain,
            registry=self.registry,
        )
        self.head_age = Gauge(
            "rtrm_indexer_head_age_seconds",
            "Seconds since the chain's nodes last answered a head poll",
            chain,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "rtrm_indexer_write_seconds",
            "Time to write one range",
            chain,
            registry=self.registry,
        )
        self._head_polled: dict[int, float] = {}  # chain id -> monotonic time of the last poll

    def polling(self, chain_id: int) -> None:
        """The chain's indexer polls its head: ``head_age_seconds`` counts from now until
        a poll answers (a chain whose nodes never answered shows its age since start)."""
        if chain_id not in self._head_polled:
            self._head_polled[chain_id] = time.monotonic()
            self.head_age.labels(chain_id).set_function(lambda: self._head_age_s(chain_id))

    def observe_head(self, chain_id: int, head: int, indexed: int) -> None:
        """A head poll answered: the head, the indexed block and the lag between them."""
        self.polling(chain_id)
        self._head_polled[chain_id] = time.monotonic()
        self.head.labels(chain_id).set(head)
        self.indexed.labels(chain_id).set(indexed)
        self.lag.labels(chain_id).set(max(0, head - indexed))

    def _head_age_s(self, chain_id: int) -> float:
        return time.monotonic() - self._head_polled[chain_id]

    def set_paused(self, chain_id: int, *, paused: bool) -> None:
        self.paused.labels(chain_id).set(1 if paused else 0)
