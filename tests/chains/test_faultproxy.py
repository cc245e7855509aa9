"""The fault proxy in front of a real anvil: every fault kind, range-limit bodies, switches."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from chains.anvil import AnvilNode, free_port
from chains.exceptions import RPCConnectionError, TransientRPCError
from chains.faultplan import (
    TRANSIENT_FAULTS,
    Fault,
    FaultInjector,
    FaultPlan,
    FaultRule,
    RangeLimitStyle,
    block_span,
    cap_results,
    malform,
    range_limit_error,
)
from chains.faultproxy import FaultProxy
from chains.rpc import RpcClient, hex_to_int, retry_after_s

pytestmark = pytest.mark.timeout(60)
chain = pytest.mark.chain

CHAIN_ID_HEX = hex(31337)
AnvilFactory = Callable[..., AnvilNode]


def rpc(method: str, params: list[Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}


def post(url: str, payload: Any, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """POST JSON with urllib; (status, headers, body) for any HTTP status."""
    body = json.dumps(payload).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, dict(exc.headers), exc.read()
        finally:
            exc.close()


def block_ref(ref: int | str) -> str:
    return hex(ref) if isinstance(ref, int) else ref


def logs_filter(from_block: int | str, to_block: int | str) -> dict[str, Any]:
    return {"fromBlock": block_ref(from_block), "toBlock": block_ref(to_block)}


# ---------------------------------------------------------------- pass-through and faults


@chain
def test_passes_requests_through_and_counts_them(anvil: AnvilNode) -> None:
    batch = [rpc("eth_chainId", request_id=1), rpc("eth_blockNumber", request_id=2)]
    with FaultProxy.start(anvil.url) as proxy:
        status, _, body = post(proxy.url, rpc("eth_chainId"))
        assert status == 200
        assert json.loads(body)["result"] == CHAIN_ID_HEX
        assert json.loads(post(proxy.url, batch)[2]) == json.loads(post(anvil.url, batch)[2])
        stats = proxy.stats()
    assert stats.received == 2
    assert stats.received_calls == {"eth_chainId": 2, "eth_blockNumber": 1}
    assert stats.forwarded_calls == stats.received_calls
    assert stats.injected == {}
    assert stats.upstream_requests == 2


@chain
@pytest.mark.parametrize("fault", TRANSIENT_FAULTS, ids=str)
def test_each_fault_is_injected_and_counted(anvil: AnvilNode, fault: Fault) -> None:
    plan = FaultPlan(rules=(FaultRule(fault, first_n=1),), retry_after_s=0.5, timeout_hold_s=0.6)
    timeout_s = 0.3 if fault is Fault.TIMEOUT else 5.0  # held requests outlast the client
    with (
        FaultProxy.start(anvil.url, plan) as proxy,
        RpcClient(proxy.url, timeout_s=timeout_s) as client,
    ):
        with pytest.raises(TransientRPCError) as caught:
            client.call("eth_chainId")
        error = caught.value
        if fault is Fault.HTTP_429:
            assert error.code == 429
            assert retry_after_s(error) == 0.5
        elif fault in (Fault.HTTP_500, Fault.HTTP_502, Fault.HTTP_503):
            assert error.code == int(fault.value.removeprefix("http_"))
        elif fault is Fault.TIMEOUT:
            assert "timed out" in str(error)
        elif fault is Fault.TRUNCATE:
            assert "not valid JSON" in str(error)
        else:
            assert isinstance(error, RPCConnectionError)
        client.close()
        assert client.call("eth_chainId") == CHAIN_ID_HEX  # the schedule is over
        stats = proxy.stats()
    assert stats.injected == {fault.value: 1}
    forwarded = 2 if fault is Fault.TRUNCATE else 1  # a cut-off answer was forwarded first
    assert stats.forwarded_calls == {"eth_chainId": forwarded}


@chain
def test_every_kth_request_and_method_filter(anvil: AnvilNode) -> None:
    rule = FaultRule(Fault.HTTP_503, every_k=3, methods=frozenset({"eth_blockNumber"}))
    with FaultProxy.start(anvil.url, FaultPlan(rules=(rule,))) as proxy:
        statuses = [post(proxy.url, rpc("eth_blockNumber"))[0] for _ in range(9)]
        assert all(post(proxy.url, rpc("eth_chainId"))[0] == 200 for _ in range(4))
        stats = proxy.stats()
    assert statuses == [200, 200, 503] * 3
    assert stats.injected == {"http_503": 3}


def test_plans_are_deterministic_per_seed() -> None:
    plan = FaultPlan(
        rules=(
            FaultRule(Fault.HTTP_500, first_n=2),
            FaultRule(Fault.DROP, every_k=4),
            FaultRule(Fault.HTTP_503, probability=0.3),
        ),
        seed=7,
    )
    a, b = FaultInjector(plan), FaultInjector(plan)
    seq_a = [a.decide(["eth_call"]) for _ in range(60)]
    assert seq_a == [b.decide(["eth_call"]) for _ in range(60)]
    assert seq_a[:2] == [Fault.HTTP_500, Fault.HTTP_500]
    assert all(seq_a[i] is Fault.DROP for i in range(3, 60, 4))
    other = FaultInjector(FaultPlan(rules=plan.rules, seed=8))
    assert [other.decide(["eth_call"]) for _ in range(60)] != seq_a


def test_method_filter_matches_batches_with_any_listed_method() -> None:
    rule = FaultRule(Fault.HTTP_503, probability=1.0, methods=frozenset({"eth_getLogs"}))
    injector = FaultInjector(FaultPlan(rules=(rule,)))
    assert injector.decide(["eth_chainId"]) is None
    assert injector.decide(["eth_getLogs"]) is Fault.HTTP_503
    assert injector.decide(["eth_chainId", "eth_getLogs"]) is Fault.HTTP_503


def test_chaos_plan_spreads_its_rate_evenly() -> None:
    injector = FaultInjector(FaultPlan.chaos(0.35, seed=3))
    draws = 14_000
    counts = Counter(injector.decide(["eth_call"]) for _ in range(draws))
    assert abs((draws - counts[None]) / draws - 0.35) < 0.02
    for fault in TRANSIENT_FAULTS:
        assert abs(counts[fault] / draws - 0.05) < 0.01


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="range_limit_blocks"):
        FaultRule(Fault.RANGE_LIMIT, probability=1.0)
    with pytest.raises(ValueError, match="probability"):
        FaultRule(Fault.DROP, probability=1.5)
    with pytest.raises(ValueError, match="truncate_fraction"):
        FaultPlan(truncate_fraction=1.0)
    with pytest.raises(ValueError, match="range_limit_blocks"):
        FaultPlan(range_limit_blocks=0)
    with pytest.raises(ValueError, match="result_limit"):
        FaultPlan(result_limit=0)
    assert block_span({"blockHash": "0x00"}, 5) is None
    assert block_span({"fromBlock": "earliest"}, 9) == (0, 9)


@pytest.mark.parametrize("draw", [i / 20 for i in range(20)])
def test_malform_breaks_a_header_or_a_log_never_into_a_plausible_value(draw: float) -> None:
    word = "0x" + "ab" * 32
    header = {"number": "0x5", "hash": word, "parentHash": word, "timestamp": "0x1"}
    log: dict[str, Any] = {"blockNumber": "0x5", "blockHash": word, "logIndex": "0x0"}
    log |= {"transactionHash": word, "topics": [word]}
    batch: list[dict[str, Any]] = [{"id": 1, "result": False}, {"id": 2, "result": dict(header)}]
    assert malform(batch, draw)
    broken = batch[1]["result"]
    assert broken != header
    assert batch[0]["result"] is False
    if isinstance(broken, dict):
        changed = {k for k in header if broken[k] != header[k]}
        assert len(changed) == 1
        assert not str(broken[changed.pop()]).startswith("0x" + "a")
    single: dict[str, Any] = {"id": 3, "result": [dict(log), dict(log)]}
    assert malform(single, draw)
    first, second = single["result"]
    assert first != log
    assert second == log
    if isinstance(first, dict):  # one field broken (or dropped), into no hash, no number
        changed = {k for k in log if first.get(k, "dropped") != log[k]}
        assert len(changed) == 1
        assert first.get(changed.pop()) not in (word, "0x5", "0x0", [word])
    assert not malform({"id": 4, "result": "0x1"}, draw)
    assert not malform({"id": 5, "result": []}, draw)


@chain
def test_malformed_answers_are_valid_json_with_broken_fields(anvil: AnvilNode) -> None:
    rule = FaultRule(Fault.MALFORMED, every_k=2, methods=frozenset({"eth_getBlockByNumber"}))
    with FaultProxy.start(anvil.url, FaultPlan(rules=(rule,), seed=3)) as proxy:
        answers = [
            post(proxy.url, rpc("eth_getBlockByNumber", ["0x0", False]))[2] for _ in range(8)
        ]
        stats = proxy.stats()
    headers = [json.loads(body)["result"] for body in answers]
    assert headers[0] == headers[2] == headers[4] == headers[6]
    assert all(h != headers[0] for h in headers[1::2])
    assert stats.injected == {"malformed": 4}


# ---------------------------------------------------------------- eth_getLogs range limits

ALCHEMY_START = (
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
    "range and no limit on the response size, or you can request any block range with a cap "
    "of 10K logs in the response."
)
RANGE_BODIES = [
    (
        RangeLimitStyle.ALCHEMY,
        True,
        {
            "code": -32602,
            "message": ALCHEMY_START
            + " Based on your parameters, this block range should work: [0x0, 0x7cf]",
        },
    ),
    (RangeLimitStyle.ALCHEMY, False, {"code": -32602, "message": ALCHEMY_START}),
    (
        RangeLimitStyle.INFURA,
        True,
        {
            "code": -32005,
            "message": "query returned more than 10000 results",
            "data": {"from": "0x0", "to": "0x7cf"},
        },
    ),
    (
        RangeLimitStyle.INFURA,
        False,
        {"code": -32005, "message": "query returned more than 10000 results"},
    ),
    (
        RangeLimitStyle.QUICKNODE,
        True,
        {"code": -32614, "message": "eth_getLogs is limited to a 2,000 range"},
    ),
    (RangeLimitStyle.GENERIC, False, {"code": -32000, "message": "block range too large"}),
]


@chain
@pytest.mark.parametrize(("style", "hint", "error"), RANGE_BODIES)
def test_range_limit_bodies(
    anvil: AnvilNode, style: RangeLimitStyle, hint: bool, error: dict[str, Any]
) -> None:
    plan = FaultPlan(range_limit_blocks=2000, range_limit_style=style, range_limit_hint=hint)
    assert range_limit_error(style, limit=2000, from_block=0, hint=hint) == error
    with FaultProxy.start(anvil.url, plan) as proxy:
        status, _, body = post(proxy.url, rpc("eth_getLogs", [logs_filter(0, 4999)], 42))
        assert status == 200
        assert json.loads(body) == {"jsonrpc": "2.0", "id": 42, "error": error}
        status, _, body = post(proxy.url, rpc("eth_getLogs", [logs_filter(0, 0)]))
        assert json.loads(body)["result"] == []  # within the limit: forwarded
        stats = proxy.stats()
    assert stats.injected == {"range_limit": 1}
    assert stats.forwarded_calls == {"eth_getLogs": 1}


@chain
def test_range_limit_resolves_block_tags_and_splits_batches(
    anvil: AnvilNode, anvil_rpc: RpcClient
) -> None:
    anvil_rpc.call("anvil_mine", ["0x1e"])  # head 30
    plan = FaultPlan(range_limit_blocks=10, range_limit_style=RangeLimitStyle.INFURA)
    with FaultProxy.start(anvil.url, plan) as proxy:
        too_wide = json.loads(post(proxy.url, rpc("eth_getLogs", [logs_filter(0, "latest")]))[2])
        assert too_wide["error"]["data"] == {"from": "0x0", "to": "0x9"}
        narrow = json.loads(post(proxy.url, rpc("eth_getLogs", [logs_filter(25, "latest")]))[2])
        assert narrow["result"] == []
        batch = [rpc("eth_getLogs", [logs_filter(0, 99)], 1), rpc("eth_chainId", [], 2)]
        replies = {reply["id"]: reply for reply in json.loads(post(proxy.url, batch)[2])}
        stats = proxy.stats()
    assert replies[1]["error"]["code"] == -32005
    assert replies[2]["result"] == CHAIN_ID_HEX
    assert stats.injected == {"range_limit": 2}
    assert stats.forwarded_calls == {"eth_getLogs": 1, "eth_chainId": 1}


def _logs_in(*blocks: int) -> list[dict[str, Any]]:
    return [{"blockNumber": hex(b), "logIndex": hex(i)} for i, b in enumerate(blocks)]


def test_cap_results_answers_too_many_logs_as_infura_does() -> None:
    call = rpc("eth_getLogs", [logs_filter(3, 9)], 7)
    reply = {"jsonrpc": "2.0", "id": 7, "result": _logs_in(5, 5, 6, 6, 6, 7)}
    assert cap_results(call, reply, 3, hint=True)
    error = {"code": -32005, "message": "query returned more than 3 results"}
    assert reply == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {**error, "data": {"from": "0x3", "to": "0x5"}},
    }
    # one block over the cap: the suggestion is that block, which cannot work either
    dense: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "result": _logs_in(5, 5, 5)}
    assert cap_results(rpc("eth_getLogs", [logs_filter(5, 5)], 7), dense, 2, hint=True)
    assert dense["error"]["data"] == {"from": "0x5", "to": "0x5"}
    plain = {"jsonrpc": "2.0", "id": 7, "result": _logs_in(5, 5, 5)}
    assert cap_results(call, plain, 2, hint=False)
    assert plain["error"] == {"code": -32005, "message": "query returned more than 2 results"}
    for untouched, limit in ((_logs_in(5, 6), 2), ([{}] * 5, 10)):
        reply = {"jsonrpc": "2.0", "id": 7, "result": untouched}
        assert not cap_results(call, reply, limit, hint=True)
        assert reply["result"] is untouched
    receipts = {"jsonrpc": "2.0", "id": 7, "result": [{"logs": []}] * 5}
    assert not cap_results(rpc("eth_getBlockReceipts", ["0x5"], 7), receipts, 2, hint=True)


@chain
def test_unsupported_methods_are_not_found_and_never_forwarded(anvil: AnvilNode) -> None:
    plan = FaultPlan(unsupported_methods=frozenset({"eth_getBlockReceipts"}))
    with FaultProxy.start(anvil.url, plan) as proxy:
        single = json.loads(post(proxy.url, rpc("eth_getBlockReceipts", ["0x0"], 3))[2])
        batch = [rpc("eth_getBlockReceipts", ["0x0"], 1), rpc("eth_chainId", [], 2)]
        replies = {reply["id"]: reply for reply in json.loads(post(proxy.url, batch)[2])}
        stats = proxy.stats()
    assert single["error"]["code"] == replies[1]["error"]["code"] == -32601
    assert "eth_getBlockReceipts" in single["error"]["message"]
    assert replies[2]["result"] == CHAIN_ID_HEX
    assert stats.injected == {"unsupported": 2}
    assert stats.forwarded_calls == {"eth_chainId": 1}


# ---------------------------------------------------------------- switches


@chain
def test_syncing_switch_serves_a_stale_head(anvil: AnvilNode, anvil_rpc: RpcClient) -> None:
    anvil_rpc.call("anvil_mine", ["0xa"])  # head 10
    with FaultProxy.start(anvil.url) as proxy, RpcClient(proxy.url) as client:
        proxy.set_syncing(4)
        assert hex_to_int(client.call("eth_blockNumber")) == 6
        assert client.call("eth_syncing") == {
            "startingBlock": "0x0",
            "currentBlock": "0x6",
            "highestBlock": "0xa",
        }
        assert client.call("eth_getBlockByNumber", ["latest", False])["number"] == "0x6"
        assert client.call("eth_getBlockByNumber", ["0x8", False]) is None
        assert client.call("eth_getBlockByNumber", ["0x5", False])["number"] == "0x5"
        assert proxy.stats().injected == {"syncing": 4}
        proxy.set_syncing(None)
        assert client.call("eth_blockNumber") == "0xa"
        assert client.call("eth_syncing") is False


@chain
def test_repoint_switches_upstream_and_closes_connections(anvil_factory: AnvilFactory) -> None:
    first, second = anvil_factory(31337), anvil_factory(31338)
    with FaultProxy.start(first.url) as proxy, RpcClient(proxy.url) as client:
        assert client.call("eth_chainId") == CHAIN_ID_HEX
        proxy.repoint(second.url)
        assert proxy.upstream_url == second.url
        assert client.call("eth_chainId") == hex(31338)  # reconnected to the new node
        assert proxy.stats().connections_closed == 1


def test_unreachable_upstream_is_a_bad_gateway() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with FaultProxy.start(dead) as proxy:
        status, _, body = post(proxy.url, rpc("eth_chainId"))
    assert status == 502
    assert b"unreachable" in body


@chain
def test_stop_releases_held_requests_and_leaves_nothing_behind(anvil: AnvilNode) -> None:
    threads_before = set(threading.enumerate())
    plan = FaultPlan(rules=(FaultRule(Fault.TIMEOUT, first_n=1),), timeout_hold_s=30)
    proxy = FaultProxy.start(anvil.url, plan)
    outcome: list[BaseException] = []

    def held_request() -> None:
        try:
            post(proxy.url, rpc("eth_chainId"), timeout_s=10)
        except Exception as exc:  # the proxy drops it: any connection error
            outcome.append(exc)

    caller = threading.Thread(target=held_request)
    caller.start()
    deadline = time.monotonic() + 5
    while proxy.stats().injected.get("timeout") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3
    caller.join(5)
    assert len(outcome) == 1
    assert set(threading.enumerate()) == threads_before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
    proxy.stop()  # twice is fine
