"""A range read at once is delivered in pieces that cut after a block's last log."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexer.fetch import FetchedRange, _pieces


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
