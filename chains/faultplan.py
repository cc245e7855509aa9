"""What a :class:`~chains.faultproxy.FaultProxy` does to each request: the fault plan.

A :class:`FaultPlan` is a frozen description; a :class:`FaultInjector` made from it
decides, request by request, whether to inject one of the transient :class:`Fault` kinds.
:data:`TRANSIENT_FAULTS` are what a client's retries must absorb; ``MALFORMED`` (drawn
like them, never by :meth:`FaultPlan.chaos` unless asked) answers with a header or a log
whose fields are not what JSON-RPC allows (:func:`malform`), which only the caller of the
client can notice. Other behaviours are not drawn by chance but follow from the request:
``eth_getLogs`` over more than ``range_limit_blocks`` blocks gets a provider-style range
error (:func:`range_limit_error`), a method the plan calls unsupported gets JSON-RPC's
"method not found", and a proxy switched to *syncing* rewrites head answers
(:func:`syncing_status`); :func:`local_reply` applies these to one call. An
``eth_getLogs`` answer holding more than ``result_limit`` logs is replaced by Infura's
"query returned more than N results" (:func:`cap_results`), as providers that cap the
response by log count do, whatever the span. Nothing here does I/O, so all of it is
tested without a network.

Invariants:

- Deterministic: the same plan (seed included) and the same sequence of requests give the
  same faults. Each rule draws from the seeded generator once per matching request (when
  its probability is above 0), whether or not an earlier rule already fired.
- Rules are tried in order; the first that fires wins. A rule fires for its n-th matching
  request (n counted per rule, from 1) when ``n <= first_n``, or ``n`` is a multiple of
  ``every_k``, or the draw is below ``probability``. A batch matches a rule when any of
  its methods is in the rule's ``methods`` (an empty set matches everything).
- Block numbers are ints; the range-limit bodies carry them as 0x-hex like providers do.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "TRANSIENT_FAULTS",
    "Fault",
    "FaultInjector",
    "FaultPlan",
    "FaultRule",
    "RangeLimitStyle",
    "block_span",
    "calls_of",
    "cap_results",
    "head_needed",
    "local_reply",
    "malform",
    "needs_head",
    "range_limit_error",
    "syncing_status",
]

_HEAD_TAGS = frozenset({"latest", "pending", "safe", "finalized"})
_SYNCING_METHODS = frozenset({"eth_blockNumber", "eth_syncing", "eth_getBlockByNumber"})
_STALE_TAGS = ("latest", "pending")  # syncing mode answers these from the stale head


class Fault(StrEnum):
    """What the proxy did instead of (or to) a plain pass-through."""

    HTTP_429 = "http_429"  # Too Many Requests, with Retry-After
    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    TIMEOUT = "timeout"  # hold the request for timeout_hold_s, then drop the connection
    TRUNCATE = "truncate"  # forward, then cut the body (a valid HTTP response, bad JSON)
    DROP = "drop"  # close the connection without answering (not forwarded)
    MALFORMED = "malformed"  # forward, then break one header or log (valid JSON, bad fields)
    RANGE_LIMIT = "range_limit"  # eth_getLogs span above the limit (not drawn: by span)
    SYNCING = "syncing"  # an answer rewritten by syncing mode (not drawn: by switch)
    RESULT_LIMIT = "result_limit"  # eth_getLogs answer above the log cap (not drawn: by size)
    UNSUPPORTED = "unsupported"  # a method the plan's node does not offer (not drawn)


TRANSIENT_FAULTS: tuple[Fault, ...] = (
    Fault.HTTP_429,
    Fault.HTTP_500,
    Fault.HTTP_502,
    Fault.HTTP_503,
    Fault.TIMEOUT,
    Fault.TRUNCATE,
    Fault.DROP,
)


class RangeLimitStyle(StrEnum):
    """How a provider words an ``eth_getLogs`` range limit (see :func:`range_limit_error`)."""

    ALCHEMY = "alchemy"  # -32602 "Log response size exceeded. ..." (+ suggested range)
    INFURA = "infura"  # -32005 "query returned more than 10000 results" (+ data from/to)
    QUICKNODE = "quicknode"  # -32614 "eth_getLogs is limited to a 10,000 range"
    GENERIC = "generic"  # -32000 "block range too large"


@dataclass(frozen=True, slots=True)
class FaultRule:
    """Inject ``fault`` by chance, on the first requests, or on every k-th request."""

    fault: Fault
    probability: float = 0.0
    first_n: int = 0
    every_k: int = 0
    methods: frozenset[str] = field(default_factory=frozenset)  # empty: every method

    def __post_init__(self) -> None:
        if self.fault not in (*TRANSIENT_FAULTS, Fault.MALFORMED):
            raise ValueError(
                f"{self.fault} is not drawn per request; use FaultPlan.range_limit_blocks "
                "or FaultProxy.set_syncing"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if self.first_n < 0 or self.every_k < 0:
            raise ValueError("first_n and every_k must be >= 0")
        object.__setattr__(self, "methods", frozenset(self.methods))  # accept any iterable


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Faults to inject and how; the default plan passes everything through."""

    rules: tuple[FaultRule, ...] = ()
    seed: int = 0
    retry_after_s: float = 1.0  # Retry-After of injected 429s (fractions allowed)
    timeout_hold_s: float = 30.0  # keep it above the client's request timeout
    truncate_fraction: float = 0.5  # share of the body kept by TRUNCATE
    delay_s: float = 0.0  # latency added to every answered request
    range_limit_blocks: int | None = None  # eth_getLogs spans above this get an error
    range_limit_style: RangeLimitStyle = RangeLimitStyle.ALCHEMY
    range_limit_hint: bool = True  # include a suggested range (Alchemy, Infura styles)
    result_limit: int | None = None  # eth_getLogs answers with more logs get an error
    unsupported_methods: frozenset[str] = field(default_factory=frozenset)  # "not found"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "unsupported_methods", frozenset(self.unsupported_methods))
        if self.result_limit is not None and self.result_limit < 1:
            raise ValueError(f"result_limit must be >= 1, got {self.result_limit}")
        if self.retry_after_s < 0 or self.timeout_hold_s < 0 or self.delay_s < 0:
            raise ValueError("retry_after_s, timeout_hold_s and delay_s must be >= 0")
        if not 0.0 < self.truncate_fraction < 1.0:
            raise ValueError(f"truncate_fraction must be in (0, 1), got {self.truncate_fraction}")
        if self.range_limit_blocks is not None and self.range_limit_blocks < 1:
            raise ValueError(f"range_limit_blocks must be >= 1, got {self.range_limit_blocks}")

    @classmethod
    def chaos(
        cls,
        rate: float,
        *,
        faults: Sequence[Fault] = TRANSIENT_FAULTS,
        methods: Iterable[str] = (),
        seed: int = 0,
        **options: Any,
    ) -> FaultPlan:
        """Each request gets one of ``faults`` with total probability ``rate``, evenly split.

        Rule i fires with the conditional probability that keeps each fault at
        ``rate / len(faults)`` overall. ``options`` are other :class:`FaultPlan` fields.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        share = rate / len(faults) if faults else 0.0
        only = frozenset(methods)
        rules = tuple(
            FaultRule(fault, probability=min(1.0, share / (1.0 - i * share)), methods=only)
            for i, fault in enumerate(faults)
        )
        return cls(rules=rules, seed=seed, **options)


class FaultInjector:
    """The per-request decisions of one plan (mutable: counters and the seeded generator)."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = random.Random(plan.seed)
        self._matched = [0] * len(plan.rules)

    def draw(self) -> float:
        """A number in [0, 1) from the plan's seeded generator (how a fault is shaped)."""
        return self._rng.random()

    def decide(self, methods: Sequence[str]) -> Fault | None:
        """The fault for a request carrying ``methods`` (one, or a batch's), or None."""
        chosen: Fault | None = None
        for i, rule in enumerate(self.plan.rules):
            if rule.methods and rule.methods.isdisjoint(methods):
                continue
            self._matched[i] += 1
            n = self._matched[i]
            draw = self._rng.random() if rule.probability > 0 else 1.0
            fires = n <= rule.first_n or (rule.every_k > 0 and n % rule.every_k == 0)
            if chosen is None and (fires or draw < rule.probability):
                chosen = rule.fault
        return chosen


