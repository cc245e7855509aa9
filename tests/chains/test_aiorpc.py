"""The async JSON-RPC client against real anvil nodes, with faults from a real proxy."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from chains.aiorpc import AsyncRpcClient, RpcPolicy
from chains.anvil import AnvilNode, free_port
from chains.endpoints import Endpoint, TokenBucket, full_jitter_s
from chains.exceptions import (
    ChainIdMismatchError,
    ConfigError,
    ExecutionRevertedError,
    GenesisMismatchError,
    RPCConnectionError,
    RPCError,
    TransientRPCError,
)
from chains.faultplan import (
    TRANSIENT_FAULTS,
    Fault,
    FaultPlan,
    FaultRule,
    RangeLimitStyle,
    range_limit_error,
)
from chains.faultproxy import FaultProxy
from chains.rpc import RpcClient
from chains.rpcwire import batch_results, classify_error_object

pytestmark = pytest.mark.timeout(60)
chain = pytest.mark.chain

AnvilFactory = Callable[..., AnvilNode]
CHAIN_ID = 31337
FAST = RpcPolicy(request_timeout_s=2.0, call_timeout_s=10, backoff_base_s=0.01, backoff_max_s=0.05)
REVERTS = "0x60006000fd"  # runtime code: REVERT(0, 0)


def always(fault: Fault, **plan: Any) -> FaultPlan:
    return FaultPlan(rules=(FaultRule(fault, probability=1.0),), **plan)


def result_of(body: bytes) -> Any:
    return orjson.loads(body)["result"]


# ---------------------------------------------------------------- answers and retries


@chain
def test_answers_equal_the_synchronous_client(anvil: AnvilNode, anvil_rpc: RpcClient) -> None:
    anvil_rpc.call("anvil_mine", ["0x3"])
    block = anvil_rpc.call("eth_getBlockByNumber", ["0x2", True])

    async def scenario() -> None:
        async with AsyncRpcClient([anvil.url], chain_id=CHAIN_ID) as client:
            assert await client.call("eth_getBlockByNumber", ["0x2", True]) == block
            calls = [("eth_chainId", []), ("eth_getBlockByNumber", ["0x2", True])]
            assert await client.batch(calls) == [hex(CHAIN_ID), block]
            raw = await client.call_raw("eth_getBlockByNumber", ["0x2", True], result_of)
            assert raw == block
            assert (
                await client.genesis_hash()
                == anvil_rpc.call("eth_getBlockByNumber", ["0x0", False])["hash"]
            )
            assert await client.batch([]) == []
            stats = client.stats()
        assert stats.calls == 4
        assert stats.retries == stats.gave_up == 0
        assert stats.endpoints[0].verifications == 1  # one check: first contact
        assert stats.endpoints[0].error_count == 0

    asyncio.run(scenario())


@chain
@pytest.mark.parametrize("fault", TRANSIENT_FAULTS, ids=str)
def test_retries_through_each_transient_fault(
    anvil: AnvilNode, anvil_rpc: RpcClient, fault: Fault
) -> None:
    anvil_rpc.call("anvil_mine", ["0x3"])
    block = anvil_rpc.call("eth_getBlockByNumber", ["0x2", True])
    calls = [("eth_getBlockByNumber", ["0x2", True]), ("eth_chainId", [])]

    def twice(count: int) -> FaultPlan:
        rule = FaultRule(fault, first_n=count)
        return FaultPlan(rules=(rule,), retry_after_s=0.05, timeout_hold_s=0.6)

    # Held requests must outlast the client's timeout; other faults get a lenient one.
    policy = replace(FAST, request_timeout_s=0.3) if fault is Fault.TIMEOUT else FAST

    with FaultProxy.start(anvil.url) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient(
                [proxy.url], chain_id=CHAIN_ID, policy=policy, seed=1
            ) as client:
                assert await client.call("eth_chainId") == hex(CHAIN_ID)  # checked, warm
                proxy.set_plan(twice(2))
                assert await client.call("eth_getBlockByNumber", ["0x2", True]) == block
                proxy.set_plan(twice(1))
                assert await client.batch(calls) == [block, hex(CHAIN_ID)]
                proxy.set_plan(twice(1))
                raw = await client.call_raw("eth_getBlockByNumber", ["0x2", True], result_of)
                assert raw == block
                stats = client.stats()
            assert stats.retries >= 4
            assert stats.gave_up == 0
            assert stats.endpoints[0].error_count >= 4

        asyncio.run(scenario())
        injected = proxy.stats().injected
    assert injected == {fault.value: 2 + 1 + 1}


@chain
def test_retry_after_is_honoured(anvil: AnvilNode) -> None:
    plan = FaultPlan(rules=(FaultRule(Fault.HTTP_429, first_n=1),), retry_after_s=0.4)
    with FaultProxy.start(anvil.url, plan) as proxy:

        async def scenario() -> float:
            async with AsyncRpcClient([proxy.url], verify_endpoints=False, policy=FAST) as client:
                started = time.monotonic()
                assert await client.call("eth_chainId") == hex(CHAIN_ID)
                return time.monotonic() - started

        assert asyncio.run(scenario()) >= 0.4
        assert proxy.stats().received == 2


@chain
def test_retry_after_beyond_the_deadline_gives_up_at_once(anvil: AnvilNode) -> None:
    policy = RpcPolicy(call_timeout_s=1.0, backoff_base_s=0.01)
    with FaultProxy.start(anvil.url, always(Fault.HTTP_429, retry_after_s=30)) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], verify_endpoints=False, policy=policy) as client:
                started = time.monotonic()
                with pytest.raises(TransientRPCError, match="Retry-After") as caught:
                    await client.call("eth_chainId")
                assert time.monotonic() - started < 0.5
                assert caught.value.code == 429
                assert proxy.url in str(caught.value)

        asyncio.run(scenario())


@chain
def test_attempts_are_bounded(anvil: AnvilNode) -> None:
    policy = RpcPolicy(max_attempts=3, backoff_base_s=0.01)
    with FaultProxy.start(anvil.url, always(Fault.HTTP_503)) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], verify_endpoints=False, policy=policy) as client:
                with pytest.raises(TransientRPCError, match=r"gave up after 3 attempt\(s\)") as e:
                    await client.call("eth_chainId")
                assert e.value.code == 503
                assert "add another endpoint to the chain's rpc_urls in rtrm.toml" in str(e.value)
                assert client.stats().gave_up == 1
                assert client.stats().endpoints[0].errors == {"http_5xx": 3}

        asyncio.run(scenario())
        assert proxy.stats().received == 3


@chain
def test_the_call_deadline_bounds_the_time_spent(anvil: AnvilNode) -> None:
    policy = RpcPolicy(request_timeout_s=0.2, call_timeout_s=0.7, max_attempts=100)
    with FaultProxy.start(anvil.url, always(Fault.TIMEOUT, timeout_hold_s=2)) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], verify_endpoints=False, policy=policy) as client:
                started = time.monotonic()
                with pytest.raises(TransientRPCError, match=r"deadline of 0\.7s"):
                    await client.call("eth_chainId")
                assert time.monotonic() - started < 1.5

        asyncio.run(scenario())


@chain
def test_non_transient_errors_are_raised_at_once(anvil: AnvilNode, anvil_rpc: RpcClient) -> None:
    reverter = "0x00000000000000000000000000000000000000aa"
    anvil_rpc.call("anvil_setCode", [reverter, REVERTS])
    with FaultProxy.start(anvil.url) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
                with pytest.raises(ExecutionRevertedError):
                    await client.call("eth_call", [{"to": reverter, "data": "0x"}, "latest"])
                with pytest.raises(RPCError) as caught:
                    await client.call("eth_getBalance", ["0xnot-an-address", "latest"])
                assert not isinstance(caught.value, TransientRPCError)
                assert caught.value.code is not None
                assert "eth_getBalance" in str(caught.value)
                assert proxy.url in str(caught.value)
                results = await client.batch(
                    [("eth_chainId", []), ("eth_getBalance", ["0xbad", "latest"])],
                    raise_on_error=False,
                )
                assert results[0] == hex(CHAIN_ID)
                assert isinstance(results[1], RPCError)
                with pytest.raises(RPCError):
                    await client.batch([("eth_getBalance", ["0xbad", "latest"])])
                stats = client.stats()
            assert stats.retries == 0
            assert stats.endpoints[0].errors["reverted"] == 1
            assert stats.endpoints[0].score_s < 0.5  # the caller's mistakes are not the node's

        asyncio.run(scenario())
        forwarded = proxy.stats().forwarded_calls
    assert forwarded["eth_call"] == 1
    assert forwarded["eth_getBalance"] == 3


@chain
@pytest.mark.parametrize("style", list(RangeLimitStyle), ids=str)
def test_range_limit_errors_reach_the_caller_whole(
    anvil: AnvilNode, style: RangeLimitStyle
) -> None:
    plan = FaultPlan(range_limit_blocks=2000, range_limit_style=style)
    expected = range_limit_error(style, limit=2000, from_block=0, hint=True)
    params = [{"fromBlock": "0x0", "toBlock": hex(9_999)}]
    with FaultProxy.start(anvil.url, plan) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], verify_endpoints=False, policy=FAST) as client:
                for attempt in (
                    client.call("eth_getLogs", params),
                    client.call_raw("eth_getLogs", params, result_of),
                    client.batch([("eth_getLogs", params)]),
                ):
                    with pytest.raises(RPCError) as caught:
                        await attempt
                    assert type(caught.value) is RPCError  # not transient: shrink the range
                    assert caught.value.code == expected["code"]
                    assert expected["message"] in str(caught.value)  # whole, hint included
                    if "data" in expected:
                        assert caught.value.data == expected["data"]
                        assert json.dumps(expected["data"], separators=(",", ":")) in str(
                            caught.value
                        )
                assert client.stats().retries == 0

        asyncio.run(scenario())
        assert proxy.stats().received_calls == {"eth_getLogs": 3}


# ---------------------------------------------------------------- several endpoints


@chain
def test_fails_over_when_the_first_endpoint_is_dead(anvil: AnvilNode) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    async def scenario() -> None:
        async with AsyncRpcClient([dead, anvil.url], chain_id=CHAIN_ID, policy=FAST) as client:
            for _ in range(5):
                assert await client.call("eth_chainId") == hex(CHAIN_ID)
            stats = client.stats()
            assert client.ranked_urls() == (anvil.url, dead)
        assert stats.failovers == 1
        assert stats.endpoint(dead).errors == {"connection": 1}
        assert stats.endpoint(anvil.url).successes == 5

    asyncio.run(scenario())


@chain
def test_ranking_prefers_the_healthy_endpoint(anvil: AnvilNode) -> None:
    with (
        FaultProxy.start(anvil.url, always(Fault.HTTP_503)) as sick,
        FaultProxy.start(anvil.url, FaultPlan(delay_s=0.1)) as slow,
        FaultProxy.start(anvil.url) as fast,
    ):

        async def scenario() -> None:
            urls = [sick.url, slow.url, fast.url]
            async with AsyncRpcClient(urls, chain_id=CHAIN_ID, policy=FAST) as client:
                for _ in range(12):
                    assert await client.call("eth_blockNumber") == "0x0"
                assert client.ranked_urls() == (fast.url, slow.url, sick.url)
                stats = client.stats()
            assert stats.endpoint(sick.url).errors == {"http_5xx": 1}
            assert stats.endpoint(fast.url).successes >= 10

        asyncio.run(scenario())
        assert sick.stats().received == 1
        assert slow.stats().received_calls.get("eth_blockNumber", 0) <= 1


@chain
def test_a_benched_endpoint_is_reprobed_after_its_cool_down(anvil: AnvilNode) -> None:
    policy = RpcPolicy(
        request_timeout_s=2.0, backoff_base_s=0.01, bench_after_failures=2, bench_base_s=0.2
    )
    with (
        FaultProxy.start(anvil.url, always(Fault.HTTP_503)) as flaky,
        FaultProxy.start(anvil.url, FaultPlan(rules=(FaultRule(Fault.HTTP_503, first_n=1),))) as b,
    ):

        async def scenario() -> None:
            async with AsyncRpcClient([flaky.url, b.url], chain_id=CHAIN_ID, policy=policy) as c:
                assert await c.call("eth_chainId") == hex(CHAIN_ID)  # flaky fails twice
                assert c.stats().endpoint(flaky.url).benched
                flaky.set_plan(FaultPlan())  # it recovers
                await asyncio.sleep(0.25)
                assert await c.call("eth_chainId") == hex(CHAIN_ID)  # starts the re-probe
                for _ in range(50):
                    if c.stats().endpoint(flaky.url).successes:
                        break
                    await asyncio.sleep(0.01)
                after = c.stats().endpoint(flaky.url)
                assert not after.benched
                assert after.successes == 1
                assert after.verifications == 3  # two failed checks, then the probe

        asyncio.run(scenario())


@chain
def test_rate_limit_holds(anvil: AnvilNode) -> None:
    policy = RpcPolicy(rate_limit_per_s=20, rate_limit_burst=5)
    with FaultProxy.start(anvil.url) as proxy:

        async def scenario() -> tuple[int, float]:
            async with AsyncRpcClient([proxy.url], verify_endpoints=False, policy=policy) as client:
                started = time.monotonic()
                tasks = [asyncio.create_task(client.call("eth_chainId")) for _ in range(25)]
                await asyncio.sleep(0.5)
                in_window = proxy.stats().received
                assert await asyncio.gather(*tasks) == [hex(CHAIN_ID)] * 25
                assert client.stats().endpoints[0].throttled_s > 0
                return in_window, time.monotonic() - started

        in_window, elapsed = asyncio.run(scenario())
    assert in_window <= 5 + 20 * 0.5 + 2  # burst + rate x window, and a tick of slack
    assert elapsed >= (25 - 5) / 20 * 0.9


# ---------------------------------------------------------------- same chain, always


def genesis_of(node: AnvilNode) -> str:
    with RpcClient(node.url) as client:
        return str(client.call("eth_getBlockByNumber", ["0x0", False])["hash"])


@chain
def test_genesis_mismatch_after_the_proxy_is_repointed(anvil_factory: AnvilFactory) -> None:
    first = anvil_factory(genesis_timestamp=1_700_000_000)
    second = anvil_factory(genesis_timestamp=1_700_000_100)
    with FaultProxy.start(first.url) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], chain_id=CHAIN_ID, policy=FAST) as client:
                assert await client.genesis_hash() == genesis_of(first)
                proxy.repoint(second.url)  # the node behind the URL restarted
                with pytest.raises(GenesisMismatchError) as caught:
                    await client.call("eth_blockNumber")
                error = caught.value
                assert (error.expected, error.found) == (genesis_of(first), genesis_of(second))
                assert error.url == proxy.url
                assert proxy.url in str(error)
                assert "re-index" in str(error)
                assert "rpc_urls" in str(error)
                proxy.repoint(first.url)  # fixed: the same chain again
                assert await client.call("eth_chainId") == hex(CHAIN_ID)

        asyncio.run(scenario())


@chain
def test_periodic_recheck_catches_a_silent_repoint(anvil_factory: AnvilFactory) -> None:
    first = anvil_factory(genesis_timestamp=1_700_000_000)
    second = anvil_factory(genesis_timestamp=1_700_000_100)
    policy = RpcPolicy(reverify_interval_s=0.2)
    with FaultProxy.start(first.url) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], policy=policy) as client:
                await client.call("eth_blockNumber")
                proxy.repoint(second.url, close_connections=False)
                await asyncio.sleep(0.25)
                with pytest.raises(GenesisMismatchError):
                    await client.call("eth_blockNumber")

        asyncio.run(scenario())


@chain
def test_a_node_restarted_on_the_same_url_is_detected(anvil_factory: AnvilFactory) -> None:
    before = anvil_factory(genesis_timestamp=1_700_000_000)

    async def scenario() -> None:
        async with AsyncRpcClient([before.url], chain_id=CHAIN_ID, policy=FAST) as client:
            await client.call("eth_blockNumber")
            before.stop()
            anvil_factory(port=before.port, genesis_timestamp=1_700_000_100)
            with pytest.raises(GenesisMismatchError):
                await client.call("eth_blockNumber")

    asyncio.run(scenario())


@chain
def test_expected_genesis_hash_is_enforced(anvil: AnvilNode) -> None:
    genesis = genesis_of(anvil)

    async def scenario() -> None:
        async with AsyncRpcClient([anvil.url], expected_genesis_hash="0x" + "11" * 32) as bad:
            with pytest.raises(GenesisMismatchError, match="0x1111"):
                await bad.call("eth_chainId")
        async with AsyncRpcClient([anvil.url], expected_genesis_hash=genesis.upper()) as good:
            assert await good.genesis_hash() == genesis

    asyncio.run(scenario())


@chain
def test_chain_id_mismatch_is_not_retried(anvil: AnvilNode) -> None:
    with FaultProxy.start(anvil.url) as proxy:

        async def scenario() -> None:
            async with AsyncRpcClient([proxy.url], chain_id=1, policy=FAST) as client:
                with pytest.raises(ChainIdMismatchError) as caught:
                    await client.call("eth_blockNumber")
            assert (caught.value.expected, caught.value.found) == (1, CHAIN_ID)
            assert caught.value.url == proxy.url
            assert "rpc_urls of chain 1" in str(caught.value)

        asyncio.run(scenario())
        assert proxy.stats().received == 1


@chain
def test_errors_and_logs_never_quote_the_urls_credentials(
    anvil_factory: AnvilFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An endpoint on another chain and a dead one, both with a password and an API key in
    path and query: the indexer's client benches both with a warning and gives up on the
    dead one alone, naming them with their credentials hidden."""
    good, other = anvil_factory(CHAIN_ID), anvil_factory(CHAIN_ID + 1)
    key = "AbCdEf0123456789xyzKEY"
    dead = f"http://me:hunter2@127.0.0.1:{free_port()}/v2/{key}?apikey=sEcReT"
    policy = replace(FAST, bench_after_failures=1)
    caplog.set_level(logging.DEBUG, logger="chains")
    with FaultProxy.start(other.url) as proxy:  # answers on any path, as providers do
        port = proxy.url.rpartition(":")[2]
        wrong = f"http://me:hunter2@127.0.0.1:{port}/v2/{key}?apikey=sEcReT"

        async def scenario() -> RPCError:
            urls = [wrong, dead, good.url]
            async with AsyncRpcClient(urls, chain_id=CHAIN_ID, policy=policy) as client:
                assert await client.call("eth_chainId") == hex(CHAIN_ID)
                assert client.urls == tuple(urls)  # connected to as configured
            brief = replace(policy, max_attempts=2)
            async with AsyncRpcClient([dead], chain_id=CHAIN_ID, policy=brief) as client:
                with pytest.raises(RPCConnectionError, match="gave up") as gave_up:
                    await client.call("eth_blockNumber")
            return gave_up.value

        error = asyncio.run(scenario())
    shown = caplog.text + str(error)
    for secret in ("hunter2", key, "sEcReT"):
        assert secret not in shown
    assert f"RPC endpoint http://me:***@127.0.0.1:{port}/v2/***?apikey=*** benched" in shown
    assert f"answers eth_chainId {CHAIN_ID + 1}, but it is configured for chain" in shown
    assert "benched for 1.0s after repeated failures" in shown
    assert "/v2/***?apikey=***; last error: cannot connect to http://me:***@" in str(error)


