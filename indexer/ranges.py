"""Adaptive ``eth_getLogs`` block ranges: grow while calls succeed, cut exactly on errors.

Providers cap ``eth_getLogs`` by block span (QuickNode 10,000; Cloudflare 800; public
nodes 5,000-50,000) or by result count (Infura and Alchemy: ~10,000 logs), and say so in
~25 different error messages, many of which name a range that would work. One
:class:`RangeController` per chain holds the current *span* and answers three questions:
which range to ask next (:meth:`~RangeController.next_range`), how to grow after a success
(:meth:`~RangeController.on_success`: additively, by ``step``, unless the answer was large
or slow), and how to cut after an error (:meth:`~RangeController.on_error`):

- a provider hint smaller than the failed range sets the span exactly: an explicit range
  (Alchemy ``this block range should work: [0x.., 0x..]``, Infura ``Try with this block
  range`` or ``data: {from, to}``) or a stated limit (``limited to a 10,000 range``, ``max
  is 2000 blocks``, ...); a stated limit also becomes a *ceiling* growth never crosses;
- a recognised "too many results" error without a hint divides the failed span by 10, a
  recognised block-range error by 2; an unknown error or a timeout halves it too;
- a rate limit or an unreachable endpoint says nothing about the range: span unchanged;
- a failed range of one block cannot be split: :class:`RangeNotSplittableError`, so the
  caller backs off (or fails over) instead of looping.

Invariants: ``1 <= span <= ceiling <= max_span`` at all times; ``next_range(start, limit)``
is ``(start, to)`` with ``start <= to <= limit`` and at most ``span`` blocks, so a caller
that continues from ``to + 1`` visits every block exactly once; every range-size or
unknown error shrinks the next attempt below the failed range (errors never grow the span),
so retries terminate.

Units: spans and limits count blocks, inclusive (``[from, to]`` has ``to - from + 1``);
``elapsed_s`` is seconds. Pure logic, no I/O; ``span`` is meant for a Prometheus gauge.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chains.exceptions import RPCConnectionError
from indexer.exceptions import RangeNotSplittableError

__all__ = [
    "RangeConfig",
    "RangeController",
    "RangeDecision",
    "RangeHint",
    "is_range_limit_error",
    "parse_range_hint",
]

logger = logging.getLogger(__name__)

_FLAGS = re.IGNORECASE
_NUM = r"(\d[\d,._]*(?:\s?[km]\b)?)"  # 10000, 10,000, 10.000, 10k, 2K
_QTY = r"(0x[0-9a-f]+|\d+)"

# "Use exactly this range" (the suggestion is sized by log count, so it is no ceiling).
_EXPLICIT = [
    re.compile(rf"this block range should work:\s*\[{_QTY},\s*{_QTY}\]", _FLAGS),  # Alchemy
    re.compile(rf"try with this block range\s*\[{_QTY},\s*{_QTY}\]", _FLAGS),  # Infura, zkSync
]
# "At most N blocks per call": the provider's limit, a ceiling for growth.
_LIMIT = [
    re.compile(rf"maximum is set to {_NUM}", _FLAGS),  # Avalanche
    re.compile(rf"max range: {_NUM}", _FLAGS),  # Cloudflare
    re.compile(rf"maximum allowed number of requested blocks is {_NUM}", _FLAGS),  # thirdweb
    re.compile(rf"limited to a {_NUM}(?![\d,._]|\s*(?:results|logs))", _FLAGS),  # QuickNode
    re.compile(rf"limited to {_NUM} blocks?", _FLAGS),  # BlockPI
    re.compile(rf"allowed for your plan \(\d+ > {_NUM}\)", _FLAGS),  # Blast (paid)
    re.compile(rf"limit the query to at most {_NUM} blocks", _FLAGS),  # Coinbase
    re.compile(rf"max(?:imum)? block range:? {_NUM}", _FLAGS),  # PublicNode, BSC, Hyperliquid
    re.compile(rf"block range greater than {_NUM} max", _FLAGS),  # Swell
    re.compile(rf"block range exceeds {_NUM}", _FLAGS),  # Somnia
    re.compile(rf"max is {_NUM} blocks", _FLAGS),  # Merkle, others: "range is too large, max is"
    re.compile(rf"query must be smaller than size {_NUM}", _FLAGS),  # Harmony
    re.compile(rf"too wide \(maximum {_NUM}\)", _FLAGS),  # Moonbeam / Moonriver (Frontier)
    re.compile(rf"up to an? {_NUM} block range", _FLAGS),  # Aurora, Alchemy free tier
    re.compile(rf"blocks distance: {_NUM}", _FLAGS),  # Ankr (some chains)
    re.compile(rf"range \d+ exceeds limit of {_NUM}", _FLAGS),  # Infura (-32602)
    re.compile(rf"range \d+ is bigger than range limit {_NUM}", _FLAGS),  # thirdweb (data)
    re.compile(rf"more than {_NUM} blocks", _FLAGS),  # "Cannot request logs over more than"
]
# Too many results for one response: cut hard.
_RESULTS = re.compile(
    r"query returned more than \d+ results|query exceeds max results|too many (?:results|logs)"
    r"|logs matched by query exceeds limit|log response size exceeded|returns too many logs"
    r"|response size should not greater than|response (?:is )?too (?:big|large)"
    r"|result set too large|exceeds? (?:the )?max(?:imum)? (?:number of )?(?:results|logs)",
    _FLAGS,
)
# The block range is too large, no number given: halve.
_RANGE = re.compile(
    r"block range (?:is )?too (?:large|wide|big)|block range limit exceeded|range too large"
    r"|range is too large|exceeds? (?:the )?max(?:imum)? block range|block range exceeded",
    _FLAGS,
)
# Nothing to do with the range: keep the span, the caller's retry/backoff handles it.
_UNRELATED = re.compile(
    r"rate.?limit|too many requests|request rate exceeded|daily request count|quota"
    r"|compute units|credits|capacity exceeded|\b429\b",
    _FLAGS,
)
HTTP_TOO_MANY_REQUESTS = 429
_TIMEOUT = re.compile(r"time(?:d)?[ -]?out|deadline exceeded", _FLAGS)


@dataclass(frozen=True, slots=True)
class RangeHint:
    """What an error says would work: ``span`` blocks per call; ``from_block``/``to_block``
    when it named a range; ``ceiling`` when it stated a fixed provider limit."""

    span: int
    from_block: int | None = None
    to_block: int | None = None
    ceiling: bool = False


@dataclass(frozen=True, slots=True)
class RangeConfig:
    """Knobs of one chain's controller (blocks, logs, seconds)."""

    initial_span: int = 1_000
    max_span: int = 50_000
    step: int = 1_000  # additive growth per successful call
    target_logs: int = 10_000  # keep responses around this size (memory, decode batches)
    slow_s: float = 10.0  # do not grow after a call slower than this

    def __post_init__(self) -> None:
        if not 1 <= self.initial_span <= self.max_span or min(self.step, self.target_logs) < 1:
            raise ValueError(
                f"invalid {self}: need 1 <= initial_span <= max_span, step >= 1, target_logs >= 1"
            )