def _block_ref(value: Any, head: int | None) -> int | None:
    if value is None:
        value = "latest"
    if isinstance(value, str) and value.startswith(("0x", "0X")):
        return int(value, 16) if len(value) > 2 else 0  # noqa: PLR2004
    if value == "earliest":
        return 0
    if value in _HEAD_TAGS:
        return head
    return None


def needs_head(log_filter: Mapping[str, Any]) -> bool:
    """Whether resolving the filter's block range needs the chain head (a block tag)."""
    if "blockHash" in log_filter:
        return False
    refs = (log_filter.get("fromBlock", "latest"), log_filter.get("toBlock", "latest"))
    return any(ref is None or ref in _HEAD_TAGS for ref in refs)


def block_span(log_filter: Any, head: int | None) -> tuple[int, int] | None:
    """``(fromBlock, toBlock)`` of an ``eth_getLogs`` filter, or None if not a range."""
    if not isinstance(log_filter, Mapping) or "blockHash" in log_filter:
        return None
    start = _block_ref(log_filter.get("fromBlock"), head)
    end = _block_ref(log_filter.get("toBlock"), head)
    if start is None or end is None:
        return None
    return start, end


def _blocks_label(limit: int) -> str:
    return f"{limit // 1000}K" if limit % 1000 == 0 else str(limit)


