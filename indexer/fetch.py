"""Canonical ranges of logs, fetched ahead and concurrently, delivered in order.

A :class:`RangeFetcher` turns "everything after the tip, up to the head" into a stream of
:class:`FetchedRange` values. Ranges are cut by the adaptive controller
(:mod:`indexer.ranges`) and up to ``concurrency`` of them are in flight at once (a node
answers two ``eth_getLogs`` faster than one after the other), once an answer with logs
has sized the span (until then a span grown over empty blocks would meet the first dense
ones several times over, in ranges all in flight at once); they are delivered strictly in
block order.

Each range ``[first, last]`` is read as:

1. the headers of ``last`` and of ``first - 1`` (the previous range's end);
2. ``eth_getLogs`` over the configured contracts, in as many pieces as the controller's
   current span allows (a provider error shrinks the span and the rest of the range is
   read in smaller pieces, so an error never skips a block). A single block that
   ``eth_getLogs`` cannot answer (a provider caps the answer's log count below what the
   block holds, or keeps failing on it) is read from its receipts instead:
   ``eth_getBlockReceipts``, or each transaction's receipt where the node lacks that
   method, keeping the logs of the configured contracts;
3. the header of ``last`` again: if it changed, the chain reorganised while we read and
   the range is read again; logs must be canonical (``removed`` false, inside the range,
   those of ``last`` carrying its hash). A malformed header or log list
   (:mod:`indexer.answers`) is never trusted: the range is read again after a back-off.

A range that is not settled (block ``last`` missing or changing, logs not canonical) is
read again after a jittered back-off, at most ``_SETTLE_READS`` times. Then a block that
is still missing or moving, or logs still marked ``removed``, raise
:class:`~indexer.reorg.Reorged`: the pipeline polls the head again and runs reorg
detection (a reorg is handled, a node that is merely behind is waited for) — unless the
node has claimed a head at or past that block for longer than ``missing_patience_s``,
which raises :class:`~indexer.exceptions.MalformedAnswerError`, as do logs that stay
inconsistent with the header (the message names the block, both hashes and the likely
cause): neither can be indexed, and neither is a reorg.

Linking: when ranges are delivered, the hash of ``first - 1`` that range *k+1* saw must
equal the hash of range *k*'s ``last`` (or the cursor's for the first range): otherwise
the chain reorganised below us and :class:`~indexer.reorg.Reorged` is raised. So ranges
fetched concurrently form one chain of hashes, as if fetched one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from chains.exceptions import RPCError
from indexer import answers
from indexer.exceptions import MalformedAnswerError, RangeNotSplittableError
from indexer.metrics import IndexerMetrics
from indexer.ranges import RangeController
from indexer.reorg import Reorged

__all__ = ["ChainClient", "FetchedRange", "RangeFetcher"]

log = logging.getLogger("indexer.pipeline")

_RECEIPTS_AFTER = 3  # failures of eth_getLogs on one block before reading its receipts
_RECEIPT_BATCH = 100  # eth_getTransactionReceipt calls per batch
_METHOD_NOT_FOUND = -32601
_SETTLE_READS = 6  # readings of an unsettled range (~1.5 s of back-off) before giving up
_MISSING_PATIENCE_S = 120.0  # how long a block below the node's head may stay missing


class ChainClient(Protocol):
    """The JSON-RPC calls an indexer makes (``chains.aiorpc.AsyncRpcClient``)."""

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any: ...

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, raise_on_error: bool = True
    ) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class _Unsettled:
    """Why a reading of a range cannot be used: ``missing`` (block ``last`` absent or
    changing, or a log marked removed: the chain moved, or the node is behind) or not
    (logs inconsistent with the header)."""

    why: str
    missing: bool


@dataclass(slots=True)
class FetchedRange:
    """The canonical logs of blocks ``first..last`` and what was known when read.

    ``header`` is the header of ``last`` as read; a piece of a larger range that was read
    at once (see :func:`_pieces`) has none, and ends on a block whose hash its logs carry.
    """

    first: int
    last: int
    header: Mapping[str, Any] | None  # of ``last``
    parent_hash: str | None  # of block ``first - 1`` when read (None: no such block)
    logs: list[dict[str, Any]]
    head: int
    finalized: int
    fetch_s: float

    @property
    def last_hash(self) -> str:
        """The hash of block ``last``."""
        if self.header is not None:
            return str(self.header["hash"])
        return str(self.logs[-1]["blockHash"])


class RangeFetcher:
    """Reads one chain's ranges through ``client`` (see the module docstring)."""

    def __init__(
        self,
        chain_id: int,
        client: ChainClient,
        addresses: Sequence[str],
        ranges: RangeController,
        *,
        concurrency: int = 2,
        metrics: IndexerMetrics | None = None,
        missing_patience_s: float = _MISSING_PATIENCE_S,
    ) -> None:
        self.chain_id = chain_id
        self.client = client
        self.addresses = list(addresses)
        self._wanted = frozenset(address.lower() for address in self.addresses)
        self.ranges = ranges
        self.concurrency = max(1, concurrency)
        self.metrics = metrics
        self._calibrated = False  # an answer with logs has sized the span
        self.missing_patience_s = missing_patience_s
        self._missing_since: dict[int, float] = {}  # block -> when first found missing

    async def stream(
        self, tip: tuple[int, str], head: int, finalized: int, stop: asyncio.Event
    ) -> AsyncGenerator[FetchedRange, None]:
        """Every range after ``tip`` (number, hash; hash ``""`` if nothing is indexed) up
        to ``head``, in order and linked by hash; :class:`Reorged` if a link breaks. Ends
        early, dropping the ranges in flight, once ``stop`` is set."""
        inflight: deque[asyncio.Task[FetchedRange]] = deque()
        stopping = asyncio.ensure_future(stop.wait())
        following = tip[0] + 1
        linked = tip[1]
        try:
            while inflight or following <= head:
                limit = self.concurrency if self._calibrated else 1
                while len(inflight) < limit and following <= head:
                    first, last = self.ranges.next_range(following, head)
                    fetch = self.fetch(first, last, head, finalized)
                    inflight.append(asyncio.ensure_future(fetch))
                    following = last + 1
                await asyncio.wait((inflight[0], stopping), return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    return
                batch = inflight.popleft().result()
                self._calibrated = self._calibrated or bool(batch.logs)
                if linked and batch.parent_hash != linked:
                    raise Reorged
                linked = batch.last_hash
                for piece in _pieces(batch, self.ranges.config.target_logs):
                    yield piece
        finally:
            pending: list[asyncio.Future[Any]] = [stopping, *inflight]
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def fetch(self, first: int, last: int, head: int, finalized: int) -> FetchedRange:
        """Read ``[first, last]`` until the answer is canonical, at most ``_SETTLE_READS``
        times with a back-off (module docstring); a malformed answer is read again after a
        back-off (:func:`indexer.answers.reread`)."""
        unsettled = _Unsettled("not read", missing=True)
        for attempt in range(1, _SETTLE_READS + 1):
            fetched = await answers.reread(lambda: self._fetch_once(first, last, head, finalized))
            if isinstance(fetched, FetchedRange):
                for block in [b for b in self._missing_since if b <= last]:
                    del self._missing_since[block]  # it exists now
                return fetched
            unsettled = fetched
            log.info(
                "chain %s: range %s..%s not settled (%s); reading %s of %s",
                self.chain_id,
                first,
                last,
                unsettled.why,
                attempt,
                _SETTLE_READS,
            )
            if attempt < _SETTLE_READS:
                await asyncio.sleep(answers.backoff_s(attempt))
        where = f"chain {self.chain_id}: range {first}..{last}"
        if not unsettled.missing:
            raise MalformedAnswerError(
                f"{where}: {unsettled.why}, in {_SETTLE_READS} readings; the node's logs and "
                "headers disagree (a load balancer mixing nodes, or a broken node or proxy "
                "rewriting hashes); check the chain's rpc_urls"
            )
        since = self._missing_since.setdefault(last, time.monotonic())
        if time.monotonic() - since >= self.missing_patience_s:
            raise MalformedAnswerError(
                f"{where}: {unsettled.why} for {time.monotonic() - since:.0f} s although the "
                f"node reported a head of {head} or more; its answers come from nodes that "
                "disagree (a load balancer) or it is broken; check the chain's rpc_urls"
            )
        log.warning(
            "%s: %s after %s readings; polling the head again", where, unsettled.why, _SETTLE_READS
        )
        raise Reorged(f"{where}: {unsettled.why}")

    async def _fetch_once(
        self, first: int, last: int, head: int, finalized: int
    ) -> FetchedRange | _Unsettled:
        """One reading of ``[first, last]``, or why it cannot be used."""
        started = time.perf_counter()
        calls: list[tuple[str, Sequence[Any]]] = [("eth_getBlockByNumber", [hex(last), False])]
        if first > 0:
            calls.append(("eth_getBlockByNumber", [hex(first - 1), False]))
        headers = await self.client.batch(calls)
        header = answers.header(headers[0], chain_id=self.chain_id, block=last)
        if header is None:  # no logs to read until the node has the block
            return _Unsettled(f"the node has no block {last}", missing=True)
        parent = None
        if first > 0:
            parent = answers.header(headers[1], chain_id=self.chain_id, block=first - 1)
            if parent is None:
                raise MalformedAnswerError(
                    f"chain {self.chain_id}: eth_getBlockByNumber({first - 1}) answered null "
                    f"while block {last} exists; read again (if it persists, check the "
                    "chain's rpc_urls)"
                )
        logs = await self._logs(first, last)
        again = await self.client.call("eth_getBlockByNumber", [hex(last), False])
        again = answers.header(again, chain_id=self.chain_id, block=last)
        if again is None:
            return _Unsettled(f"the node has no block {last}", missing=True)
        if logs is None or again["hash"] != header["hash"]:
            return _Unsettled(f"block {last} changed while it was read", missing=True)
        canonical = answers.canonical_logs(
            logs, chain_id=self.chain_id, first=first, last=last, last_hash=header["hash"]
        )
        if canonical is None:  # a removed log: the chain is moving (a reorg), as when missing
            removed = any(entry.get("removed") for entry in logs)
            return _Unsettled(_not_canonical(logs, first, last, header["hash"]), missing=removed)
        parent_hash = str(parent["hash"]) if parent is not None else None
        elapsed = time.perf_counter() - started
        return FetchedRange(first, last, header, parent_hash, canonical, head, finalized, elapsed)

    async def _logs(self, first: int, last: int) -> list[dict[str, Any]] | None:
        """``eth_getLogs`` over ``[first, last]`` in pieces of the controller's span (a
        block it cannot answer: from its receipts); None if the chain moved meanwhile."""
        logs: list[dict[str, Any]] = []
        failures = 0
        start = first
        while start <= last:
            lo, hi = self.ranges.next_range(start, last)
            started = time.perf_counter()
            try:
                part = await self.client.call(
                    "eth_getLogs",
                    [{"fromBlock": hex(lo), "toBlock": hex(hi), "address": self.addresses}],
                )
            except RPCError as exc:
                failures += 1
                if await self._on_error(exc, lo, hi, failures):
                    from_receipts = await self._receipt_logs(lo)
                    if from_receipts is None:
                        return None
                    logs += from_receipts
                    start, failures = lo + 1, 0
                continue
            if not isinstance(part, list):  # a broken node or proxy: the range is read again
                raise MalformedAnswerError(
                    f"chain {self.chain_id}: eth_getLogs {lo}..{hi} answered "
                    f"{type(part).__name__}, not a list of logs; read again (if it persists, "
                    "check the chain's rpc_urls)"
                )
            elapsed = time.perf_counter() - started
            self.ranges.on_success(hi - lo + 1, len(part), elapsed, spread=_spread(part))
            logs += part
            start, failures = hi + 1, 0
        return logs

    async def _on_error(self, error: RPCError, lo: int, hi: int, failures: int) -> bool:
        """Shrink the span after a failed piece, or wait if the range cannot be blamed;
        True when the piece is one block that ``eth_getLogs`` cannot answer here (too many
        logs for the provider's cap, or failed ``_RECEIPTS_AFTER`` times): read its receipts."""
        if self.metrics is not None:
            self.metrics.rpc_errors.labels(self.chain_id, type(error).__name__).inc()
        log.info("chain %s: getLogs %s..%s failed (%s)", self.chain_id, lo, hi, error)
        try:
            decision = self.ranges.on_error(error, lo, hi)
        except RangeNotSplittableError as exc:
            if exc.reason == "results" or failures >= _RECEIPTS_AFTER:
                log.info(
                    "chain %s: eth_getLogs cannot answer block %s (%s); reading its receipts",
                    self.chain_id,
                    lo,
                    exc.reason,
                )
                if self.metrics is not None:
                    self.metrics.receipt_blocks.labels(self.chain_id).inc()
                return True
            await asyncio.sleep(answers.backoff_s(failures))
            return False
        if decision.reason == "unrelated":  # not about the range: wait, same span
            await asyncio.sleep(answers.backoff_s(failures))
        return False

    async def _receipt_logs(self, block: int) -> list[dict[str, Any]] | None:
        """The configured contracts' logs in ``block``, read from its receipts (in block
        order, as ``eth_getLogs`` sends them); None if the block changed while we read."""
        try:
            receipts = await self.client.call("eth_getBlockReceipts", [hex(block)])
        except RPCError as exc:
            if exc.code != _METHOD_NOT_FOUND:
                raise
            receipts = await self._transaction_receipts(block)
            if receipts is None:
                return None
        where = f"chain {self.chain_id}: the receipts of block {block}"
        if not isinstance(receipts, list):  # null: a block that eth_getLogs just failed on
            raise MalformedAnswerError(
                f"{where} are {type(receipts).__name__}, not a list; read again (if it "
                "persists, check the chain's rpc_urls)"
            )
        wanted = self._wanted
        try:
            return [
                entry
                for receipt in receipts
                for entry in receipt["logs"]
                if entry["address"].lower() in wanted
            ]
        except (AttributeError, KeyError, TypeError) as exc:
            raise MalformedAnswerError(
                f"{where} are malformed ({exc!r}); read again (if it persists, check the "
                "chain's rpc_urls)"
            ) from None

    async def _transaction_receipts(self, block: int) -> list[Any] | None:
        """Each transaction's receipt in ``block``, for a node without
        ``eth_getBlockReceipts``; None if one of them is no longer in that block."""
        found = await self.client.call("eth_getBlockByNumber", [hex(block), False])
        header = answers.header(found, chain_id=self.chain_id, block=block)
        if header is None:
            return None
        hashes = header.get("transactions")
        if not isinstance(hashes, list):
            raise MalformedAnswerError(
                f"chain {self.chain_id}: eth_getBlockByNumber({block}) has no transaction "
                "list; read again (if it persists, check the chain's rpc_urls)"
            )
        receipts: list[Any] = []
        for at in range(0, len(hashes), _RECEIPT_BATCH):
            chunk = hashes[at : at + _RECEIPT_BATCH]
            receipts += await self.client.batch([("eth_getTransactionReceipt", [h]) for h in chunk])
        block_hash = header["hash"]
        moved = (not isinstance(r, Mapping) or r.get("blockHash") != block_hash for r in receipts)
        return None if any(moved) else receipts


def _not_canonical(logs: list[dict[str, Any]], first: int, last: int, last_hash: str) -> str:
    """Why :func:`indexer.answers.canonical_logs` refused ``logs`` (well formed, it checked)."""
    for index, entry in enumerate(logs):
        number = int(entry["blockNumber"], 16)
        if entry.get("removed"):
            return f"log {index} (block {number}) is marked removed"
        if not first <= number <= last:
            return f"log {index} is of block {number}, outside the range"
        if number == last and entry["blockHash"] != last_hash:
            return (
                f"log {index} of block {last} carries blockHash {entry['blockHash']} but "
                f"the block's header has hash {last_hash}"
            )
    return "the logs are not canonical"  # pragma: no cover - canonical_logs accepted them


def _spread(logs: list[Any]) -> int | None:
    """Blocks from the first log's to the last log's, inclusive (None if none or unreadable:
    a malformed answer is named by :func:`indexer.answers.canonical_logs`)."""
    try:
        return int(logs[-1]["blockNumber"], 16) - int(logs[0]["blockNumber"], 16) + 1
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _pieces(batch: FetchedRange, size: int) -> Iterator[FetchedRange]:
    """``batch`` as consecutive ranges of about ``size`` logs, cut after a block's last log.

    A span that grew over empty blocks can return hundreds of thousands of logs at once; as
    one range they would be decoded, then written, with nothing to overlap. Each piece but
    the last ends on a block with logs, whose hash (as its logs carry it, like the ledger's
    other blocks) becomes the cursor's once written; each links to the one before, and the
    last keeps the header that the answer was checked against.
    """
    logs, first, start, parent_hash = batch.logs, batch.first, 0, batch.parent_hash
    share = batch.fetch_s / max(1, len(logs))  # of the reading time, per log
    while len(logs) - start > 2 * size:
        cut, block = start + size, logs[start + size - 1]["blockNumber"]
        while cut < len(logs) and logs[cut]["blockNumber"] == block:  # a block stays whole
            cut += 1
        if cut == len(logs):
            break
        last = int(block, 16)
        piece = logs[start:cut]
        yield FetchedRange(
            first, last, None, parent_hash, piece, batch.head, batch.finalized, share * len(piece)
        )
        first, start, parent_hash = last + 1, cut, str(piece[-1]["blockHash"])
    if start == 0:
        yield batch
    else:
        rest = logs[start:]
        yield replace(
            batch, first=first, parent_hash=parent_hash, logs=rest, fetch_s=share * len(rest)
        )
