"""Prometheus metrics of the API, registered next to the indexers' (``rtrm_api_*``).

``/metrics`` exports one registry: the indexers' (``rtrm_indexer_*``) when they run in the
same process, plus these. Labels are the route's template (``/v1/users/{address}/risk``,
never the concrete path, so cardinality stays bounded), the method and the status code.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ApiMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ApiMetrics:
    """Request counts and latencies, rate-limit refusals and snapshot reloads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "rtrm_api_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "rtrm_api_request_seconds",
            "Time to answer a request, by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.rate_limited = Counter(
            "rtrm_api_rate_limited", "Requests refused with 429", registry=registry
        )
        self.reloads = Counter(
            "rtrm_api_snapshot_reloads",
            "Snapshot loads, by kind (full, users)",
            ["kind"],
            registry=registry,
        )
        self.reload_seconds = Histogram(
            "rtrm_api_snapshot_reload_seconds",
            "Time to load a snapshot",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.snapshot_users = Gauge(
            "rtrm_api_snapshot_users", "Users in the cached snapshot", registry=registry
        )
        self.snapshot_block = Gauge(
            "rtrm_api_snapshot_block",
            "Watermark block of the cached snapshot, per chain",
            ["chain_id"],
            registry=registry,
        )
