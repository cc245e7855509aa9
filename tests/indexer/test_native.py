"""The C loops (indexer._native) give exactly what their Python twins give, errors included.

Each test runs the same input through the C path and through the Python path (the C
functions switched off for that run) and compares results, the values' types, the
decoder's side effects (unknown topics counted and collected) and error messages.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from Crypto.Hash import keccak
from eth_abi.abi import encode as abi_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chains.abi import event_topic
from chains.artifacts import EventAbi
from indexer import native
from indexer.abiwords import checksum, checksum_python
from indexer.decode import DecodedLog, LogDecoder
from indexer.exceptions import DecodeError
from indexer.writer import _raw_rows

CHAIN = 10
SIZES = [8, 16, 24, 64, 128, 136, 248, 256]
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
built = pytest.mark.skipif(
    native.implementation() == "Python",
    reason="indexer._native is not built (no C compiler when RTRM was installed)",
)


def test_the_extension_is_built_where_a_compiler_is() -> None:
    """CI has gcc and Python's headers: the C loops must be what the tests exercise."""
    if not os.environ.get("CI") or shutil.which("gcc") is None:
        pytest.skip("only checked in CI (a machine without a C compiler runs pure Python)")
    if os.environ.get("RTRM_PURE_PYTHON"):
        pytest.skip("RTRM_PURE_PYTHON is set")
    assert native.implementation() == "C"


@pytest.fixture
def pure(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Any]], Any]:
    """Run a callable with every C function switched off (the Python twins run)."""

    def run(call: Callable[[], Any]) -> Any:
        with monkeypatch.context() as patch:
            for name in ("checksum", "raw_rows", "decode", "unpack"):
                patch.setattr(native, name, None)
            checksum.cache_clear()
            try:
                return call()
            finally:
                checksum.cache_clear()

    return run


# ---------------------------------------------------------------- keccak and EIP-55


@built
@EXAMPLES
@given(st.binary(max_size=700))
def test_keccak256_is_ethereums(data: bytes) -> None:
    assert native.keccak256 is not None
    assert native.keccak256(data) == keccak.new(data=data, digest_bits=256).digest()


@built
@EXAMPLES
@given(st.binary(min_size=20, max_size=20), st.sampled_from([str.lower, str.upper, str.title]))
def test_checksum_matches_python(raw: bytes, case: Callable[[str], str]) -> None:
    assert native.checksum is not None
    digits = case(raw.hex())
    assert native.checksum(digits) == checksum_python(digits)


@built
@pytest.mark.parametrize("digits", ["", "0" * 39, "0" * 41, "g" * 40, "é" * 40, "0x" + "0" * 38])
def test_checksum_rejects_what_is_not_40_hex_digits(digits: str) -> None:
    assert native.checksum is not None
    with pytest.raises(ValueError, match="40 hex digits"):
        native.checksum(digits)


# ---------------------------------------------------------------- random logs

STATIC_TYPES = ["address", "bool", *(f"uint{n}" for n in SIZES), *(f"int{n}" for n in SIZES)]
STATIC_TYPES += ["bytes1", "bytes4", "bytes20", "bytes31", "bytes32"]
JUNK = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.text(alphabet="0xX123abcdefABCDEFg \u0663", max_size=70),
    st.lists(st.text(max_size=3), max_size=2),
)


def make_event(params: list[tuple[str, bool]], name: str = "Probe") -> EventAbi:
    inputs = tuple(
        {"name": f"p{i}", "type": t, "indexed": indexed, "internalType": t}
        for i, (t, indexed) in enumerate(params)
    )
    signature = f"{name}({','.join(t for t, _ in params)})"
    return EventAbi("Probe", name, signature, event_topic(signature), inputs)


