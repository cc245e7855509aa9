"""The synchronous JSON-RPC client: real anvil, a scripted HTTP server, pure classifiers."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chains.abi import encode_call, selector
from chains.anvil import free_port
from chains.exceptions import (
    ExecutionRevertedError,
    RPCConnectionError,
    RPCError,
    TransientRPCError,
)
from chains.rpc import (
    RpcClient,
    classify_http_status,
    classify_rpc_error,
    classify_transport_error,
    hex_to_int,
    match_batch_responses,
    parse_response_body,
    retry_after_s,
    to_hex,
    wait_for_rpc,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:8545"

pytestmark = pytest.mark.timeout(60)

# ---------------------------------------------------------------- a scripted HTTP server

Reply = tuple[bytes, bool]  # (raw HTTP response, close the connection afterwards)


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def jsonrpc_ok(result: Any, request_id: int = 1) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()
    return http_response(200, body)


class ScriptedServer:
    """Answers each request on 127.0.0.1 with ``handler(request_body)``, one at a time."""

    def __init__(self, handler: Callable[[bytes], Reply]) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []  # each request's line and headers
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._serve_connection(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            self.heads.append(head)
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(buffer) < length:
                buffer += conn.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
            raw, close = self.handler(body)
            conn.sendall(raw)
            if close:
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[bytes], Reply]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(handler: Callable[[bytes], Reply]) -> ScriptedServer:
        servers.append(ScriptedServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def replies(*script: Reply) -> Callable[[bytes], Reply]:
    queue = list(script)
    return lambda _body: queue.pop(0)


# ---------------------------------------------------------------- transport behaviour


def test_reconnects_once_when_a_kept_alive_connection_was_dropped(scripted: Any) -> None:
    server = scripted(replies((jsonrpc_ok("0x1"), True), (jsonrpc_ok("0x2"), False)))
    with RpcClient(server.url, timeout_s=5) as client:
        assert client.call("eth_blockNumber") == "0x1"
        time.sleep(0.05)  # the server has closed the idle connection
        assert client.call("eth_blockNumber") == "0x2"
    assert server.connections == 2


def test_keep_alive_uses_one_connection(scripted: Any) -> None:
    server = scripted(lambda _body: (jsonrpc_ok("0x1"), False))
    with RpcClient(server.url, timeout_s=5) as client:
        for _ in range(20):
            client.call("eth_chainId")
    assert server.connections == 1


def test_http_429_is_transient_and_keeps_retry_after(scripted: Any) -> None:
    server = scripted(replies((http_response(429, b"slow down", {"Retry-After": "3"}), False)))
    with RpcClient(server.url, timeout_s=5) as client, pytest.raises(TransientRPCError) as info:
        client.call("eth_getLogs", [{}])
    assert info.value.code == 429
    assert retry_after_s(info.value) == 3.0
    assert "eth_getLogs" in str(info.value)
    assert server.url in str(info.value)


@pytest.mark.parametrize(
    ("raw", "close"),
    [
        (http_response(503, b"upstream down"), False),
        (http_response(200, b"<html>gateway</html>"), False),
        (http_response(200, b'{"jsonrpc":"2.0","id":1,"res'), False),  # truncated JSON
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}", True),  # body cut short
    ],
    ids=["503", "html", "truncated-json", "short-body"],
)
def test_server_and_body_failures_are_transient(scripted: Any, raw: bytes, close: bool) -> None:
    server = scripted(replies((raw, close)))
    with RpcClient(server.url, timeout_s=5) as client, pytest.raises(TransientRPCError):
        client.call("eth_blockNumber")


def test_jsonrpc_error_sent_with_an_http_error_status_is_decoded(scripted: Any) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid params"}}'
    server = scripted(replies((http_response(400, body), False)))
    with RpcClient(server.url, timeout_s=5) as client, pytest.raises(RPCError) as info:
        client.call("eth_getBalance", ["nope"])
    assert info.value.code == -32602
    assert not isinstance(info.value, TransientRPCError)
    assert "invalid params" in str(info.value)


def test_batch_answers_out_of_order_are_matched_by_id(scripted: Any) -> None:
    def reversed_echo(body: bytes) -> Reply:
        requests = json.loads(body)
        answers = [{"jsonrpc": "2.0", "id": r["id"], "result": r["method"]} for r in requests]
        return http_response(200, json.dumps(answers[::-1]).encode()), False

    server = scripted(reversed_echo)
    with RpcClient(server.url, timeout_s=5) as client:
        calls = [(f"m{i}", ()) for i in range(5)]
        assert client.batch(calls) == ["m0", "m1", "m2", "m3", "m4"]
        assert client.batch(calls) == ["m0", "m1", "m2", "m3", "m4"]  # fresh ids each time


def test_unreachable_url_is_a_connection_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with RpcClient(url, timeout_s=2) as client, pytest.raises(RPCConnectionError) as info:
        client.call("eth_chainId")
    assert url in str(info.value)
    assert "is the node running?" in str(info.value)
    assert info.value.url == url


def test_wait_for_rpc_times_out_on_unreachable_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RPCConnectionError, match="no answer from"):
        wait_for_rpc(url, timeout_s=0.3)
    assert time.monotonic() - started < 5


def test_rejects_non_http_urls() -> None:
    with pytest.raises(RPCError, match=r"unsupported RPC URL: 'ws://127\.0\.0\.1:8545' is a Web"):
        RpcClient("ws://127.0.0.1:8545")
    with pytest.raises(RPCError, match=r"'https://u:\*\*\*@rpc\.example:x/' is not a URL"):
        RpcClient("https://u:hunter2@rpc.example:x/")


def test_errors_never_quote_the_urls_credentials(scripted: Any) -> None:
    """Neither the URL in the message nor a server that echoes the key gives it away."""
    key = "AbCdEf0123456789xyzKEY"
    dead = f"http://me:hunter2@127.0.0.1:{free_port()}/v2/{key}?apikey=sEcReT"
    with RpcClient(dead, timeout_s=2) as client, pytest.raises(RPCConnectionError) as refused:
        client.call("eth_chainId")
    echo = http_response(401, f"unknown API key {key} (apikey=sEcReT)".encode())
    server = scripted(replies((echo, False)))
    port = server.url.rpartition(":")[2]
    url = f"http://me:hunter2@127.0.0.1:{port}/v2/{key}?apikey=sEcReT"
    with RpcClient(url, timeout_s=2) as client, pytest.raises(RPCError) as denied:
        client.call("eth_chainId")
    for error in (refused.value, denied.value):
        message = str(error)
        for secret in ("hunter2", key, "sEcReT"):
            assert secret not in message
        assert "me:***@127.0.0.1:" in message
        assert "/v2/***?apikey=***" in message
    assert "HTTP 401 unknown API key ***" in str(denied.value)
    assert denied.value.url == url  # as configured: what was connected to


def test_credentials_in_the_url_are_sent_as_basic_auth(scripted: Any) -> None:
    """A provider behind HTTP basic auth (``user:password@`` in the URL) gets them in the
    Authorization header, percent-decoded, as aiohttp sends them for the indexer."""
    server = scripted(replies((jsonrpc_ok("0x1"), False), (jsonrpc_ok("0x1"), False)))
    port = server.url.rpartition(":")[2]
    with RpcClient(f"http://me:p%40ss@127.0.0.1:{port}/") as client:
        assert client.call("eth_chainId") == "0x1"
    with RpcClient(server.url) as client:
        assert client.call("eth_chainId") == "0x1"
    sent = [
        [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization:")]
        for head in server.heads
    ]
    assert sent == [[b"Authorization: Basic " + base64.b64encode(b"me:p@ss")], []]


# ---------------------------------------------------------------- pure classification


def test_match_batch_responses_pairs_by_id_in_any_order() -> None:
    responses = [
        {"jsonrpc": "2.0", "id": 12, "error": {"code": -32601, "message": "Method not found"}},
        {"jsonrpc": "2.0", "id": 10, "result": "a"},
        {"jsonrpc": "2.0", "id": 99, "result": "stranger"},
    ]
    out = match_batch_responses(responses, 10, ["m_a", "m_b", "m_c"], url=URL)
    assert out[0] == "a"
    assert isinstance(out[1], TransientRPCError)
    assert "m_b" in str(out[1])
    assert "no response" in str(out[1])
    assert isinstance(out[2], RPCError)
    assert out[2].code == -32601
    assert "m_c" in str(out[2])


def test_match_batch_responses_keeps_null_results() -> None:
    out = match_batch_responses(
        [{"id": 1, "result": None}], 1, ["eth_getTransactionReceipt"], url=URL
    )
    assert out == [None]


@pytest.mark.parametrize(
    ("exc", "kind", "words"),
    [
        (ConnectionRefusedError(111, "refused"), RPCConnectionError, "connection refused"),
        (ConnectionResetError(104, "reset"), RPCConnectionError, "closed by the server"),
        (socket.gaierror(-2, "Name or service not known"), RPCConnectionError, "resolve"),
        (ssl.SSLError("bad cert"), RPCConnectionError, "TLS"),
        (TimeoutError("timed out"), TransientRPCError, "timed out"),
        (OSError(101, "Network is unreachable"), RPCConnectionError, "unreachable"),
    ],
)
def test_classify_transport_error(exc: BaseException, kind: type, words: str) -> None:
    error = classify_transport_error(exc, url=URL, method="eth_call")
    assert type(error) is kind
    assert words in str(error)
    assert URL in str(error)
    assert "eth_call" in str(error)


def test_timeout_is_transient_but_not_a_connection_error() -> None:
    error = classify_transport_error(TimeoutError(), url=URL, method="eth_call")
    assert not isinstance(error, RPCConnectionError)


@pytest.mark.parametrize(
    ("status", "transient"), [(429, True), (500, True), (502, True), (401, False), (404, False)]
)
def test_classify_http_status(status: int, transient: bool) -> None:
    error = classify_http_status(status, url=URL, method="eth_call", body=b"details")
    assert isinstance(error, TransientRPCError) is transient
    assert error.code == status
    assert f"HTTP {status}" in str(error)
    assert "details" in str(error)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    error = classify_http_status(429, url=URL, method="m", retry_after="2.5")
    assert retry_after_s(error) == 2.5
    past = classify_http_status(
        503, url=URL, method="m", retry_after="Wed, 21 Oct 2015 07:28:00 GMT"
    )
    assert retry_after_s(past) == 0.0
    assert retry_after_s(classify_http_status(503, url=URL, method="m")) is None
    assert retry_after_s(ValueError()) is None


def test_parse_response_body_rejects_non_json() -> None:
    assert parse_response_body(b'{"a":1}', url=URL, method="m") == {"a": 1}
    with pytest.raises(TransientRPCError, match="not valid JSON"):
        parse_response_body(b"\xff\xfe garbage", url=URL, method="m")


ERROR_BOOM = (
    "0x08c379a0"
    "0000000000000000000000000000000000000000000000000000000000000020"
    "0000000000000000000000000000000000000000000000000000000000000004"
    "626f6f6d00000000000000000000000000000000000000000000000000000000"
)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"code": 3, "message": "execution reverted: boom", "data": ERROR_BOOM}, "boom"),
        ({"code": -32000, "message": "execution reverted", "data": {"data": ERROR_BOOM}}, "boom"),
        ({"code": -32000, "message": "execution reverted: from message"}, "from message"),
        ({"code": -32000, "message": "execution reverted"}, None),
        ({"code": 3, "message": "x", "data": "0xdeadbeef00"}, "0xdeadbeef"),
    ],
)
def test_classify_rpc_error_decodes_reverts(error: dict[str, Any], reason: str | None) -> None:
    classified = classify_rpc_error(error, url=URL, method="eth_call")
    assert isinstance(classified, ExecutionRevertedError)
    assert classified.reason == reason
    assert "eth_call" in str(classified)
    assert URL in str(classified)


def test_classify_rpc_error_plain_and_transient() -> None:
    plain = classify_rpc_error({"code": -32601, "message": "Method not found"}, url=URL, method="m")
    assert type(plain) is RPCError
    assert plain.code == -32601
    assert "Method not found" in str(plain)
    limited = classify_rpc_error({"code": -32005, "message": "limit exceeded"}, url=URL, method="m")
    assert isinstance(limited, TransientRPCError)
    odd = classify_rpc_error("just a string", url=URL, method="m")
    assert type(odd) is RPCError


def test_hex_helpers() -> None:
    assert hex_to_int("0x1a") == 26
    assert hex_to_int("0x") == 0
    assert to_hex(26) == "0x1a"
    assert to_hex(0) == "0x0"
    for bad in ("26", "", None):
        with pytest.raises(ValueError, match="hex quantity"):
            hex_to_int(bad)  # type: ignore[arg-type]
    for bad_int in (-1, True, 1.5):
        with pytest.raises(ValueError, match="non-negative int"):
            to_hex(bad_int)  # type: ignore[arg-type]


# ---------------------------------------------------------------- against a real anvil

REVERTER_SOURCE = """
// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;
contract Reverter {
    error Nope(uint256 code);
    function fail() external pure { revert("boom: not allowed"); }
    function overflow(uint8 x) external pure returns (uint8) { return x + 255; }
    function custom() external pure { revert Nope(7); }
    function ok() external pure returns (uint256) { return 42; }
}
"""

COMPILE_JS = """
const solc = require(process.argv[1]);
const input = {language: 'Solidity', sources: {'R.sol': {content: process.argv[2]}},
  settings: {outputSelection: {'*': {'*': ['evm.bytecode.object']}}}};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter(e => e.severity === 'error');
