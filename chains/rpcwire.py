"""JSON-RPC on the wire for the async client: codec, one HTTP POST, and what went wrong.

Everything here is one attempt against one endpoint; retries, ranking and the chain check
are :mod:`chains.aiorpc`'s. A failed attempt raises :class:`AttemptError`, which carries
the ``RPCError`` a caller may see (classified as in :mod:`chains.rpc`) and a short
``kind`` for the per-endpoint counters: ``timeout``, ``connection``, ``truncated``,
``http_429``, ``http_5xx``, ``http_<status>``, ``invalid_json``, ``rpc_transient``,
``rpc_error``, ``reverted``, ``throttled``, ``chain_id_mismatch``, ``genesis_mismatch``.

Invariants:

- JSON is encoded and parsed with orjson when installed, else with the standard library;
  both give the same Python values.
- ``eth_getLogs`` range-limit errors ("query returned more than 10000 results", "Log
  response size exceeded ...") are plain, non-transient ``RPCError`` whose message holds
  the provider's whole message and its ``data``, where providers put a suggested range.
- Batch answers are matched to requests by id, never by position.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from chains.exceptions import (
    ExecutionRevertedError,
    RPCConnectionError,
    RPCError,
    TransientRPCError,
)
from chains.rpc import (
    CONNECTION_FIX,
    classify_http_status,
    classify_rpc_error,
    classify_transport_error,
)

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency, but the client works without it
    orjson = None  # type: ignore[assignment]

__all__ = [
    "AttemptError",
    "batch_results",
    "classify_error_object",
    "dumps",
    "error_kind",
    "invalid",
    "is_range_limit_message",
    "loads",
    "parse",
    "post",
    "request",
    "result_of",
    "rpc_failure",
]

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_HTTP_OK = 200
_HTTP_SERVER_ERROR = 500
_SNIPPET = 200
_RANGE_LIMIT_MESSAGES = (
    "query returned more than",  # Infura, geth-style nodes
    "response size exceeded",  # Alchemy
    "is limited to a",  # QuickNode: "eth_getLogs is limited to a 10,000 range"
    "block range too large",
    "block range is too large",
    "range is too large",
    "too many blocks",
    "maximum block range",
    "max block range",
)


def loads(data: bytes) -> Any:
    """Parse JSON (orjson when installed); raises ``ValueError`` on invalid input."""
    return orjson.loads(data) if orjson is not None else json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (orjson when installed; the stdlib for ints beyond 64 bits)."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:
            pass
    return json.dumps(value, separators=(",", ":")).encode()


def request(request_id: int, method: str, params: Sequence[Any]) -> dict[str, Any]:
    """One JSON-RPC 2.0 request object."""
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def is_range_limit_message(message: str) -> bool:
    """Whether a provider's error message says an ``eth_getLogs`` range was too large."""
    lowered = message.lower()
    return any(pattern in lowered for pattern in _RANGE_LIMIT_MESSAGES)


def classify_error_object(error: Any, *, url: str, method: str) -> RPCError:
    """:func:`chains.rpc.classify_rpc_error`, except for ``eth_getLogs`` range limits.

    Those are never transient (the caller must shrink the range; Infura sends them with
    the rate-limit code -32005) and keep the provider's whole message plus ``data``.
    """
    if method == "eth_getLogs" and isinstance(error, Mapping):
        message = str(error.get("message", ""))
        if is_range_limit_message(message):
            code = error.get("code")
            code = code if isinstance(code, int) else None
            data = error.get("data")
            suffix = f" data={dumps(data).decode()}" if data is not None else ""
            text = f"{method} on {url} failed: JSON-RPC {code}: {message}{suffix}"
            return RPCError(text, code=code, url=url, data=data)
    return classify_rpc_error(error, url=url, method=method)


class AttemptError(Exception):
    """One attempt failed: ``error`` is what a caller may see, ``kind`` labels the stats.

    ``penalise`` says whether the failure counts against the endpoint's health (by default
    when the error is transient: a revert is the caller's problem, not the node's).
    """

    def __init__(
        self,
        kind: str,
        error: RPCError,
        *,
        cause: BaseException | None = None,
        penalise: bool | None = None,
    ) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error
        if cause is not None:
            error.__cause__ = cause
        self.penalise = isinstance(error, TransientRPCError) if penalise is None else penalise


def error_kind(error: RPCError) -> str:
    if isinstance(error, ExecutionRevertedError):
        return "reverted"
    return "rpc_transient" if isinstance(error, TransientRPCError) else "rpc_error"


def rpc_failure(error: Any, *, url: str, method: str) -> AttemptError:
    """The attempt error for a JSON-RPC ``error`` member."""
    classified = classify_error_object(error, url=url, method=method)
    return AttemptError(error_kind(classified), classified)


