"""Ranges are read one at a time until logs size the span, and a range read at once is
delivered in pieces that cut after a block's last log."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.exceptions import RPCError
from indexer.answers import READ_ATTEMPTS
from indexer.exceptions import MalformedAnswerError
from indexer.fetch import FetchedRange, RangeFetcher, _pieces
from indexer.ranges import RangeConfig, RangeController


def _block_hash(number: int) -> str:
    return "0x" + f"{number:064x}"


def _header(number: int) -> dict[str, Any]:
    return {
        "number": hex(number),
        "hash": _block_hash(number),
        "parentHash": _block_hash(number - 1),
        "timestamp": "0x1",
    }


def _range(logs_per_block: list[int], first: int = 10) -> FetchedRange:
    logs: list[dict[str, Any]] = [
        {"blockNumber": hex(first + i), "blockHash": _block_hash(first + i), "logIndex": hex(j)}
        for i, count in enumerate(logs_per_block)
        for j in range(count)
    ]
    last = first + len(logs_per_block) - 1
    header = {"hash": _block_hash(last), "parentHash": _block_hash(last - 1), "timestamp": "0x1"}
    return FetchedRange(first, last, header, _block_hash(first - 1), logs, 99, 50, 2.0)


@given(st.lists(st.integers(0, 30), min_size=1, max_size=40), st.integers(1, 25))
def test_pieces_cover_the_range_link_and_keep_blocks_whole(
    logs_per_block: list[int], size: int
) -> None:
    batch = _range(logs_per_block)
    pieces = list(_pieces(batch, size))
    assert [log for piece in pieces for log in piece.logs] == batch.logs
    assert (pieces[0].first, pieces[-1].last) == (batch.first, batch.last)
    assert pieces[-1].header is batch.header
    assert pieces[0].parent_hash == batch.parent_hash
    assert sum(p.fetch_s for p in pieces) == pytest.approx(batch.fetch_s)
    for before, after in itertools.pairwise(pieces):
        assert after.first == before.last + 1
        assert after.parent_hash == before.last_hash == _block_hash(before.last)
        assert before.header is None
        assert int(before.logs[-1]["blockNumber"], 16) == before.last  # ends on its logs
        assert int(after.logs[0]["blockNumber"], 16) > before.last  # a block stays whole
    for piece in pieces[:-1]:
        assert len(piece.logs) >= size
    if len(batch.logs) <= 2 * size:
        assert pieces == [batch]


def test_a_small_range_is_left_as_it_is() -> None:
    batch = _range([3, 0, 4])
    assert list(_pieces(batch, 10)) == [batch]


def test_one_dense_block_is_never_split() -> None:
    batch = _range([2, 50, 1])
    pieces = list(_pieces(batch, 5))
    assert [(p.first, p.last, len(p.logs)) for p in pieces] == [(10, 11, 52), (12, 12, 1)]


class _QuietThenBusy:
    """A chain whose contracts log nothing before block ``busy`` and 3 logs per block from
    it on; answers at once and notes how many ``eth_getLogs`` are in flight."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.inflight = 0
        self.calls: list[tuple[int, int, int]] = []  # (from, to, in flight with it)

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        if method == "eth_getBlockByNumber":
            return _header(int(params[0], 16))
        assert method == "eth_getLogs"
        lo, hi = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
        self.inflight += 1
        self.calls.append((lo, hi, self.inflight))
        await asyncio.sleep(0.001)
        self.inflight -= 1
        return [
            {"blockNumber": hex(n), "blockHash": _block_hash(n), "logIndex": hex(i)}
            for n in range(max(lo, self.busy), hi + 1)
            for i in range(3)
        ]

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, raise_on_error: bool = True
    ) -> list[Any]:
        return [await self.call(method, params) for method, params in calls]


def test_a_span_grown_over_empty_blocks_meets_the_first_busy_ones_alone() -> None:
    client = _QuietThenBusy(busy=200)
    ranges = RangeController(1, RangeConfig(initial_span=16, target_logs=30))
    fetcher = RangeFetcher(1, client, ["0x" + "11" * 20], ranges, concurrency=2)

    async def read_all() -> list[FetchedRange]:
        stream = fetcher.stream((-1, ""), 400, 0, asyncio.Event())
        return [batch async for batch in stream]

    batches = asyncio.run(read_all())
    assert sum(len(b.logs) for b in batches) == 3 * 201
    first_busy = next(i for i, (_, hi, _) in enumerate(client.calls) if hi >= client.busy)
    assert all(inflight == 1 for _, _, inflight in client.calls[: first_busy + 1])
    assert max(inflight for _, _, inflight in client.calls) == 2  # then two at a time
    lo, hi, _ = client.calls[first_busy + 1]
    assert hi - lo + 1 <= 10  # sized by the busy blocks alone: 30 logs at 3 per block


OURS, OTHER = "0x" + "ab" * 20, "0x" + "cd" * 20


