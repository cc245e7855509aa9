"""The per-client token bucket: unit tests on a fake clock, then 429s from a live API."""

from __future__ import annotations

from typing import Any

import pytest

from api.ratelimit import RateLimiter


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate() -> None:
    clock = _Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # one token comes back every 0.5 s
    assert limiter.take("b") == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0.0
    clock.now += 60.0
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled to the burst only
    assert limiter.take("a") > 0.0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert RateLimiter.retry_after(0.01) == "1"
    assert RateLimiter.retry_after(1.2) == "2"


def test_zero_rate_is_off_and_bad_settings_refused() -> None:
    off = RateLimiter(0.0, 1)
    assert not off.enabled
    assert all(off.take("a") == 0.0 for _ in range(1000))
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(-1.0, 1)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(1.0, 0)


def test_idle_buckets_are_forgotten() -> None:
    clock = _Clock()
    limiter = RateLimiter(10.0, 5, clock=clock)
    for i in range(2000):
        limiter.take(f"client-{i}")
        clock.now += 0.01
    assert len(limiter._buckets) < 2000  # the memory bound is the point


@pytest.mark.chain
def test_api_answers_429_with_retry_after(limited_api: Any) -> None:
    statuses = [limited_api.get("/v1/status").status_code for _ in range(6)]
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses[3:]
    refused = limited_api.get("/v1/status")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    body = refused.json()
    assert body["error"]["code"] == "rate_limited"
    assert "2/s" in body["error"]["message"]
    assert limited_api.get("/healthz").status_code == 200  # probes are never limited
    assert limited_api.get("/metrics").status_code == 200
    assert "rtrm_api_rate_limited_total" in limited_api.get("/metrics").text