def invalid(label: str, url: str, what: str) -> AttemptError:
    return AttemptError("invalid_json", TransientRPCError(f"{label} on {url}: {what}", url=url))


def parse(raw: bytes, *, url: str, label: str) -> Any:
    """Decode a response body; invalid or cut-off JSON is a transient ``invalid_json``."""
    try:
        return loads(raw)
    except ValueError:
        snippet = raw[:_SNIPPET].decode("utf-8", "replace")
        raise invalid(label, url, f"response is not valid JSON (truncated?): {snippet!r}") from None


def result_of(raw: bytes, *, url: str, method: str) -> Any:
    """The ``result`` of a single JSON-RPC response body, or raise its error."""
    reply = parse(raw, url=url, label=method)
    if not isinstance(reply, dict):
        raise invalid(method, url, f"expected a JSON object, got {reply!r:.200}")
    if reply.get("error") is not None:
        raise rpc_failure(reply["error"], url=url, method=method)
    if "result" not in reply:
        raise invalid(method, url, "reply has no result")
    return reply["result"]


def batch_results(
    raw: bytes, first_id: int, methods: Sequence[str], *, url: str, label: str
) -> list[Any]:
    """Results (or classified ``RPCError``) of requests ``first_id, first_id + 1, ...``."""
    replies = parse(raw, url=url, label=label)
    if isinstance(replies, dict) and replies.get("error") is not None:
        raise rpc_failure(replies["error"], url=url, method=label)
    if not isinstance(replies, list):
        raise invalid(label, url, f"expected a JSON array, got {replies!r:.200}")
    by_id = {r.get("id"): r for r in replies if isinstance(r, Mapping)}
    out: list[Any] = []
    for offset, method in enumerate(methods):
        reply = by_id.get(first_id + offset)
        if reply is None:
            out.append(TransientRPCError(f"{method} on {url}: no response in batch", url=url))
        elif reply.get("error") is not None:
            out.append(classify_error_object(reply["error"], url=url, method=method))
        elif "result" not in reply:
            out.append(TransientRPCError(f"{method} on {url}: reply has no result", url=url))
        else:
            out.append(reply["result"])
    return out


async def post(
    session: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    *,
    label: str,
    timeout_s: float,
    trace_ctx: object = None,
) -> tuple[bytes, float]:
    """POST ``payload`` once; return (body, latency_s) or raise a classified attempt error.

    A non-200 status decides the error unless the body is a JSON-RPC response (some
    servers send JSON-RPC errors with 4xx/5xx): 429 and 5xx are transient, with the
    server's ``Retry-After`` kept on the error.
    """
    start = time.monotonic()
    try:
        async with session.post(
            url,
            data=payload,
            headers=_HEADERS,
            timeout=aiohttp.ClientTimeout(total=max(timeout_s, 0.001)),
            trace_request_ctx=trace_ctx,
        ) as response:
            raw = await response.read()
            status, retry_after = response.status, response.headers.get("Retry-After")
    except TimeoutError as exc:
        error = classify_transport_error(exc, url=url, method=label)
        raise AttemptError("timeout", error, cause=exc) from exc
    except aiohttp.ClientConnectorError as exc:
        error = classify_transport_error(exc.os_error, url=url, method=label)
        raise AttemptError("connection", error, cause=exc) from exc
    except aiohttp.ClientPayloadError as exc:
        text = f"{label} on {url}: the response was cut off ({exc})"
        raise AttemptError("truncated", TransientRPCError(text, url=url), cause=exc) from exc
    except (aiohttp.ClientError, OSError) as exc:
        text = (
            f"{label} on {url}: connection closed by the server "
            f"({type(exc).__name__}: {exc}); {CONNECTION_FIX}"
        )
        raise AttemptError("connection", RPCConnectionError(text, url=url), cause=exc) from exc
    latency_s = time.monotonic() - start
    if status != _HTTP_OK and not _looks_like_jsonrpc(raw):
        failure: RPCError = classify_http_status(
            status, url=url, method=label, retry_after=retry_after, body=raw
        )
        if isinstance(failure, TransientRPCError):
            kind = "http_5xx" if status >= _HTTP_SERVER_ERROR else f"http_{status}"
            raise AttemptError(kind, failure)
        raise AttemptError(f"http_{status}", failure, penalise=True)  # a wrong URL or API key
    return raw, latency_s


def _looks_like_jsonrpc(raw: bytes) -> bool:
    if raw.lstrip()[:1] not in (b"{", b"["):
        return False
    try:
        parsed = loads(raw)
    except ValueError:
        return False
    first = parsed[0] if isinstance(parsed, list) and parsed else parsed
    return isinstance(first, dict) and "jsonrpc" in first
