"""Health, rate limiting and counters of the JSON-RPC endpoints of one chain.

The async client (:mod:`chains.aiorpc`) keeps one :class:`Endpoint` per configured URL and
asks each for its :meth:`Endpoint.rank_key` to decide where the next request goes. This
module holds that bookkeeping and no I/O, so it is tested without a network.

Concepts and invariants:

- **Score** (seconds, lower is better) = EWMA of successful request latency + a penalty
  per recent transient failure (``error_penalty_s``); the failure count decays with a
  half-life of ``error_halflife_s``, so a recovered endpoint earns its rank back. Endpoints
  never measured score 0 and keep the configured order between them. Errors that are the
  caller's (a revert, invalid params) are counted but do not lower the rank.
- **Bench**: ``bench_after_failures`` consecutive transient failures bench an endpoint for
  ``bench_base_s · 2^(n-1)`` (capped at ``bench_max_s``), n counting benches since its
  last success; when the cool-down is over the client re-probes it (chain id + genesis),
  and one more failure before a success benches it again for twice as long (an endpoint
  that serves another chain is benched at its first such answer: ``bench_now``). A benched
  endpoint is ranked after every unbenched one but is never excluded: with all endpoints
  benched the best of them is still tried. A client's only endpoint is never benched.
- **Retry-After**: a 429 with ``Retry-After`` makes an endpoint *not ready* until then;
  the client prefers ready endpoints and waits for one only when none is left.
- **Rate limit**: a token bucket per endpoint (``rate_limit_per_s`` tokens per second,
  ``rate_limit_burst`` at most; 0 = unlimited). One JSON-RPC call costs one token, so a
  batch of n calls costs n, as providers count them. Callers may run into debt: each
  reservation returns how long to wait, which keeps concurrent callers in FIFO order.
- Times are ``time.monotonic()`` seconds, passed in; nothing here reads a clock.
- Everything is mutated from one event loop thread only; snapshots are frozen dataclasses.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from chains.urls import hide_credentials

__all__ = [
    "ClientStats",
    "Endpoint",
    "EndpointStats",
    "RpcPolicy",
    "TokenBucket",
    "full_jitter_s",
]


@dataclass(frozen=True, slots=True)
class RpcPolicy:
    """Timeouts, retries, health ranking and rate limit of an :class:`AsyncRpcClient`."""

    request_timeout_s: float = 10.0  # one HTTP attempt
    call_timeout_s: float = 30.0  # one call, all attempts and waits included
    max_attempts: int = 5  # HTTP attempts per call, across endpoints
    backoff_base_s: float = 0.05  # first back-off cap; doubles per round over all endpoints
    backoff_max_s: float = 2.0
    rate_limit_per_s: float = 0.0  # per endpoint; 0 = unlimited
    rate_limit_burst: float = 0.0  # bucket size; 0 = max(1, rate_limit_per_s)
    ewma_alpha: float = 0.2  # weight of the newest latency sample
    error_penalty_s: float = 1.0  # score added per recent transient failure
    error_halflife_s: float = 30.0
    bench_after_failures: int = 2
    bench_base_s: float = 1.0
    bench_max_s: float = 60.0
    reverify_interval_s: float | None = 60.0  # re-check chain id + genesis this often
    # Re-check before using an answer that came over a newly opened connection (a restarted
    # node drops its connections). Costs one small batch per new connection: turn it off for
    # servers that close the connection after every response.
    check_new_connections: bool = True
    max_connections_per_endpoint: int = 16

    def __post_init__(self) -> None:
        positive = {
            "request_timeout_s": self.request_timeout_s,
            "call_timeout_s": self.call_timeout_s,
            "bench_base_s": self.bench_base_s,
            "bench_max_s": self.bench_max_s,
            "error_halflife_s": self.error_halflife_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"RpcPolicy.{name} must be > 0, got {value}")
        non_negative = {
            "backoff_base_s": self.backoff_base_s,
            "backoff_max_s": self.backoff_max_s,
            "rate_limit_per_s": self.rate_limit_per_s,
            "rate_limit_burst": self.rate_limit_burst,
            "error_penalty_s": self.error_penalty_s,
        }
        for name, value in non_negative.items():
            if not value >= 0:
                raise ValueError(f"RpcPolicy.{name} must be >= 0, got {value}")
        if self.max_attempts < 1 or self.bench_after_failures < 1:
            raise ValueError("RpcPolicy.max_attempts and bench_after_failures must be >= 1")
        if self.max_connections_per_endpoint < 1:
            raise ValueError("RpcPolicy.max_connections_per_endpoint must be >= 1")
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError(f"RpcPolicy.ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        if self.reverify_interval_s is not None and self.reverify_interval_s < 0:
            raise ValueError("RpcPolicy.reverify_interval_s must be >= 0 or None")


def full_jitter_s(round_no: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base · 2^(round-1))]."""
    ceiling = min(cap_s, base_s * 2.0 ** max(0, round_no - 1))
    return rng.uniform(0.0, ceiling)