@dataclass(frozen=True, slots=True)
class RangeDecision:
    """What :meth:`RangeController.on_error` did: the new ``span``, why (``hint``, ``results``,
    ``range``, ``timeout``, ``unknown`` or ``unrelated``) and the range to try next."""

    span: int
    reason: str
    retry_from: int
    retry_to: int
    hint: RangeHint | None = None


def _number(text: str) -> int | None:
    digits = re.sub(r"[,._\s]", "", text).lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(digits[-1:], 1)
    digits = digits.rstrip("km")
    return int(digits) * scale if digits.isdigit() else None


def _quantity(text: Any) -> int | None:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    if not isinstance(text, str):
        return None
    try:
        return int(text, 16) if text[:2].lower() == "0x" else int(text)
    except ValueError:
        return None


def _text(message: str, data: object | None) -> str:
    """The message and whatever ``data`` carries, as one searchable string."""
    if data is None or isinstance(data, str):
        return f"{message} {data or ''}"
    try:
        return f"{message} {json.dumps(data, default=str)}"
    except (TypeError, ValueError):
        return f"{message} {data!r}"


def parse_range_hint(message: str, data: object | None = None) -> RangeHint | None:
    """The range or limit a provider's ``eth_getLogs`` error suggests, if it names one."""
    if isinstance(data, Mapping) and "from" in data and "to" in data:  # Infura -32005
        low, high = _quantity(data["from"]), _quantity(data["to"])
        if low is not None and high is not None and low <= high:
            return RangeHint(high - low + 1, low, high)
    text = _text(message, data)
    for pattern in _EXPLICIT:
        match = pattern.search(text)
        low, high = (_quantity(g) for g in match.groups()) if match else (None, None)
        if low is not None and high is not None and low <= high:
            return RangeHint(high - low + 1, low, high)
    for pattern in _LIMIT:
        match = pattern.search(text)
        limit = _number(match.group(1)) if match else None
        if limit:  # a zero limit would be nonsense: ignore it
            return RangeHint(limit, ceiling=True)
    return None