@st.composite
def word_of(draw: st.DrawFn, abi_type: str) -> bytes:
    """A valid encoding of ``abi_type``, or (sometimes) one with a byte changed, or any 32
    bytes: out of range on purpose, which both paths must reject alike."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=32, max_size=32))
    if draw(st.integers(0, 4)) == 0:
        word = bytearray(draw(word_of(abi_type)))
        at = draw(st.sampled_from([0, 11, 12, 15, 16, 23, 24, 29, 30, 31]))
        word[at] = draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFF]))
        return bytes(word)
    if abi_type == "address":
        value: Any = "0x" + draw(st.binary(min_size=20, max_size=20)).hex()
    elif abi_type == "bool":
        value = draw(st.booleans())
    elif abi_type.startswith("uint"):
        bits = int(abi_type[4:])
        value = draw(st.sampled_from([0, 1, (1 << bits) - 1]) | st.integers(0, (1 << bits) - 1))
    elif abi_type.startswith("int"):
        bits = int(abi_type[3:])
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        value = draw(st.sampled_from([low, -1, 0, high]) | st.integers(low, high))
    else:
        size = int(abi_type[5:])
        value = draw(st.binary(min_size=size, max_size=size))
    return abi_encode([abi_type], [value])


def hex_case(draw: st.DrawFn, raw: bytes) -> str:
    text = raw.hex()
    return "0x" + (text.upper() if draw(st.integers(0, 7)) == 0 else text)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[EventAbi], list[Any]]:
    """Two random events with static parameters, and logs of them (and of an unknown
    event) in block order, a few with one field broken or oddly formed."""
    events = []
    for name in ("Alpha", "Beta"):
        types = draw(st.lists(st.sampled_from(STATIC_TYPES), max_size=6))
        flags: list[bool] = []
        for flag in draw(st.lists(st.booleans(), min_size=len(types), max_size=len(types))):
            flags.append(flag and flags.count(True) < 3)
        events.append(make_event(list(zip(types, flags, strict=True)), name))
    logs: list[Any] = []
    block, tx = 100, draw(st.binary(min_size=32, max_size=32))
    for index in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 3)) == 0:
            block += 1
        if draw(st.integers(0, 2)) == 0:
            tx = draw(st.binary(min_size=32, max_size=32))
        choice = draw(st.integers(0, 5))
        if choice == 5:
            topics = [hex_case(draw, draw(st.binary(min_size=32, max_size=32)))]
            data = "0x" + draw(st.binary(max_size=64)).hex()
        else:
            event = events[choice % 2]
            words = {True: [event.topic0], False: ["0x"]}
            for p in event.inputs:
                words[bool(p["indexed"])].append(hex_case(draw, draw(word_of(p["type"])))[2:])
            topics = [words[True][0]] + ["0x" + w for w in words[True][1:]]
            data = "0x" + "".join(words[False][1:])
        log: dict[str, Any] = {
            "address": hex_case(draw, draw(st.sampled_from([b"\x5e" * 20, b"\xab" * 20]))),
            "topics": topics,
            "data": data,
            "blockNumber": hex(block),
            "blockHash": "0x" + bytes([block % 256]).hex() * 32,
            "transactionHash": "0x" + tx.hex(),
            "transactionIndex": hex(draw(st.integers(0, 300))),
            "logIndex": hex(index),
            "removed": draw(st.sampled_from([False, False, True, None])),
        }
        if draw(st.integers(0, 6)) == 0:
            bend(draw, log)
        logs.append(log)
    if draw(st.integers(0, 20)) == 0:
        logs.insert(draw(st.integers(0, len(logs))), draw(JUNK))
    return events, logs


def bend(draw: st.DrawFn, log: dict[str, Any]) -> None:
    """Break one field of ``log``, or write it in a way Python accepts and C leaves to it."""
    key = draw(st.sampled_from([*log, "topics.0", "topics.1", "data.5", "lenient", "upper"]))
    topics, data = log["topics"], log["data"]
    if key == "upper":  # a hash in upper case: Python rejects it, C leaves it to Python
        field = draw(st.sampled_from(["blockHash", "transactionHash"]))
        log[field] = "0x" + log[field][2:].upper()
    elif key == "lenient":
        zeros = "0" * draw(st.integers(0, 40))
        number = int(log["blockNumber"], 16)
        log[draw(st.sampled_from(["blockNumber", "logIndex"]))] = f"0x{zeros}{number:x}"
    elif key.startswith("topics.") and len(topics) > int(key[-1]):
        log["topics"] = list(topics)
        log["topics"][int(key[-1])] = draw(JUNK)
    elif key == "data.5" and len(data) > 6:
        log["data"] = data[:5] + draw(st.sampled_from(["g", " ", "F", "\u0663"])) + data[6:]
    elif draw(st.booleans()):
        log[key] = draw(JUNK)
    else:
        log.pop(key, None)


def typed(value: Any) -> Any:
    """A value with its type spelled out: True must not pass for 1."""
    if isinstance(value, DecodedLog):
        return ("DecodedLog", *(typed(getattr(value, f)) for f in DecodedLog.__slots__))
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return ("ok", typed(call()))
    except DecodeError as exc:
        return ("error", type(exc).__name__, str(exc))


def decode_outcome(events: list[EventAbi], logs: list[Any], cache_size: int = 8) -> Any:
    """What decoding ``logs`` gives; small caches by default: misses and evictions too."""
    decoder = LogDecoder(events, cache_size=cache_size)
    unknown: list[Any] = []
    result = outcome(lambda: decoder.decode_logs(CHAIN, logs, unknown))
    return result, typed(unknown), dict(decoder.unknown_topics)


@built
@EXAMPLES
@given(batches())
def test_decode_matches_python(pure: Callable[[Callable[[], Any]], Any], case: Any) -> None:
    events, logs = case
    for size in (8, 4096):  # C fills a cache with room itself; a full one, Python evicts
        expected = pure(partial(decode_outcome, events, logs, size))
        assert decode_outcome(events, logs, size) == expected


@built
@EXAMPLES
@given(batches())
def test_raw_rows_match_python(pure: Callable[[Callable[[], Any]], Any], case: Any) -> None:
    _, logs = case
    rows = outcome(lambda: _raw_rows(CHAIN, logs))
    assert rows == pure(lambda: outcome(lambda: _raw_rows(CHAIN, logs)))


EVENT = make_event([("address", True), ("uint256", False), ("int64", False), ("bytes4", False)])


def good_log(index: int) -> dict[str, Any]:
    data = abi_encode(["uint256", "int64", "bytes4"], [2**200 + index, -index, b"abcd"])
    return {
        "address": "0x" + "5e" * 20,
        "topics": [EVENT.topic0, "0x" + abi_encode(["address"], ["0x" + "77" * 20]).hex()],
        "data": "0x" + data.hex(),
        "blockNumber": hex(1000 + index // 3),
        "blockHash": "0x" + "cd" * 32,
        "transactionHash": "0x" + f"{index // 2:064x}",
        "transactionIndex": hex(index // 2),
        "logIndex": hex(index),
        "removed": False,
    }


def edge_words(abi_type: str) -> list[bytes]:
    """Words at each edge of ``abi_type``'s range, on both sides."""
    words = {bytes(32), bytes(31) + b"\x01", bytes(31) + b"\x02", b"\xff" * 32}
    for at in range(32):
        for value in (0x01, 0x7F, 0x80, 0xFF):
            words.add(bytes(at) + bytes([value]) + bytes(31 - at))
            words.add(b"\xff" * at + bytes([value]) + b"\x00" * (31 - at))
            words.add(b"\x00" * at + bytes([value]) + b"\xff" * (31 - at))
    return sorted(words)