class TokenBucket:
    """Reservations against a refilling budget of ``rate_per_s`` tokens/s, ``burst`` max."""

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("TokenBucket needs rate_per_s > 0 and burst > 0")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def reserve(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens; return the seconds to wait before sending (0 if none)."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
        self._tokens -= cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s

    def refund(self, cost: float) -> None:
        """Give back a reservation that will not be used."""
        self._tokens = min(self.burst, self._tokens + cost)


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Counters of one endpoint since the client was created (a snapshot).

    ``url`` is the endpoint as configured, credentials included: a key to match, not a
    label to print or export (:func:`chains.urls.hide_credentials`)."""

    url: str
    requests: int  # HTTP requests sent (a batch is one)
    calls: int  # JSON-RPC calls sent (a batch of n counts n)
    successes: int
    errors: Mapping[str, int]  # by kind: timeout, connection, http_429, invalid_json, ...
    latency_s_sum: float  # successful requests only
    latency_count: int
    ewma_latency_s: float
    score_s: float
    benched: bool
    verifications: int  # chain id + genesis checks done
    throttled_s: float  # time spent waiting for the client-side rate limit

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True, slots=True)
class ClientStats:
    """Counters of one client: per call, and per endpoint in configured order."""

    calls: int  # call/call_raw/batch invocations
    retries: int  # attempts after the first, on any endpoint
    failovers: int  # retries sent to another endpoint than the previous attempt
    gave_up: int  # calls that ran out of attempts or time
    endpoints: tuple[EndpointStats, ...] = field(default_factory=tuple)

    def endpoint(self, url: str) -> EndpointStats:
        for stats in self.endpoints:
            if stats.url == url:
                return stats
        raise KeyError(url)


class Endpoint:
    """Mutable health and counters of one URL; see the module docstring for the rules."""

    def __init__(
        self, url: str, index: int, policy: RpcPolicy, now: float, *, benchable: bool = True
    ) -> None:
        self.url = url  # connected to as configured; messages and logs name shown_url
        self.shown_url = hide_credentials(url)
        self.index = index
        self.benchable = benchable  # a lone endpoint is never benched: nothing to rank
        self._policy = policy
        rate = policy.rate_limit_per_s
        burst = policy.rate_limit_burst or max(1.0, rate)
        self.bucket = TokenBucket(rate, burst, now) if rate > 0 else None
        self.ewma_latency_s = 0.0
        self._error_score = 0.0
        self._error_at = now
        self.consecutive_failures = 0
        self.bench_count = 0
        self.benched_until = -math.inf
        self.not_before = -math.inf  # Retry-After
        self.probe_due = False
        # Verification: the connection count at the last successful chain check, or None.
        self.connections_opened = 0
        self.verified_connections: int | None = None
        self.verified_at = -math.inf
        self.verify_lock = asyncio.Lock()
        # Counters.
        self.requests = 0
        self.calls = 0
        self.successes = 0
        self.errors: Counter[str] = Counter()
        self.latency_s_sum = 0.0
        self.latency_count = 0
        self.verifications = 0
        self.throttled_s = 0.0

    def error_score(self, now: float) -> float:
        """Transient failures, each decayed by its age (half-life ``error_halflife_s``)."""
        age = max(0.0, now - self._error_at)
        return self._error_score * math.exp2(-age / self._policy.error_halflife_s)

    def score_s(self, now: float) -> float:
        return self.ewma_latency_s + self._policy.error_penalty_s * self.error_score(now)

    def benched(self, now: float) -> bool:
        return now < self.benched_until

    def rank_key(self, now: float) -> tuple[float, bool, float, int]:
        """Sort key: ready first (else soonest ready), unbenched, score, configured order."""
        return (max(now, self.not_before), self.benched(now), self.score_s(now), self.index)

    def record_success(self, latency_s: float) -> None:
        alpha = self._policy.ewma_alpha
        first = self.latency_count == 0
        self.ewma_latency_s = (
            latency_s if first else (1 - alpha) * self.ewma_latency_s + (alpha * latency_s)
        )
        self.latency_s_sum += latency_s
        self.latency_count += 1
        self.successes += 1
        self.consecutive_failures = 0
        self.bench_count = 0

    def record_failure(
        self,
        kind: str,
        now: float,
        *,
        penalise: bool,
        retry_after_s: float | None = None,
        bench_now: bool = False,
    ) -> bool:
        """Count a failure of ``kind``; with ``penalise`` it lowers the rank and may bench
        (with ``bench_now`` too, at once).

        Returns whether this failure benched the endpoint.
        """
        self.errors[kind] += 1
        if retry_after_s is not None:
            self.not_before = max(self.not_before, now + retry_after_s)
        if not penalise:
            return False
        self._error_score = self.error_score(now) + 1.0
        self._error_at = now
        self.consecutive_failures += 1
        if not self.benchable or (
            self.consecutive_failures < self._policy.bench_after_failures and not bench_now
        ):
            return False
        self.bench_count += 1  # failures stay counted: one more after the cool-down re-benches
        policy = self._policy
        cool_down = min(policy.bench_max_s, policy.bench_base_s * 2.0 ** (self.bench_count - 1))
        self.benched_until = now + cool_down
        self.verified_connections = None  # it may come back as another node: check again
        self.probe_due = True
        return True

    def take_due_probe(self, now: float) -> bool:
        """Whether a benched endpoint's cool-down is over and its re-probe not yet started."""
        if self.probe_due and not self.benched(now):
            self.probe_due = False
            return True
        return False

    def snapshot(self, now: float) -> EndpointStats:
        return EndpointStats(
            url=self.url,
            requests=self.requests,
            calls=self.calls,
            successes=self.successes,
            errors=dict(self.errors),
            latency_s_sum=self.latency_s_sum,
            latency_count=self.latency_count,
            ewma_latency_s=self.ewma_latency_s,
            score_s=self.score_s(now),
            benched=self.benched(now),
            verifications=self.verifications,
            throttled_s=self.throttled_s,
        )