# ---------------------------------------------------------------- lifecycle, config, pure parts


def test_configuration_errors_name_the_url() -> None:
    with pytest.raises(ConfigError, match="no RPC URL for chain 5"):
        AsyncRpcClient([], chain_id=5)
    with pytest.raises(ConfigError, match="ftp://x"):
        AsyncRpcClient(["ftp://x"])
    with pytest.raises(ConfigError, match="duplicate"):
        AsyncRpcClient(["http://a:1", "http://a:1"])
    with pytest.raises(ConfigError, match=r"duplicate RPC URL 'http://u:\*\*\*@a:1'") as twice:
        AsyncRpcClient(["http://u:hunter2@a:1", "http://b:1", "http://u:hunter2@a:1"])
    with pytest.raises(ConfigError, match="WebSocket URL, but RTRM speaks") as websocket:
        AsyncRpcClient(["wss://u:hunter2@a/"], chain_id=5)
    assert "hunter2" not in str(twice.value) + str(websocket.value)
    with pytest.raises(ValueError, match="max_attempts"):
        RpcPolicy(max_attempts=0)


def test_client_must_be_opened_and_closes_twice() -> None:
    async def scenario() -> None:
        client = AsyncRpcClient("http://127.0.0.1:1", verify_endpoints=False)
        with pytest.raises(RuntimeError, match="async with"):
            await client.call("eth_chainId")
        await client.open()
        await client.close()
        await client.close()

    asyncio.run(scenario())