def range_limit_error(
    style: RangeLimitStyle, *, limit: int, from_block: int, hint: bool
) -> dict[str, Any]:
    """A JSON-RPC ``error`` object as the provider ``style`` sends for a too-large range.

    With ``hint``, Alchemy's message ends with a suggested range and Infura's ``data``
    holds one (``[from_block, from_block + limit - 1]``); QuickNode and the generic
    style never suggest one.
    """
    suggested_to = from_block + limit - 1
    if style is RangeLimitStyle.ALCHEMY:
        message = (
            "Log response size exceeded. You can make eth_getLogs requests with up to a "
            f"{_blocks_label(limit)} block range and no limit on the response size, or you "
            "can request any block range with a cap of 10K logs in the response."
        )
        if hint:
            message += (
                " Based on your parameters, this block range should work: "
                f"[{hex(from_block)}, {hex(suggested_to)}]"
            )
        return {"code": -32602, "message": message}
    if style is RangeLimitStyle.INFURA:
        error: dict[str, Any] = {
            "code": -32005,
            "message": "query returned more than 10000 results",
        }
        if hint:
            error["data"] = {"from": hex(from_block), "to": hex(suggested_to)}
        return error
    if style is RangeLimitStyle.QUICKNODE:
        return {"code": -32614, "message": f"eth_getLogs is limited to a {limit:,} range"}
    return {"code": -32000, "message": "block range too large"}


def syncing_status(head: int, lag_blocks: int) -> tuple[int, dict[str, str]]:
    """The stale head a node ``lag_blocks`` behind reports, and its ``eth_syncing`` object."""
    stale = max(0, head - lag_blocks)
    return stale, {"startingBlock": "0x0", "currentBlock": hex(stale), "highestBlock": hex(head)}


# ---------------------------------------------------------------- local answers


def calls_of(parsed: Any) -> list[dict[str, Any]]:
    """The JSON-RPC calls in a request body (one, a batch, or none if not JSON-RPC)."""
    items = parsed if isinstance(parsed, list) else [parsed]
    return [item for item in items if isinstance(item, dict) and "method" in item]


def head_needed(calls: Sequence[Mapping[str, Any]], plan: FaultPlan, lag: int | None) -> bool:
    for call in calls:
        method = call.get("method")
        if lag is not None and method in _SYNCING_METHODS:
            return True
        if method == "eth_getLogs" and plan.range_limit_blocks is not None:
            log_filter = _first_param(call)
            if isinstance(log_filter, Mapping) and needs_head(log_filter):
                return True
    return False


def _first_param(call: Mapping[str, Any]) -> Any:
    params = call.get("params")
    return params[0] if isinstance(params, list) and params else None