def is_range_limit_error(code: int | None, message: str, data: object | None = None) -> bool:
    """Whether an error means "ask for fewer blocks" (with or without a suggested range).

    ``code`` is accepted for symmetry with JSON-RPC errors but not used: providers reuse
    -32005 and -32602 for rate limits and bad parameters too; the wording decides."""
    text = _text(message, data)
    hint = parse_range_hint(message, data)
    return hint is not None or bool(_RESULTS.search(text) or _RANGE.search(text))


def _error_parts(error: object) -> tuple[int | None, str, object | None]:
    """(code, message, data) of an ``RPCError``, any exception, a JSON-RPC error object
    ``{"code", "message", "data"}`` or a ``(code, message, data)`` tuple."""
    if isinstance(error, BaseException):
        code = getattr(error, "code", None)
        message = str(error) or type(error).__name__
        return code if isinstance(code, int) else None, message, getattr(error, "data", None)
    if isinstance(error, Mapping):
        code = error.get("code")
        return (
            code if isinstance(code, int) else None,
            str(error.get("message", "")),
            error.get("data"),
        )
    if isinstance(error, tuple) and len(error) == 3:  # noqa: PLR2004
        code, message, data = error
        return code if isinstance(code, int) else None, str(message), data
    return None, str(error), None


class RangeController:
    """The adaptive block span of one chain's ``eth_getLogs`` calls (see the module)."""

    def __init__(self, chain_id: int, config: RangeConfig | None = None) -> None:
        self.chain_id = chain_id
        self.config = config or RangeConfig()
        self._span = self.config.initial_span
        self._ceiling = self.config.max_span

    @property
    def span(self) -> int:
        """Blocks per call right now (1 <= span <= ceiling)."""
        return self._span

    @property
    def ceiling(self) -> int:
        """The largest span growth may reach: ``max_span``, or a provider's stated limit."""
        return self._ceiling

    def next_range(self, start: int, limit_block: int) -> tuple[int, int]:
        """``(start, to)``: at most ``span`` blocks, never past ``limit_block`` (inclusive)."""
        if start > limit_block:
            raise ValueError(
                f"chain {self.chain_id}: nothing to fetch from {start} to {limit_block}"
            )
        return start, min(limit_block, start + self._span - 1)

    def on_success(
        self, span: int, n_logs: int, elapsed_s: float, *, spread: int | None = None
    ) -> int:
        """Record a call over ``span`` blocks that returned ``n_logs`` in ``elapsed_s``;
        returns the new span. Grows by ``step``, at most doubling (capped so the expected log
        count stays under ``target_logs``) only when the call used the full span, was fast
        (``< slow_s``) and not large (``<= target_logs / 2``); above ``target_logs`` it
        shrinks in proportion. ``spread``, when known, is the blocks from the first log's to
        the last log's: the density is theirs (a busy contract after empty blocks fills only
        the end of a span, and the blocks after it are as busy)."""
        cfg, span = self.config, max(1, span)
        basis = min(span, max(1, spread)) if spread else span  # the blocks the logs came from
        if n_logs > cfg.target_logs:
            self._set(min(self._span, basis * cfg.target_logs // n_logs), "large answer")
        elif span >= self._span and elapsed_s < cfg.slow_s and 2 * n_logs <= cfg.target_logs:
            # additive, but never more than doubling: a sparse start must not jump straight
            # into a dense history (one huge answer, nothing to overlap the writes with)
            grown = min(self._span + cfg.step, 2 * self._span)
            if n_logs:
                grown = min(grown, basis * cfg.target_logs // n_logs)
            if grown > self._span:
                self._span = min(grown, self._ceiling)
        return self._span

    def on_error(self, error: object, from_block: int, to_block: int) -> RangeDecision:
        """Cut the span after ``eth_getLogs(from_block, to_block)`` failed with ``error``
        (an ``RPCError``, any exception, a JSON-RPC error object or ``(code, message, data)``).

        Returns the decision and the range to retry; raises :class:`RangeNotSplittableError`
        when a range-size or unknown error hit a single-block range."""
        code, message, data = _error_parts(error)
        text, failed = _text(message, data), to_block - from_block + 1
        if to_block < from_block:
            raise ValueError(f"chain {self.chain_id}: empty range [{from_block}, {to_block}]")
        hint = parse_range_hint(message, data)
        if hint is not None and hint.ceiling:
            self._ceiling = max(1, min(self._ceiling, hint.span))
            self._set(self._span, f"provider limit {self._ceiling}")  # clamps to the ceiling
        if hint is not None and hint.span < failed:
            reason, span = "hint", hint.span
        elif (
            isinstance(error, RPCConnectionError)
            or code == HTTP_TOO_MANY_REQUESTS
            or (_UNRELATED.search(text) and not _RESULTS.search(text) and not _RANGE.search(text))
        ):
            return RangeDecision(self._span, "unrelated", *self.next_range(from_block, to_block))
        elif _RESULTS.search(text):
            reason, span = "results", failed // 10
        elif _RANGE.search(text) or hint is not None:
            reason, span = "range", failed // 2
        else:
            timeout = isinstance(error, TimeoutError) or _TIMEOUT.search(text)
            reason, span = ("timeout" if timeout else "unknown"), failed // 2
        if failed == 1:
            raise RangeNotSplittableError(
                f"chain {self.chain_id}: eth_getLogs failed on the single block {from_block} "
                f"({reason}: {message}); splitting cannot help: back off and retry, or use "
                "another endpoint",
                chain_id=self.chain_id,
                block=from_block,
                cause=error,
                reason=reason,
            )
        self._set(min(span, failed - 1, self._span), f"{reason} on [{from_block}, {to_block}]")
        retry_from, retry_to = self.next_range(from_block, to_block)
        if hint is not None and hint.from_block == from_block and hint.to_block is not None:
            retry_to = min(retry_to, hint.to_block)
        return RangeDecision(self._span, reason, retry_from, retry_to, hint)

    def _set(self, span: int, why: str) -> None:
        new = max(1, min(span, self._ceiling))
        if new != self._span:
            logger.info(
                "chain %d: eth_getLogs span %d -> %d (%s)", self.chain_id, self._span, new, why
            )
        self._span = new