class _CappedNode:
    """Blocks 0..5; block 3 holds five logs of ours (and one of another contract), more
    than this node's ``eth_getLogs`` answers (``cap`` logs) or, with ``broken``, than it
    can answer at all; receipts by block unless ``block_receipts`` is off. ``glitches``
    are answers served once each before the right one."""

    def __init__(self, *, cap: int = 2, broken: bool = False, block_receipts: bool = True) -> None:
        self.cap, self.broken, self.block_receipts = cap, broken, block_receipts
        self.glitches: dict[str, list[Any]] = {}
        self.calls: list[str] = []

    def _log(self, block: int, index: int, address: str = OURS) -> dict[str, Any]:
        tx = "0x" + f"{block:02x}{index // 2:02x}".ljust(64, "0")
        return {
            "address": address,
            "blockNumber": hex(block),
            "blockHash": _block_hash(block),
            "transactionHash": tx,
            "logIndex": hex(index),
            "removed": False,
        }

    def logs(self, block: int) -> list[dict[str, Any]]:
        if block == 3:
            return [self._log(3, i, OTHER if i == 2 else OURS) for i in range(6)]
        return [self._log(block, 0)] if block % 2 else []

    def receipts(self, block: int) -> list[dict[str, Any]]:
        by_tx: dict[str, list[dict[str, Any]]] = {}
        for entry in self.logs(block):
            by_tx.setdefault(entry["transactionHash"], []).append(entry)
        return [
            {"transactionHash": tx, "blockHash": _block_hash(block), "logs": logs}
            for tx, logs in by_tx.items()
        ]

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        self.calls.append(method)
        if self.glitches.get(method):
            return self.glitches[method].pop(0)
        if method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            txs = [r["transactionHash"] for r in self.receipts(number)]
            return {**_header(number), "transactions": txs}
        if method == "eth_getBlockReceipts":
            if not self.block_receipts:
                raise RPCError("the method eth_getBlockReceipts does not exist", code=-32601)
            return self.receipts(int(params[0], 16))
        if method == "eth_getTransactionReceipt":
            block = int(params[0][2:4], 16)
            return next(r for r in self.receipts(block) if r["transactionHash"] == params[0])
        assert method == "eth_getLogs"
        lo, hi = int(params[0]["fromBlock"], 16), int(params[0]["toBlock"], 16)
        found = [e for n in range(lo, hi + 1) for e in self.logs(n) if e["address"] == OURS]
        if self.broken and lo <= 3 <= hi:
            raise RPCError("internal error", code=-32603)
        if len(found) > self.cap:
            raise RPCError(f"query returned more than {self.cap} results", code=-32005)
        return found

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, raise_on_error: bool = True
    ) -> list[Any]:
        return [await self.call(method, params) for method, params in calls]


def _read(node: _CappedNode) -> list[dict[str, Any]]:
    ranges = RangeController(1, RangeConfig(initial_span=8, target_logs=100))
    fetcher = RangeFetcher(1, node, [OURS.upper().replace("0X", "0x")], ranges)

    async def read_all() -> list[FetchedRange]:
        return [b async for b in fetcher.stream((-1, ""), 5, 0, asyncio.Event())]

    with patch("indexer.answers.backoff_s", return_value=0.0):
        batches = asyncio.run(read_all())
    return [entry for batch in batches for entry in batch.logs]


def _ours(node: _CappedNode) -> list[dict[str, Any]]:
    return [e for n in range(6) for e in node.logs(n) if e["address"] == OURS]


@pytest.mark.parametrize("block_receipts", [True, False])
def test_a_block_over_the_providers_log_cap_is_read_from_its_receipts(
    block_receipts: bool,
) -> None:
    node = _CappedNode(block_receipts=block_receipts)
    assert _read(node) == _ours(node)  # in block order, the other contract's log left out
    method = "eth_getBlockReceipts" if block_receipts else "eth_getTransactionReceipt"
    assert method in node.calls


def test_a_block_that_keeps_failing_is_read_from_its_receipts() -> None:
    node = _CappedNode(cap=100, broken=True)
    assert _read(node) == _ours(node)
    assert node.calls.count("eth_getBlockReceipts") == 1
    at = node.calls.index("eth_getBlockReceipts")
    assert node.calls[at - 3 : at] == ["eth_getLogs"] * 3  # three failures in a row


def test_receipts_are_checked_and_read_again_when_malformed_or_moved() -> None:
    node = _CappedNode(block_receipts=False)
    moved = {**node.receipts(3)[0], "blockHash": _block_hash(99)}
    node.glitches["eth_getTransactionReceipt"] = [moved]  # a reorg while reading: again
    assert _read(node) == _ours(node)
    assert node.calls.count("eth_getTransactionReceipt") == 2 * 3  # block 3: three txs, twice
    node = _CappedNode()
    node.glitches["eth_getBlockReceipts"] = [None, [{"logs": 5}]]
    assert _read(node) == _ours(node)
    assert node.calls.count("eth_getBlockReceipts") == 3


def test_an_eth_getlogs_answer_that_is_not_a_list_is_read_again() -> None:
    node = _CappedNode(cap=100)
    node.glitches["eth_getLogs"] = [{"logs": []}, None]
    assert _read(node) == _ours(node)
    assert node.calls.count("eth_getLogs") == 3
    assert node.calls.count("eth_getBlockByNumber") == 3 + 1  # each reading, then the check
    broken = _CappedNode(cap=100)
    broken.glitches["eth_getLogs"] = ["oops"] * READ_ATTEMPTS
    with pytest.raises(MalformedAnswerError, match=r"eth_getLogs 0\.\.5 answered str"):
        _read(broken)