if (errors.length) { console.error(JSON.stringify(errors)); process.exit(1); }
process.stdout.write(out.contracts['R.sol'].Reverter.evm.bytecode.object);
"""


@pytest.fixture(scope="module")
def reverter_bytecode() -> str:
    """Init code of ``Reverter``, compiled with the pinned solcjs (standard JSON)."""
    node = shutil.which("node")
    assert node, "node not found; install Node 20+ and run `npm ci`"
    solc = REPO_ROOT / "node_modules" / "solc"
    result = subprocess.run(
        [node, "-e", COMPILE_JS, str(solc), REVERTER_SOURCE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return "0x" + result.stdout.strip()


@pytest.fixture
def reverter(anvil_rpc: RpcClient, reverter_bytecode: str) -> str:
    deployer = anvil_rpc.call("eth_accounts")[0]
    tx = anvil_rpc.call("eth_sendTransaction", [{"from": deployer, "data": reverter_bytecode}])
    deadline = time.monotonic() + 10
    while (receipt := anvil_rpc.call("eth_getTransactionReceipt", [tx])) is None:
        assert time.monotonic() < deadline, "deployment was never mined"
        time.sleep(0.01)
    assert receipt["status"] == "0x1"
    return str(receipt["contractAddress"])


@pytest.mark.chain
def test_call_and_batch_against_anvil(anvil_rpc: RpcClient) -> None:
    assert hex_to_int(anvil_rpc.call("eth_chainId")) == 31337
    assert anvil_rpc.batch([]) == []
    chain_id, block, accounts = anvil_rpc.batch(
        [("eth_chainId", ()), ("eth_blockNumber", []), ("eth_accounts", [])]
    )
    assert (chain_id, block, len(accounts)) == ("0x7a69", "0x0", 10)


@pytest.mark.chain
def test_batch_errors_in_place_or_raised(anvil_rpc: RpcClient) -> None:
    calls = [("eth_chainId", ()), ("eth_noSuchMethod", ()), ("eth_blockNumber", ())]
    results = anvil_rpc.batch(calls, raise_on_error=False)
    assert results[0] == "0x7a69"
    assert isinstance(results[1], RPCError)
    assert "eth_noSuchMethod" in str(results[1])
    assert results[2] == "0x0"
    with pytest.raises(RPCError, match="eth_noSuchMethod"):
        anvil_rpc.batch(calls)


@pytest.mark.chain
def test_wait_for_rpc_returns_the_chain_id(anvil_factory: Any) -> None:
    node = anvil_factory(chain_id=8453)
    assert wait_for_rpc(node.url, timeout_s=5) == 8453


@pytest.mark.chain
@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (encode_call("fail()"), "boom: not allowed"),
        (encode_call("overflow(uint8)", 3), "panic 0x11 (arithmetic underflow or overflow)"),
        (encode_call("custom()"), "0x" + selector("Nope(uint256)").hex()),
    ],
    ids=["error-string", "panic", "custom-error"],
)
def test_eth_call_revert_is_decoded(
    anvil_rpc: RpcClient, reverter: str, call: str, reason: str
) -> None:
    with pytest.raises(ExecutionRevertedError) as info:
        anvil_rpc.call("eth_call", [{"to": reverter, "data": call}, "latest"])
    assert info.value.reason == reason
    assert reason in str(info.value)
    assert "\x00" not in str(info.value)


@pytest.mark.chain
def test_eth_call_success_and_estimate_gas_revert(anvil_rpc: RpcClient, reverter: str) -> None:
    result = anvil_rpc.call("eth_call", [{"to": reverter, "data": encode_call("ok()")}, "latest"])
    assert hex_to_int(result) == 42
    with pytest.raises(ExecutionRevertedError) as info:
        anvil_rpc.call("eth_estimateGas", [{"to": reverter, "data": encode_call("fail()")}])
    assert info.value.reason == "boom: not allowed"