def test_unreachable_endpoint_is_a_connection_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    policy = RpcPolicy(max_attempts=2, backoff_base_s=0.01)

    async def scenario() -> None:
        async with AsyncRpcClient([dead], policy=policy) as client:
            with pytest.raises(RPCConnectionError, match="connection refused"):
                await client.call("eth_chainId")

    asyncio.run(scenario())


def test_batch_answers_are_matched_by_id() -> None:
    replies = [
        {"jsonrpc": "2.0", "id": 12, "error": {"code": -32602, "message": "invalid"}},
        {"jsonrpc": "2.0", "id": 11, "result": "0xb"},
        {"jsonrpc": "2.0", "id": 10, "result": "0xa"},
    ]
    methods = ["eth_a", "eth_b", "eth_c", "eth_d"]
    results = batch_results(json.dumps(replies).encode(), 10, methods, url="u", label="batch")
    assert results[:2] == ["0xa", "0xb"]
    assert type(results[2]) is RPCError
    assert isinstance(results[3], TransientRPCError)  # no answer: the node dropped it


def test_range_limits_are_not_transient_only_for_get_logs() -> None:
    error = {"code": -32005, "message": "query returned more than 10000 results"}
    assert type(classify_error_object(error, url="u", method="eth_getLogs")) is RPCError
    assert isinstance(classify_error_object(error, url="u", method="eth_call"), TransientRPCError)
    long = range_limit_error(RangeLimitStyle.ALCHEMY, limit=2000, from_block=5, hint=True)
    assert long["message"] in str(classify_error_object(long, url="u", method="eth_getLogs"))


