"""A node's block headers and log lists, checked before anything is decided on them.

A hash that is ``null`` or not hex would otherwise look like a reorg (a parent hash that
does not link), a restarted node (a new genesis hash: the chain's data would be dropped) or
a reorg below finality (the chain would pause); a non-hex block number would stop the
process. :func:`header` and :func:`canonical_logs` raise
:class:`~indexer.exceptions.MalformedAnswerError` instead, naming the method and the
field; :func:`reread` reads again after a back-off, and a node that keeps answering so
restarts the chain (:mod:`indexer.runner`). Only the envelope is checked here; topics
and data are checked where they are decoded (:mod:`indexer.decode`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from indexer.abiwords import QUANTITIES, MalformedError, node_hash
from indexer.exceptions import MalformedAnswerError

__all__ = ["backoff_s", "canonical_logs", "header", "reread"]

log = logging.getLogger("indexer.pipeline")

T = TypeVar("T")
READ_ATTEMPTS = 8  # readings of one malformed answer before the chain restarts

_HEADER_HASHES = ("hash", "parentHash")
_HEADER_QUANTITIES = ("number", "timestamp")


def header(value: Any, *, chain_id: int, block: object) -> Mapping[str, Any] | None:
    """``eth_getBlockByNumber(block)``'s answer: ``None`` (no such block yet) or a header
    whose ``hash``, ``parentHash``, ``number`` and ``timestamp`` are 0x-hex (the hashes in
    lower case, as in logs: they are compared as text)."""
    if value is None:
        return None
    try:
        if not isinstance(value, Mapping):
            raise MalformedError(f"a {type(value).__name__}, not a JSON object or null")
        for field in _HEADER_HASHES:
            node_hash(value.get(field), field)
        for field in _HEADER_QUANTITIES:
            quantity: Any = value.get(field)
            try:
                QUANTITIES[quantity]
            except MalformedError as exc:
                raise MalformedError(f"{field} {exc}") from None
    except MalformedError as exc:
        raise MalformedAnswerError(
            f"chain {chain_id}: eth_getBlockByNumber({block}) answered a malformed header "
            f"({exc}); read again (if it persists, check the chain's rpc_urls)"
        ) from None
    return value


def canonical_logs(
    logs: Any, *, chain_id: int, first: int, last: int, last_hash: str
) -> list[dict[str, Any]] | None:
    """``eth_getLogs(first..last)``'s answer, if canonical: none ``removed``, all inside the
    range, those of ``last`` carrying ``last_hash``. ``None`` when it is not (the chain moved
    while we read); :class:`MalformedAnswerError` when it is not a list of JSON objects with
    0x-hex block numbers."""
    where = f"chain {chain_id}: eth_getLogs {first}..{last}"
    if not isinstance(logs, list):
        raise MalformedAnswerError(
            f"{where} answered {type(logs).__name__}, not a list of logs; read again (if it "
            "persists, check the chain's rpc_urls)"
        )
    index, entry = 0, None
    try:
        for index, entry in enumerate(logs):  # noqa: B007 - the except clause reads it
            if entry.get("removed"):
                return None
            number = int(entry["blockNumber"], 16)
            if not first <= number <= last:
                return None
            if number == last and entry["blockHash"] != last_hash:
                return None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        what = "not a JSON object" if not isinstance(entry, Mapping) else f"{exc!r}"
        raise MalformedAnswerError(
            f"{where}: log {index} is malformed ({what}); read again (if it persists, check "
            "the chain's rpc_urls)"
        ) from None
    return logs


def backoff_s(failures: int) -> float:
    """Exponential back-off with full jitter, capped at 5 s."""
    return random.uniform(0, min(5.0, 0.1 * 2**failures))


async def reread(read: Callable[[], Awaitable[T]], *, attempts: int = READ_ATTEMPTS) -> T:
    """``await read()``, again after a jittered back-off while it raises
    :class:`MalformedAnswerError`; the last error is raised after ``attempts`` readings."""
    for attempt in range(1, attempts + 1):
        try:
            return await read()
        except MalformedAnswerError as exc:
            if attempt == attempts:
                raise
            log.warning("%s", exc)
            await asyncio.sleep(backoff_s(attempt))
    raise AssertionError("unreachable")  # pragma: no cover
