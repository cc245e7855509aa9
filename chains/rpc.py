"""A fast synchronous JSON-RPC client over one keep-alive HTTP connection.

Used by the deployer, the scenario seeder and the keepers, which send many small requests
in sequence; the async client of the indexer reuses the error classification below, which
is made of pure module-level functions so it can be unit-tested without a network.

Invariants:

- One ``RpcClient`` owns at most one open connection and is not thread-safe; use one
  client per thread.
- A request is re-sent only when a *reused* keep-alive connection turns out to have been
  closed by the server before answering; nothing else is retried here (the caller
  decides, guided by :class:`~chains.exceptions.TransientRPCError`).
- Every error message names the JSON-RPC method, the URL and what to do next; the URL's
  credentials are hidden there (every :class:`~chains.exceptions.RPCError` hides those
  of its ``url``), while ``RpcClient.url`` and the error's ``url`` stay as configured.
  Errors that may succeed on retry are ``TransientRPCError`` (``RPCConnectionError``
  when the endpoint could not be reached); a revert is ``ExecutionRevertedError`` with
  ``reason`` decoded from the revert data; anything else is a plain ``RPCError`` with
  its ``code``.
- Batch responses are matched to requests by id, never by position.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import ssl
import time
from base64 import b64encode
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from chains.abi import decode_revert
from chains.exceptions import (
    ExecutionRevertedError,
    RPCConnectionError,
    RPCError,
    TransientRPCError,
)
from chains.urls import rpc_url_problem

__all__ = [
    "RpcClient",
    "classify_http_status",
    "classify_rpc_error",
    "classify_transport_error",
    "hex_to_int",
    "match_batch_responses",
    "parse_response_body",
    "retry_after_s",
    "to_hex",
    "wait_for_rpc",
]

CONNECTION_FIX = "is the node running? check rpc_urls in rtrm.toml"
HTTP_OK = 200
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500
JSONRPC_EXECUTION_ERROR = 3  # geth/anvil: "execution reverted" with revert data
JSONRPC_LIMIT_EXCEEDED = -32005  # EIP-1474 "limit exceeded" (rate limiting providers)
_TRANSIENT_MESSAGES = ("rate limit", "too many requests", "header not found", "timeout")
_BODY_SNIPPET_CHARS = 200
_REUSED_CONNECTION_DROPS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_Call = tuple[str, Sequence[Any]]
_JSON = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps(**kw) builds one per call


class RpcClient:
    """Synchronous JSON-RPC over HTTP(S) with a persistent keep-alive connection."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        if (problem := rpc_url_problem(url)) is not None:
            raise RPCError(f"unsupported RPC URL: {problem}", url=url)
        parts = urlsplit(url)
        self.url = url
        self.timeout_s = timeout_s
        self._https = parts.scheme == "https"
        self._host = str(parts.hostname)  # rpc_url_problem: there is one
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if parts.username is not None:  # user:password@ in the URL: HTTP basic auth
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + b64encode(user.encode()).decode()
        self._conn: http.client.HTTPConnection | None = None
        self._used = False  # has the open connection completed a request already?
        self._next_id = 1

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Send one request and return its ``result``; raise a classified ``RPCError``."""
        request_id = self._next_id
        self._next_id += 1
        body = _JSON.encode(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        )
        reply = parse_response_body(self._post(body.encode(), method), url=self.url, method=method)
        if not isinstance(reply, dict):
            raise TransientRPCError(
                f"{method} on {self.url}: expected a JSON object, got {_snippet(reply)}",
                url=self.url,
            )
        error = reply.get("error")
        if error is not None:
            raise classify_rpc_error(error, url=self.url, method=method)
        if "result" not in reply:
            raise TransientRPCError(f"{method} on {self.url}: reply has no result", url=self.url)
        return reply["result"]

    def batch(self, calls: Sequence[_Call], *, raise_on_error: bool = True) -> list[Any]:
        """Send ``calls`` as one JSON array; results come back in request order.

        With ``raise_on_error=False`` a failed call's slot holds its ``RPCError`` instead
        of raising the first one.
        """
        if not calls:
            return []
        first_id = self._next_id
        self._next_id += len(calls)
        requests = [
            {"jsonrpc": "2.0", "id": first_id + i, "method": method, "params": params}
            for i, (method, params) in enumerate(calls)
        ]
        label = f"batch of {len(calls)} ({calls[0][0]}, ...)"
        raw = self._post(_JSON.encode(requests).encode(), label)
        reply = parse_response_body(raw, url=self.url, method=label)
        if isinstance(reply, dict) and reply.get("error") is not None:
            raise classify_rpc_error(reply["error"], url=self.url, method=label)
        if not isinstance(reply, list):
            raise TransientRPCError(
                f"{label} on {self.url}: expected a JSON array, got {_snippet(reply)}",
                url=self.url,
            )
        methods = [method for method, _ in calls]
        results = match_batch_responses(reply, first_id, methods, url=self.url)
        if raise_on_error:
            for result in results:
                if isinstance(result, RPCError):
                    raise result
        return results

    def close(self) -> None:
        """Close the connection; the client reconnects if used again."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._used = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = _NoDelayHTTPSConnection if self._https else _NoDelayHTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
            self._used = False
        return self._conn

    def _post(self, body: bytes, method: str) -> bytes:
        """POST ``body``; re-send once if a reused keep-alive connection was dropped."""
        while True:
            conn = self._connection()
            reused = self._used
            try:
                conn.request("POST", self._path, body, self._headers)
                response = conn.getresponse()
                data = response.read()
            except _REUSED_CONNECTION_DROPS as exc:
                self.close()
                if reused:
                    continue
                raise classify_transport_error(exc, url=self.url, method=method) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise classify_transport_error(exc, url=self.url, method=method) from exc
            self._used = True
            if response.will_close:
                self.close()
            if response.status != HTTP_OK and not _looks_like_jsonrpc(data):
                retry_after = response.getheader("Retry-After")
                raise classify_http_status(
                    response.status, url=self.url, method=method, retry_after=retry_after, body=data
                )
            return data