def test_token_bucket_reservations() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=2, now=0.0)
    assert [bucket.reserve(1, 0.0) for _ in range(4)] == [0.0, 0.0, pytest.approx(0.1), 0.2]
    bucket.refund(1)
    assert bucket.reserve(1, 1.0) == 0.0  # refilled up to the burst


def test_health_score_bench_and_decay() -> None:
    policy = RpcPolicy(bench_after_failures=2, bench_base_s=1.0, error_halflife_s=10.0)
    endpoint = Endpoint("http://a", 0, policy, now=0.0)
    endpoint.record_success(0.010)
    assert not endpoint.record_failure("timeout", 0.0, penalise=True)
    assert endpoint.record_failure("timeout", 0.0, penalise=True)  # benched for 1 s
    assert endpoint.benched(0.5)
    assert not endpoint.take_due_probe(0.5)
    assert endpoint.take_due_probe(1.0)
    assert endpoint.record_failure("timeout", 1.0, penalise=True)  # re-benched, for 2 s
    assert endpoint.benched(2.9)
    assert not endpoint.benched(3.1)
    errors_at_1s = 2 * 0.5 ** (1 / 10) + 1  # two failures 1 s old, one new
    assert endpoint.score_s(1.0) == pytest.approx(0.010 + errors_at_1s)
    assert endpoint.score_s(11.0) == pytest.approx(0.010 + errors_at_1s / 2)  # a half-life
    assert endpoint.verified_connections is None
    assert not endpoint.record_failure("reverted", 1.0, penalise=False)
    assert endpoint.snapshot(1.0).errors == {"timeout": 3, "reverted": 1}
    lone = Endpoint("http://b", 0, policy, now=0.0, benchable=False)
    for _ in range(5):
        assert not lone.record_failure("timeout", 0.0, penalise=True)


def test_full_jitter_stays_under_its_cap() -> None:
    rng = random.Random(1)
    delays = [full_jitter_s(n, 0.1, 1.0, rng) for n in range(1, 9) for _ in range(50)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert max(full_jitter_s(1, 0.1, 1.0, rng) for _ in range(50)) <= 0.1