@built
@pytest.mark.parametrize("abi_type", [*STATIC_TYPES, "int40", "uint72", "bytes16"])
@pytest.mark.parametrize("indexed", [False, True])
def test_every_edge_word_decodes_or_fails_alike(
    pure: Callable[[Callable[[], Any]], Any], abi_type: str, indexed: bool
) -> None:
    event = make_event([(abi_type, indexed)])
    logs = []
    for i, word in enumerate(edge_words(abi_type)):
        where = {"topics": [event.topic0, "0x" + word.hex()], "data": "0x"} if indexed else {
            "topics": [event.topic0], "data": "0x" + word.hex()}  # fmt: skip
        logs.append(good_log(i) | where)
    for log in logs:  # one at a time: a failure must not hide the logs after it
        batch = [log]
        assert decode_outcome([event], batch) == pure(partial(decode_outcome, [event], batch))


@built
@pytest.mark.parametrize("digits", [1, 2, 3, 15, 16, 17, 18, 63, 64, 65])
@pytest.mark.parametrize("key", ["blockNumber", "logIndex", "transactionIndex"])
def test_quantities_of_every_length_read_alike(
    pure: Callable[[Callable[[], Any]], Any], digits: int, key: str
) -> None:
    logs = [good_log(0) | {key: "0x" + "f" * digits}, good_log(1) | {key: "0x" + "1" * digits}]
    for log in logs:
        batch = [log]
        assert decode_outcome([EVENT], batch) == pure(partial(decode_outcome, [EVENT], batch))
        rows = partial(outcome, partial(_raw_rows, CHAIN, batch))
        assert rows() == pure(rows)


@built
@pytest.mark.parametrize("bits", [31, 63])
@pytest.mark.parametrize("key", ["blockNumber", "logIndex", "transactionIndex"])
def test_quantities_at_the_store_columns_limits_pack_or_fail_alike(
    pure: Callable[[Callable[[], Any]], Any], bits: int, key: str
) -> None:
    """int4 for log and transaction indexes, int8 for block numbers: one past the limit is
    a malformed log on both paths, named, never a failed write."""
    for value in (2**bits - 1, 2**bits):
        batch = [good_log(0) | {key: hex(value)}]
        rows = partial(outcome, partial(_raw_rows, CHAIN, batch))
        assert rows() == pure(rows)
        limit = 31 if key != "blockNumber" else 63
        if value >> limit:
            assert rows()[:2] == ("error", "MalformedLogError")
            assert f"{key}: {hex(value)} is too large to store" in rows()[2]


BAD_HASHES = [
    None,
    7,
    "",
    "0xnot-a-hash",
    "0x" + "AB" * 32,  # upper case: not the header's hash as text
    "0x" + "ab" * 31 + "aB",
    "0X" + "ab" * 32,
    "0x" + "ab" * 31,
    "0x" + "ab" * 33,
    "0x" + "ab" * 31 + " a",
    "00" + "ab" * 32,
    "0x" + "ab" * 31 + "\u0663\u0663",
]


