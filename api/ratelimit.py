"""A token bucket per client, so one caller cannot starve the others.

Each client (the remote address of the connection: the API listens on loopback and sits
behind no proxy, so ``X-Forwarded-For`` is not trusted) has a bucket of ``burst`` tokens
refilled at ``rate_per_s``; a request takes one token. An empty bucket answers 429 with
``Retry-After``: the whole seconds until a token is back (at least 1). A rate of 0 turns
the limit off. Buckets idle long enough to be full again are forgotten, so memory is
bounded by the clients active in the last ``burst / rate_per_s`` seconds. The clock is
injected (``time.monotonic`` by default) so tests need no sleeping. Not thread-safe: one
limiter per event loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimiter", "TokenBucket"]

_SWEEP_EVERY = 1024  # requests between sweeps of idle buckets


@dataclass(slots=True)
class TokenBucket:
    """Tokens available at ``updated_s`` (monotonic seconds)."""

    tokens: float
    updated_s: float


class RateLimiter:
    """Per-client token buckets; :meth:`take` says how long to wait (0: go ahead)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s < 0 or not math.isfinite(rate_per_s):
            raise ValueError(f"rate_per_s must be a finite number >= 0, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._since_sweep = 0

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 if granted, else the seconds until one is back."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(float(self.burst), now)
        else:
            refill = (now - bucket.updated_s) * self.rate_per_s
            bucket.tokens = min(float(self.burst), bucket.tokens + refill)
            bucket.updated_s = now
        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self._sweep(now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """``wait_s`` as a ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait_s)))

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        full_after_s = self.burst / self.rate_per_s
        idle = [c for c, b in self._buckets.items() if now - b.updated_s >= full_after_s]
        for client in idle:
            del self._buckets[client]
