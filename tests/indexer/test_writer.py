"""A fetched range into rows: raw events in bytes, the ledger, and logs that cannot be."""

from __future__ import annotations

from typing import Any

import pytest

from chains.artifacts import event_table
from chains.faultplan import malform
from indexer import native
from indexer.answers import canonical_logs
from indexer.copyrows import pack_row, unpack
from indexer.exceptions import DecodeError, MalformedAnswerError, MalformedLogError
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


BAD_HASHES = [None, 7, "0xnot-a-hash", "0x" + "AB" * 32, "0x" + "ab" * 31, "00" + "ab" * 32]


@pytest.mark.parametrize("loops", ["C where built", "Python"])
@pytest.mark.parametrize("field", ["blockHash", "transactionHash"])
@pytest.mark.parametrize("value", BAD_HASHES, ids=repr)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_hash_that_is_not_lowercase_hex_is_a_malformed_log_on_either_loop(
    loops: str, field: str, value: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block hash goes into the ledger (its block's first log) and can become the
    cursor's hash (a piece's last log): not 0x + 64 lowercase hex digits, on any log, it is
    a malformed answer, read again, never stored; upper case too (it would not equal the
    same block's header hash: a false reorg)."""
    if loops == "Python":
        monkeypatch.setattr(native, "raw_rows", None)
    logs = [_log(0), _log(1), _log(2)]  # one block, one transaction
    at = {"first": 0, "middle": 1, "last": 2}[where]
    logs[at] = _log(at, **{field: value})
    with pytest.raises(MalformedLogError) as caught:
        prepare_range(CHAIN, ChainState(CHAIN, {}), _range(logs))
    error = caught.value
    assert (error.chain_id, error.block, error.log_index, error.field) == (
        CHAIN,
        "0x7",
        hex(at),
        field,
    )
    assert f"block 7, tx {logs[at]['transactionHash']}, log index {at}" in str(error)
    assert f": {field}: " in str(error)
    assert "read again" in str(error)


@pytest.mark.parametrize("loops", ["C where built", "Python"])
@pytest.mark.parametrize("draw", [i / 40 for i in range(40)])
def test_every_log_the_fault_proxy_breaks_is_a_malformed_answer(
    loops: str, draw: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``--malformed`` does to an ``eth_getLogs`` answer is caught before anything is
    derived (by :func:`indexer.answers.canonical_logs` or here), as a broken answer."""
    if loops == "Python":
        monkeypatch.setattr(native, "raw_rows", None)
    block_hash = "0x" + "ab" * 32  # letters: upper case must change it
    answer: dict[str, Any] = {"id": 1, "result": [_log(i, blockHash=block_hash) for i in (0, 1)]}
    assert malform(answer, draw)

    def read() -> None:
        logs = canonical_logs(answer["result"], chain_id=CHAIN, first=5, last=8, last_hash="")
        assert logs is not None
        prepare_range(CHAIN, ChainState(CHAIN, {}), _range(logs))

    with pytest.raises(MalformedAnswerError):
        read()


def test_a_missing_block_hash_on_a_later_log_of_a_block_is_malformed() -> None:
    """Each log's own hash is read (the first log's used to stand for its block's)."""
    later = _log(1)
    del later["blockHash"]
    with pytest.raises(MalformedLogError, match=r"log index 1.*\): blockHash: missing"):
        prepare_range(CHAIN, ChainState(CHAIN, {}), _range([_log(0), later]))