@built
@pytest.mark.parametrize("value", BAD_HASHES, ids=repr)
@pytest.mark.parametrize("key", ["blockHash", "transactionHash"])
@pytest.mark.parametrize("at", [0, 2, 3, 5])
def test_a_malformed_hash_on_any_log_fails_alike(
    pure: Callable[[Callable[[], Any]], Any], value: Any, key: str, at: int
) -> None:
    """Logs 0-2 are block 1000's, 3-5 block 1001's: a bad hash on a block's first log (its
    ledger row), a later one, or the batch's last (the cursor's hash) is the same
    MalformedLogError on both paths, naming the field, the block and the log index."""
    assert native.raw_rows is not None
    batch = [good_log(i) for i in range(6)]
    assert native.raw_rows(CHAIN, batch) is not None
    batch[at] = batch[at] | {key: value}
    assert native.raw_rows(CHAIN, batch) is None  # the C loop leaves it to Python
    rows = partial(outcome, partial(_raw_rows, CHAIN, batch))
    assert rows() == pure(rows)
    assert rows()[:2] == ("error", "MalformedLogError")
    where = f"block {1000 + at // 3}, tx {batch[at]['transactionHash']}, log index {at}"
    assert where in rows()[2]
    assert f"): {key}: " in rows()[2]


@built
def test_block_hashes_are_each_blocks_first_logs_on_both_paths(
    pure: Callable[[Callable[[], Any]], Any],
) -> None:
    batch = [good_log(i) | {"blockHash": "0x" + f"{1000 + i // 3:064x}"} for i in range(7)]
    rows = partial(outcome, partial(_raw_rows, CHAIN, batch))
    assert rows() == pure(rows)
    assert rows()[1][1] == {n: ("str", "0x" + f"{n:064x}") for n in (1000, 1001, 1002)}


# ---------------------------------------------------------------- the fast path is taken


@built
def test_well_formed_logs_are_all_taken_by_the_c_loops() -> None:
    logs = [good_log(i) for i in range(50)]
    assert native.raw_rows is not None
    assert native.decode is not None
    assert native.raw_rows(CHAIN, logs) is not None
    decoder = LogDecoder([EVENT])
    out, done = native.decode(
        CHAIN, logs, decoder._native, decoder._contract_addresses,
        decoder._contract_address, lambda log: None, decoder._native_caches,
    )  # fmt: skip
    assert done == len(logs)
    first = out[0]
    assert type(first) is DecodedLog
    assert first.args == {
        "p0": "0x" + "77" * 20,
        "p1": 2**200,
        "p2": 0,
        "p3": "0x61626364",
    }
    assert out[7].args["p2"] == -7
    assert out[7].block_number == 1002
    assert hash(first) == hash((CHAIN, first.tx_hash, 0))
    with pytest.raises(AttributeError):
        first.event = "x"  # type: ignore[misc]


@built
def test_a_log_the_c_loop_leaves_is_decoded_by_python_from_there_on(
    pure: Callable[[Callable[[], Any]], Any],
) -> None:
    logs = [good_log(i) for i in range(6)]
    logs[3]["blockNumber"] = "0x" + "0" * 30 + "3e9"  # 32 digits: Python's QUANTITIES take it
    decoded = LogDecoder([EVENT]).decode_logs(CHAIN, logs)
    assert [d.log_index for d in decoded] == list(range(6))
    assert typed(decoded) == pure(lambda: typed(LogDecoder([EVENT]).decode_logs(CHAIN, logs)))


@built
def test_an_interrupt_in_a_callback_is_not_swallowed() -> None:
    decoder = LogDecoder([EVENT])

    def interrupted(address: Any) -> str:
        raise KeyboardInterrupt

    decoder._contract_address = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        decoder.decode_logs(CHAIN, [good_log(0)])


@built
def test_abi_encoded_events_go_through_their_python_decoder(
    pure: Callable[[Callable[[], Any]], Any],
) -> None:
    event = make_event([("string", False), ("uint256", True), ("string", True)], "Named")
    data = abi_encode(["string"], ["héllo"])
    log = good_log(0) | {
        "topics": [event.topic0, "0x" + abi_encode(["uint256"], [5]).hex(), "0x" + "12" * 32],
        "data": "0x" + data.hex(),
    }
    decoded = LogDecoder([event]).decode_logs(CHAIN, [log])
    assert decoded[0].args == {"p0": "héllo", "p1": 5, "p2": "0x" + "12" * 32}
    assert typed(decoded) == pure(lambda: typed(LogDecoder([event]).decode_logs(CHAIN, [log])))
