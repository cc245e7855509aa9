"""A fetched range into rows: raw events in bytes, the ledger, and logs that cannot be."""

from __future__ import annotations

from typing import Any

import pytest

from chains.artifacts import event_table
from indexer import native
from indexer.copyrows import pack_row, unpack
from indexer.exceptions import DecodeError
from indexer.fetch import FetchedRange
from indexer.state import ChainState
from indexer.writer import RAW_KINDS, prepare_range

CHAIN = 1
TRANSFER = next(e for e in event_table().values() if e.name == "Transfer")
TOKEN = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


def _log(index: int, block: int = 7, **fields: Any) -> dict[str, Any]:
    return {
        "address": TOKEN,
        "topics": [TRANSFER.topic0, "0x" + "00" * 12 + "11" * 20, "0x" + "00" * 12 + "22" * 20],
        "data": "0x" + "00" * 31 + "05",
        "blockNumber": hex(block),
        "blockHash": "0x" + f"{block:064x}",
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x3",
        "logIndex": hex(index),
        "removed": False,
        **fields,
    }


def _range(logs: list[dict[str, Any]], last: int = 8) -> FetchedRange:
    header = {
        "hash": "0x" + "ee" * 32,
        "parentHash": "0x" + f"{last - 1:064x}",
        "timestamp": "0x10",
    }
    return FetchedRange(5, last, header, "0x" + "aa" * 32, logs, 20, 2, 0.1)


@pytest.mark.parametrize("loops", ["C where built", "Python"])
def test_raw_events_are_the_logs_in_bytes_and_the_ledger_has_their_blocks(
    loops: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if loops == "Python":
        monkeypatch.setattr(native, "raw_rows", None)
    unknown = _log(1, topics=["0x" + "99" * 32])  # not one of our events: stored all the same
    rows = prepare_range(CHAIN, ChainState(CHAIN, {}), _range([_log(0), unknown])).rows
    transfer_topics = b"".join(bytes.fromhex(t[2:]) for t in _log(0)["topics"])
    assert rows.events == 2
    expected = [
        (
            CHAIN,
            7,
            0,
            b"\xcd" * 32,
            3,
            bytes.fromhex(TOKEN[2:]),
            transfer_topics,
            bytes(31) + b"\5",
        ),
        (CHAIN, 7, 1, b"\xcd" * 32, 3, bytes.fromhex(TOKEN[2:]), b"\x99" * 32, bytes(31) + b"\5"),
    ]
    assert rows.raw == b"".join(pack_row(row, RAW_KINDS) for row in expected)
    assert unpack(rows.raw, RAW_KINDS) == expected
    assert rows.ledger == [
        (CHAIN, 7, "0x" + f"{7:064x}", None, None),
        (CHAIN, 8, "0x" + "ee" * 32, "0x" + f"{7:064x}", 16),
    ]
    assert (rows.last, rows.block_hash) == (8, "0x" + "ee" * 32)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data", "0xzz"),
        ("data", "0x 05"),
        ("transactionHash", "0x" + "cd" * 31),
        ("address", TOKEN[2:]),
        ("topics", ["0x" + "99" * 31]),
        ("logIndex", "seven"),
    ],
)
def test_a_log_that_cannot_be_stored_stops_the_range_saying_where(field: str, value: Any) -> None:
    """Raw events are bytes: a log whose hashes, topics or data are not 0x-hex of their size
    cannot be stored, so the range is not written (the runner restarts the chain from the
    store's cursor) and the error names the log and the field."""
    batch = _range([_log(0), _log(1, **{field: value})])
    with pytest.raises(DecodeError, match=f"log index .*\\): {field}: ") as caught:
        prepare_range(CHAIN, ChainState(CHAIN, {}), batch)
    assert (caught.value.chain_id, caught.value.field) == (CHAIN, field)