class _NoDelayHTTPConnection(http.client.HTTPConnection):
    """http.client writes headers and body separately; with Nagle's algorithm and delayed
    ACKs that can stall every request by ~40 ms (seen against anvil), so disable Nagle."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoDelayHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ---------------------------------------------------------------- classification


def classify_transport_error(exc: BaseException, *, url: str, method: str) -> TransientRPCError:
    """Map a socket/HTTP-level failure to the error a caller should see."""
    where = f"{method} on {url}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransientRPCError(
            f"{where} timed out; the node may be overloaded ({CONNECTION_FIX})", url=url
        )
    if isinstance(exc, ConnectionRefusedError):
        return RPCConnectionError(
            f"cannot connect to {url} ({method}): connection refused; {CONNECTION_FIX}", url=url
        )
    if isinstance(exc, socket.gaierror):
        return RPCConnectionError(
            f"cannot resolve the host of {url} ({method}): {exc}; check rpc_urls in rtrm.toml",
            url=url,
        )
    if isinstance(exc, ssl.SSLError):
        return RPCConnectionError(f"TLS error talking to {url} ({method}): {exc}", url=url)
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionError):
        return RPCConnectionError(
            f"{where}: connection closed by the server ({exc}); {CONNECTION_FIX}", url=url
        )
    if isinstance(exc, OSError):
        return RPCConnectionError(
            f"cannot reach {url} ({method}): {exc}; {CONNECTION_FIX}", url=url
        )
    return TransientRPCError(f"{where}: malformed HTTP response ({exc!r})", url=url)


def classify_http_status(
    status: int, *, url: str, method: str, retry_after: str | None = None, body: bytes = b""
) -> RPCError:
    """Map a non-200 HTTP status (without a JSON-RPC body) to an error.

    429 and 5xx are transient; the parsed ``Retry-After`` (seconds) is kept on the error
    as ``retry_after_s`` (read it with :func:`retry_after_s`).
    """
    text = body[:_BODY_SNIPPET_CHARS].decode("utf-8", "replace").strip()
    where = f"{method} on {url}: HTTP {status}"
    if status == HTTP_TOO_MANY_REQUESTS or status >= HTTP_SERVER_ERROR:
        reason = "rate limited" if status == HTTP_TOO_MANY_REQUESTS else "server error"
        error = TransientRPCError(f"{where} ({reason}) {text}".rstrip(), code=status, url=url)
        error.retry_after_s = _parse_retry_after(retry_after)  # type: ignore[attr-defined]
        return error
    return RPCError(
        f"{where} {text}".rstrip() + "; check the URL (and API key) in rpc_urls in rtrm.toml",
        code=status,
        url=url,
    )


def retry_after_s(error: BaseException) -> float | None:
    """Seconds the server asked us to wait before retrying, if it said so."""
    value = getattr(error, "retry_after_s", None)
    return float(value) if value is not None else None


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def parse_response_body(raw: bytes, *, url: str, method: str) -> Any:
    """Decode a JSON-RPC response body; a non-JSON or truncated body is transient."""
    try:
        return json.loads(raw)
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        snippet = raw[:_BODY_SNIPPET_CHARS].decode("utf-8", "replace")
        raise TransientRPCError(
            f"{method} on {url}: response is not valid JSON (truncated?): {snippet!r}", url=url
        ) from None


def classify_rpc_error(error: Any, *, url: str, method: str) -> RPCError:
    """Map a JSON-RPC ``error`` object to the matching ``RPCError`` subclass."""
    if not isinstance(error, Mapping):
        return RPCError(f"{method} on {url} failed: {_snippet(error)}", url=url)
    code = error.get("code")
    code = code if isinstance(code, int) else None
    message = _printable(str(error.get("message", "")))
    data = _revert_data(error.get("data"))
    lowered = message.lower()
    if "revert" in lowered or (code == JSONRPC_EXECUTION_ERROR and data is not None):
        reason = decode_revert(data) if data else _reason_from_message(message)
        return ExecutionRevertedError(
            f"{method} on {url} reverted: {reason or 'no reason given'} "
            f"(JSON-RPC {code}: {message})",
            reason=reason,
            code=code,
            url=url,
        )
    text = f"{method} on {url} failed: JSON-RPC {code}: {message}"
    if code == JSONRPC_LIMIT_EXCEEDED or any(m in lowered for m in _TRANSIENT_MESSAGES):
        return TransientRPCError(text, code=code, url=url)
    return RPCError(text, code=code, url=url)


def _revert_data(data: Any) -> str | None:
    """Revert data as hex: a bare string, or nested as ``{"data": "0x..."}`` by some nodes."""
    if isinstance(data, Mapping):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return data
    return None


def _reason_from_message(message: str) -> str | None:
    """Anvil and geth put the decoded reason after "execution reverted:" in the message."""
    _, sep, rest = message.partition("execution reverted:")
    reason = rest.strip()
    return reason if sep and reason else None


def match_batch_responses(
    responses: Sequence[Any], first_id: int, methods: Sequence[str], *, url: str
) -> list[Any]:
    """Pair batch ``responses`` (any order) with requests ``first_id, first_id + 1, ...``.

    Returns each result, or the classified ``RPCError`` in that request's slot; a missing
    response becomes a ``TransientRPCError`` (the node dropped it).
    """
    by_id = {r.get("id"): r for r in responses if isinstance(r, Mapping)}
    out: list[Any] = []
    for offset, method in enumerate(methods):
        reply = by_id.get(first_id + offset)
        if reply is None:
            out.append(TransientRPCError(f"{method} on {url}: no response in batch", url=url))
        elif reply.get("error") is not None:
            out.append(classify_rpc_error(reply["error"], url=url, method=method))
        elif "result" not in reply:
            out.append(TransientRPCError(f"{method} on {url}: reply has no result", url=url))
        else:
            out.append(reply["result"])
    return out


def _looks_like_jsonrpc(data: bytes) -> bool:
    """Some servers send JSON-RPC errors with HTTP 4xx/5xx; those bodies decide the error."""
    stripped = data.lstrip()[:1]
    if stripped not in (b"{", b"["):
        return False
    try:
        parsed = json.loads(data)
    except ValueError:
        return False
    first = parsed[0] if isinstance(parsed, list) and parsed else parsed
    return isinstance(first, dict) and "jsonrpc" in first


def _printable(text: str) -> str:
    """Node messages can embed raw revert bytes (anvil prints NULs for custom errors)."""
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()
    return cleaned[:_BODY_SNIPPET_CHARS]


def _snippet(value: Any) -> str:
    return repr(value)[:_BODY_SNIPPET_CHARS]


# ---------------------------------------------------------------- helpers


def wait_for_rpc(url: str, *, timeout_s: float, poll_interval_s: float = 0.05) -> int:
    """Poll ``eth_chainId`` until the node answers; return the chain id.

    Raises ``RPCConnectionError`` naming the URL and the last failure on timeout.
    """
    deadline = time.monotonic() + timeout_s
    last: RPCError | None = None
    with RpcClient(url, timeout_s=max(0.5, min(timeout_s, 2.0))) as client:
        while True:
            try:
                return hex_to_int(client.call("eth_chainId"))
            except TransientRPCError as exc:
                last = exc
                client.close()
            if time.monotonic() >= deadline:
                raise RPCConnectionError(
                    f"no answer from {url} within {timeout_s:g}s (last error: {last}); "
                    f"{CONNECTION_FIX}",
                    url=url,
                )
            time.sleep(poll_interval_s)


def hex_to_int(value: str) -> int:
    """``"0x1a"`` → 26; the bare ``"0x"`` some nodes send for zero → 0."""
    if not isinstance(value, str) or value[:2] not in ("0x", "0X"):
        raise ValueError(f"expected a 0x-prefixed hex quantity, got {value!r}")
    return int(value, 16) if len(value) > 2 else 0  # noqa: PLR2004


def to_hex(value: int) -> str:
    """A JSON-RPC quantity: ``26`` → ``"0x1a"`` (no leading zeros, non-negative)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative int, got {value!r}")
    return hex(value)
