"""Prometheus metrics of the indexers (one registry per process, names ``rtrm_indexer_*``).

Labels are the chain id (and the error kind); the HTTP exporter is started by ``rtrm``
(``rtrm index --metrics-port``, ``rtrm serve``), never here.
"""

from __future__ import annotations

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
            "rtrm_indexer_paused", "1 while the chain is paused", chain, registry=self.registry
        )
        self.batch_seconds = Histogram(
            "rtrm_indexer_write_seconds",
            "Time to write one range",
            chain,
            registry=self.registry,
        )