def local_reply(
    call: dict[str, Any], plan: FaultPlan, head: int | None, lag: int | None
) -> tuple[dict[str, Any] | None, Fault | None, dict[str, Any]]:
    """How the proxy treats one call: (its local answer or None, the fault that stands
    for, the call to forward when not answered locally — rewritten in syncing mode)."""
    method = call.get("method")
    request_id = call.get("id")
    if method in plan.unsupported_methods:
        error = {"code": -32601, "message": f"the method {method} does not exist/is not available"}
        return {"jsonrpc": "2.0", "id": request_id, "error": error}, Fault.UNSUPPORTED, call
    limit = plan.range_limit_blocks
    if method == "eth_getLogs" and limit is not None:
        span = block_span(_first_param(call), head)
        if span is not None and span[1] - span[0] + 1 > limit:
            error = range_limit_error(
                plan.range_limit_style, limit=limit, from_block=span[0], hint=plan.range_limit_hint
            )
            return {"jsonrpc": "2.0", "id": request_id, "error": error}, Fault.RANGE_LIMIT, call
    if lag is None or head is None or method not in _SYNCING_METHODS:
        return None, None, call
    stale, status = syncing_status(head, lag)
    if method == "eth_blockNumber":
        return _result(request_id, hex(stale)), Fault.SYNCING, call
    if method == "eth_syncing":
        return _result(request_id, status), Fault.SYNCING, call
    ref = _first_param(call)
    if ref in _STALE_TAGS:  # eth_getBlockByNumber("latest"): the stale head's block
        params = [hex(stale), *call["params"][1:]]
        return None, Fault.SYNCING, {**call, "params": params}
    if isinstance(ref, str) and ref.startswith("0x") and int(ref, 16) > stale:
        return _result(request_id, None), Fault.SYNCING, call  # not synced that far yet
    return None, None, call


def _result(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def cap_results(call: Mapping[str, Any], reply: Any, limit: int, *, hint: bool) -> bool:
    """Replace, in place, ``reply``'s result by Infura's error when ``call`` is an
    ``eth_getLogs`` answered with more than ``limit`` logs; True if it did.

    With ``hint`` the error's ``data`` suggests the range from the filter's ``fromBlock``
    to the block before the one holding log ``limit + 1`` (just that block, if it is the
    first: a suggestion that cannot work, as a provider's cannot either then).
    """
    if call.get("method") != "eth_getLogs" or not isinstance(reply, dict):
        return False
    logs = reply.get("result")
    if not isinstance(logs, list) or len(logs) <= limit:
        return False
    error: dict[str, Any] = {"code": -32005, "message": f"query returned more than {limit} results"}
    with contextlib.suppress(AttributeError, KeyError, TypeError, ValueError):
        if hint:
            span = block_span(_first_param(call), None)
            over = int(logs[limit]["blockNumber"], 16)
            first = span[0] if span is not None else int(logs[0]["blockNumber"], 16)
            error["data"] = {"from": hex(first), "to": hex(max(first, over - 1))}
    del reply["result"]
    reply["error"] = error
    return True


# ---------------------------------------------------------------- malformed answers

# What MALFORMED does to a log, or to a block header: never a plausible value (a valid hash
# or number that is merely different would be a different chain, not a broken answer).
_DROPPED = object()  # the key is removed
_UPPER_CASE = object()  # the same hash in upper case: JSON-RPC's hashes are lower case
_LOG_BREAKS: tuple[tuple[str, Any], ...] = (
    ("blockNumber", "0xzz"),
    ("logIndex", _DROPPED),
    ("transactionHash", 7),
    ("topics", "0x"),
    ("", None),  # the whole log becomes null
    ("blockHash", None),
    ("blockHash", "0xnot-a-hash"),
    ("blockHash", _UPPER_CASE),
)
_HEADER_BREAKS: tuple[tuple[str, Any], ...] = (
    ("number", "0xzz"),
    ("hash", None),
    ("parentHash", 5),
    ("", "0x"),  # the whole header becomes a string
)


def malform(answer: Any, draw: float) -> bool:
    """Break, in place, the first log list or block header among the replies of a JSON-RPC
    ``answer`` (one reply or a batch); ``draw`` in [0, 1) picks how. True if one was found."""
    for reply in answer if isinstance(answer, list) else [answer]:
        result = reply.get("result") if isinstance(reply, dict) else None
        if isinstance(result, list) and result and isinstance(result[0], dict):
            key, value = _LOG_BREAKS[int(draw * len(_LOG_BREAKS))]
            _break(result, 0, key, value)
            return True
        if isinstance(result, dict) and "hash" in result:
            key, value = _HEADER_BREAKS[int(draw * len(_HEADER_BREAKS))]
            _break(reply, "result", key, value)
            return True
    return False


def _break(holder: Any, at: Any, key: str, value: Any) -> None:
    if not key:
        holder[at] = value
    elif value is _DROPPED:
        del holder[at][key]
    elif value is _UPPER_CASE:
        holder[at][key] = "0x" + str(holder[at].get(key))[2:].upper()
    else:
        holder[at][key] = value
