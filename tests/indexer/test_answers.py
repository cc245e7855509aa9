"""A node's headers and log lists are checked before anything is decided on them."""

from __future__ import annotations

from typing import Any

import pytest

from indexer.answers import canonical_logs, header
from indexer.exceptions import MalformedAnswerError

WORD = "0x" + "ab" * 32
OTHER = "0x" + "cd" * 32
HEADER = {"number": "0x10", "hash": WORD, "parentHash": OTHER, "timestamp": "0x5f"}


def test_a_header_or_null_passes() -> None:
    assert header(None, chain_id=1, block=16) is None
    assert header(HEADER, chain_id=1, block=16) is HEADER


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ("0x", "a str, not a JSON object or null"),
        ({**HEADER, "hash": None}, "hash 'None'"),
        ({**HEADER, "hash": WORD[:-2]}, "hash"),
        ({**HEADER, "parentHash": 5}, "parentHash '5'"),
        ({**HEADER, "hash": WORD.upper().replace("0X", "0x")}, "is not in lower case"),
        ({**HEADER, "parentHash": "0x" + "CD" * 32}, "parentHash '0xCDCD"),
        ({**HEADER, "number": "0xzz"}, "number '0xzz'"),
        ({k: v for k, v in HEADER.items() if k != "timestamp"}, "timestamp None"),
    ],
)
def test_a_malformed_header_is_named_never_trusted(answer: Any, named: str) -> None:
    with pytest.raises(MalformedAnswerError, match="chain 1: eth_getBlockByNumber") as caught:
        header(answer, chain_id=1, block="latest")
    assert named in str(caught.value)
    assert "rpc_urls" in str(caught.value)


def _log(number: int, block_hash: str = WORD, **extra: Any) -> dict[str, Any]:
    return {"blockNumber": hex(number), "blockHash": block_hash, **extra}


def test_canonical_logs_pass_and_moved_chains_are_told_apart() -> None:
    logs = [_log(3, OTHER), _log(4)]
    assert canonical_logs(logs, chain_id=1, first=3, last=4, last_hash=WORD) is logs
    assert canonical_logs([], chain_id=1, first=3, last=4, last_hash=WORD) == []
    moved = [
        [_log(3, OTHER, removed=True)],  # a removed log
        [_log(5)],  # outside the range
        [_log(4, OTHER)],  # the last block's hash changed
    ]
    for answer in moved:
        assert canonical_logs(answer, chain_id=1, first=3, last=4, last_hash=WORD) is None


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ({"logs": []}, "answered dict, not a list of logs"),
        ([_log(3), None], "log 1 is malformed (not a JSON object)"),
        ([{"blockHash": WORD}], "log 0 is malformed (KeyError('blockNumber'))"),
        ([_log(3) | {"blockNumber": "0xzz"}], "log 0 is malformed (ValueError"),
        ([_log(3) | {"blockNumber": 3}], "log 0 is malformed (TypeError"),
    ],
)
def test_a_malformed_log_list_is_named_never_trusted(answer: Any, named: str) -> None:
    with pytest.raises(MalformedAnswerError, match=r"chain 1: eth_getLogs 3\.\.4") as caught:
        canonical_logs(answer, chain_id=1, first=3, last=4, last_hash=WORD)
    assert named in str(caught.value)
