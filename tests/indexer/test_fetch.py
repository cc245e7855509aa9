"""Ranges are read one at a time until logs size the span, and a range read at once is
delivered in pieces that cut after a block's last log."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.fetch import FetchedRange, RangeFetcher, _pieces
from indexer.ranges import RangeConfig, RangeController


def _block_hash(number: int) -> str:
    return "0x" + f"{number:064x}"


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
            return self._header(int(params[0], 16))
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

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        return [await self.call(method, params) for method, params in calls]

    def _header(self, number: int) -> dict[str, Any]:
        return {
            "number": hex(number),
            "hash": _block_hash(number),
            "parentHash": _block_hash(number - 1),
            "timestamp": "0x1",
        }


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
