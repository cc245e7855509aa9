"""The log decoder returns exactly what eth_abi returns, and says where a log is malformed."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_abi.grammar import BasicType, TupleType
from eth_abi.grammar import parse as parse_abi_type
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chains.abi import event_topic
from chains.artifacts import EventAbi, event_table
from indexer.abiwords import checksum
from indexer.decode import (
    DecodedLog,
    LogDecoder,
    _Builder,
    decode_logs,
    default_decoder,
)
from indexer.exceptions import DecodeError, IndexerError

CHAIN = 42161
TX = "0x" + "ab" * 32
SIZES = list(range(8, 257, 8))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_event(*params: tuple[str, bool], name: str = "Probe") -> EventAbi:
    inputs = tuple(
        {"name": f"p{i}", "type": t, "indexed": indexed, "internalType": t}
        for i, (t, indexed) in enumerate(params)
    )
    signature = f"{name}({','.join(t for t, _ in params)})"
    return EventAbi("Probe", name, signature, event_topic(signature), inputs)


def topic(abi_type: str, value: Any) -> str:
    if abi_type == "string":  # reference types: the topic is the hash of the value
        return "0x" + keccak(text=value).hex()
    return "0x" + abi_encode([abi_type], [value]).hex()


def raw_log(event: EventAbi, values: list[Any], **override: Any) -> dict[str, Any]:
    pairs = list(zip(event.inputs, values, strict=True))
    topics = [event.topic0] + [topic(p["type"], v) for p, v in pairs if p["indexed"]]
    plain = [(p["type"], v) for p, v in pairs if not p["indexed"]]
    data = abi_encode([t for t, _ in plain], [v for _, v in plain])
    log = {
        "address": "0x" + "5e" * 20,
        "topics": topics,
        "data": "0x" + data.hex(),
        "blockNumber": "0x1b4",
        "blockHash": "0x" + "cd" * 32,
        "transactionHash": TX,
        "transactionIndex": "0x3",
        "logIndex": "0x7",
        "removed": False,
    }
    log.update(override)
    return log


def normalise(abi_type: Any, value: Any) -> Any:
    """eth_abi's value in the decoder's documented conventions."""
    if abi_type.is_array:
        return tuple(normalise(abi_type.item_type, v) for v in value)
    if isinstance(abi_type, TupleType):
        return tuple(normalise(t, v) for t, v in zip(abi_type.components, value, strict=True))
    if isinstance(abi_type, BasicType) and abi_type.base == "address":
        return to_checksum_address(value)
    if isinstance(abi_type, BasicType) and abi_type.base == "bytes" and abi_type.sub:
        return "0x" + value.hex()
    return value


def eth_abi_args(event: EventAbi, log: dict[str, Any]) -> dict[str, Any]:
    """The reference: every indexed topic and the data decoded by eth_abi."""
    topics, out, plain = iter(log["topics"][1:]), {}, []
    for p in event.inputs:
        parsed = parse_abi_type(p["type"])
        if p["indexed"]:
            topic = next(topics)
            reference = parsed.is_dynamic or parsed.is_array or isinstance(parsed, TupleType)
            word = abi_decode([p["type"]], bytes.fromhex(topic[2:]))[0] if not reference else None
            out[p["name"]] = topic if reference else normalise(parsed, word)
        else:
            plain.append(p)
    values = abi_decode([p["type"] for p in plain], bytes.fromhex(log["data"][2:]))
    for p, value in zip(plain, values, strict=True):
        out[p["name"]] = normalise(parse_abi_type(p["type"]), value)
    return {p["name"]: out[p["name"]] for p in event.inputs}


@st.composite
def static_value(draw: st.DrawFn, abi_type: str) -> Any:
    if abi_type == "address":
        return "0x" + draw(st.binary(min_size=20, max_size=20)).hex()
    if abi_type == "bool":
        return draw(st.booleans())
    if abi_type.startswith("uint"):
        bits = int(abi_type[4:])
        return draw(st.sampled_from([0, 1, (1 << bits) - 1]) | st.integers(0, (1 << bits) - 1))
    if abi_type.startswith("int"):
        bits = int(abi_type[3:])
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return draw(st.sampled_from([low, -1, 0, high]) | st.integers(low, high))
    size = int(abi_type[5:])
    return draw(st.binary(min_size=size, max_size=size))


STATIC_TYPES = st.sampled_from(
    ["address", "bool", *(f"uint{n}" for n in SIZES), *(f"int{n}" for n in SIZES)]
    + [f"bytes{n}" for n in range(1, 33)]
)


@st.composite
def static_event(draw: st.DrawFn) -> EventAbi:
    types = draw(st.lists(STATIC_TYPES, min_size=0, max_size=7))
    slots = draw(st.lists(st.booleans(), min_size=len(types), max_size=len(types)))
    indexed: list[bool] = []
    for flag in slots:  # at most three indexed parameters (topics 1..3)
        indexed.append(flag and indexed.count(True) < 3)
    return make_event(*zip(types, indexed, strict=True))


# ---------------------------------------------------------------- exact values


@FAST
@given(st.data())
def test_every_event_of_our_contracts_matches_eth_abi(data: st.DataObject) -> None:
    event = data.draw(st.sampled_from(sorted(event_table().values(), key=lambda e: e.signature)))
    values = [data.draw(static_value(p["type"])) for p in event.inputs]
    log = raw_log(event, values)
    (decoded,) = decode_logs(CHAIN, [log])
    assert decoded.args == eth_abi_args(event, log)
    assert list(decoded.args) == [p["name"] for p in event.inputs]
    assert (decoded.event, decoded.contract) == (event.name, event.contract)


@FAST
@given(st.data())
def test_every_static_type_indexed_or_not_matches_eth_abi(data: st.DataObject) -> None:
    event = data.draw(static_event())
    values = [data.draw(static_value(p["type"])) for p in event.inputs]
    log = raw_log(event, values)
    (decoded,) = LogDecoder([event]).decode_logs(CHAIN, [log])
    assert decoded.args == eth_abi_args(event, log)
    for value, p in zip(decoded.args.values(), event.inputs, strict=True):
        assert type(value) is {"address": str, "bool": bool}.get(p["type"], type(value))


def static_default(abi_type: str) -> Any:
    if abi_type == "address":
        return "0x" + "00" * 20
    if abi_type == "bool":
        return False
    return b"" if abi_type.startswith("bytes") else 0


def near_miss(position: int, high: bool) -> bytes:
    """A word with one stray byte: high bits of a narrow type, or not sign-extended."""
    return (
        bytes(position) + b"\x01" + bytes(31 - position)
        if high
        else b"\xff" * (position + 1) + bytes(31 - position)
    )


WORDS = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.builds(near_miss, st.integers(0, 31), st.booleans()),
    st.sampled_from([bytes(32), b"\xff" * 32, bytes(31) + b"\x01", bytes(31) + b"\x02"]),
)


@FAST
@given(st.data())
def test_arbitrary_words_decode_exactly_when_eth_abi_accepts_them(data: st.DataObject) -> None:
    """Random 32-byte words: eth_abi raises <=> we raise DecodeError, else equal values."""
    event = data.draw(static_event())
    words = [data.draw(WORDS) for _ in event.inputs]
    pairs = list(zip(event.inputs, words, strict=True))
    log = raw_log(
        event,
        [static_default(p["type"]) for p in event.inputs],
        topics=[event.topic0] + ["0x" + w.hex() for p, w in pairs if p["indexed"]],
        data="0x" + "".join(w.hex() for p, w in pairs if not p["indexed"]),
    )
    try:
        expected = eth_abi_args(event, log)
    except DecodingError:
        with pytest.raises(DecodeError, match=rf"chain {CHAIN}, block 436, tx {TX}, log index 7"):
            LogDecoder([event]).decode_logs(CHAIN, [log])
    else:
        (decoded,) = LogDecoder([event]).decode_logs(CHAIN, [log])
        assert decoded.args == expected


def test_dynamic_and_composite_types_fall_back_to_eth_abi() -> None:
    event = make_event(
        ("string", True),
        ("address", False),
        ("string", False),
        ("bytes", False),
        ("uint256[]", False),
        ("(address,bytes3)", False),
        ("bytes32[2]", False),
        ("uint16", True),
    )
    values = [
        "indexed",
        "0x" + "ab" * 20,
        "héllo",
        b"\x00\x01",
        [1, 2**256 - 1],
        ("0x" + "cd" * 20, b"abc"),
        [b"x" * 32, b"y" * 32],
        65535,
    ]
    log = raw_log(event, values)
    (decoded,) = LogDecoder([event]).decode_logs(CHAIN, [log])
    assert decoded.args == eth_abi_args(event, log)
    assert decoded.args["p0"] == "0x" + keccak(text="indexed").hex()
    assert decoded.args["p5"] == (to_checksum_address("0x" + "cd" * 20), "0x616263")
    assert decoded.args["p3"] == b"\x00\x01"


def test_envelope_fields_and_types() -> None:
    transfer = next(e for e in event_table().values() if e.name == "Transfer")
    log = raw_log(transfer, ["0x" + "11" * 20, "0x" + "22" * 20, 5], removed=True)
    (decoded,) = decode_logs(CHAIN, [log])
    assert type(decoded) is DecodedLog
    assert decoded == DecodedLog(
        chain_id=CHAIN,
        block_number=436,
        block_hash="0x" + "cd" * 32,
        tx_hash=TX,
        tx_index=3,
        log_index=7,
        address=to_checksum_address("0x" + "5e" * 20),
        contract=transfer.contract,
        event="Transfer",
        args={
            "from": to_checksum_address("0x" + "11" * 20),
            "to": to_checksum_address("0x" + "22" * 20),
            "value": 5,
        },
        removed=True,
    )
    assert hash(decoded) == hash((CHAIN, TX, 7))
    with pytest.raises(AttributeError):
        decoded.block_number = 1  # type: ignore[misc]


def test_builder_mirrors_decoded_log_slots() -> None:
    assert _Builder.__slots__ == DecodedLog.__slots__
    assert list(_Builder.__init__.__code__.co_varnames[1:12]) == list(DecodedLog.__slots__)


def test_large_quantities_and_batches_keep_order() -> None:
    feed = next(e for e in event_table().values() if e.name == "AnswerUpdated")
    logs = [
        raw_log(feed, [-i, i, 2**200 + i], blockNumber=hex(10**12 + i // 3), logIndex=hex(5000 + i))
        for i in range(10)
    ]
    decoded = decode_logs(CHAIN, logs)
    assert [d.block_number for d in decoded] == [10**12 + i // 3 for i in range(10)]
    assert [d.log_index for d in decoded] == [5000 + i for i in range(10)]
    assert [d.args["current"] for d in decoded] == [-i for i in range(10)]


@given(st.binary(min_size=20, max_size=20), st.booleans())
def test_checksum_is_eip55(raw: bytes, upper: bool) -> None:
    body = raw.hex().upper() if upper else raw.hex()
    assert checksum.__wrapped__(body) == to_checksum_address("0x" + body)


def test_address_caches_stay_bounded_and_correct() -> None:
    transfer = next(e for e in event_table().values() if e.name == "Transfer")
    decoder = LogDecoder([transfer], cache_size=16)
    owners = ["0x" + i.to_bytes(20, "big").hex() for i in range(1, 200)]
    logs = [raw_log(transfer, [a, a, 1], address=a) for a in owners]
    decoded = decoder.decode_logs(CHAIN, logs)
    assert [d.args["from"] for d in decoded] == [to_checksum_address(a) for a in owners]
    assert [d.address for d in decoded] == [to_checksum_address(a) for a in owners]
    assert max(len(decoder._topic_addresses), len(decoder._contract_addresses)) <= 16


def test_mixed_case_hex_is_accepted_and_normalised() -> None:
    event = make_event(("address", True), ("bytes32", False))
    log = raw_log(event, ["0x" + "ab" * 20, b"\xab" * 32])
    log["topics"][1] = log["topics"][1].upper().replace("0X", "0x")
    log["data"] = log["data"].upper().replace("0X", "0x")
    (decoded,) = LogDecoder([event]).decode_logs(CHAIN, [log])
    assert decoded.args == {"p0": to_checksum_address("0x" + "ab" * 20), "p1": "0x" + "ab" * 32}


# ---------------------------------------------------------------- unknown events


def test_unknown_topics_are_skipped_and_counted() -> None:
    transfer = next(e for e in event_table().values() if e.name == "Transfer")
    good = raw_log(transfer, ["0x" + "11" * 20, "0x" + "22" * 20, 5])
    foreign = raw_log(transfer, ["0x" + "11" * 20, "0x" + "22" * 20, 5])
    foreign["topics"][0] = "0x" + "ee" * 32
    anonymous = dict(good, topics=[])
    decoder = LogDecoder()
    unknown: list[Any] = []
    decoded = decoder.decode_logs(CHAIN, [foreign, good, anonymous, foreign], unknown)
    assert [d.event for d in decoded] == ["Transfer"]
    assert unknown == [foreign, anonymous, foreign]
    assert decoder.unknown_topics == {"0x" + "ee" * 32: 2, "": 1}
    assert decoder.skipped == 3


# ---------------------------------------------------------------- malformed logs

BASE = make_event(
    ("address", True),
    ("uint8", True),
    ("address", False),
    ("bool", False),
    ("uint8", False),
    ("int16", False),
    ("bytes4", False),
    name="Mixed",
)
GOOD = ["0x" + "aa" * 20, 7, "0x" + "bb" * 20, True, 200, -300, b"wxyz"]
WORD = 64


def data_word(i: int, word: str) -> str:
    good: str = raw_log(BASE, GOOD)["data"]
    return good[: 2 + WORD * i] + word + good[2 + WORD * (i + 1) :]


def topic_with(i: int, word: str) -> list[str]:
    topics = list(raw_log(BASE, GOOD)["topics"])
    topics[i] = "0x" + word
    return topics


@pytest.mark.parametrize(
    ("override", "field", "reason"),
    [
        (
            {"data": data_word(0, "01" + "00" * 11 + "bb" * 20)},
            r"p2 \(address\)",
            "non-zero upper 12 bytes",
        ),
        ({"data": data_word(1, "00" * 31 + "02")}, r"p3 \(bool\)", "neither 0 nor 1"),
        ({"data": data_word(2, "00" * 30 + "01c8")}, r"p4 \(uint8\)", "does not fit uint8"),
        ({"data": data_word(3, "00" * 30 + "fed4")}, r"p5 \(int16\)", "not a sign-extended int16"),
        ({"data": data_word(4, "77" * 4 + "00" * 27 + "01")}, r"p6 \(bytes4\)", "non-zero padding"),
        (
            {"topics": topic_with(1, "ff" * 12 + "aa" * 20)},
            r"p0 \(address, indexed\)",
            "non-zero upper",
        ),
        (
            {"topics": topic_with(2, "00" * 30 + "0107")},
            r"p1 \(uint8, indexed\)",
            "does not fit uint8",
        ),
        ({"topics": topic_with(2, "zz" * 32)}, r"p1 \(uint8, indexed\)", "not 0x + 64 hex"),
        ({"data": raw_log(BASE, GOOD)["data"][:-64]}, "data", "expected 5 words"),
        ({"data": raw_log(BASE, GOOD)["data"] + "00"}, "data", "expected 5 words"),
        (
            {"data": raw_log(BASE, GOOD)["data"][:-1] + "g"},
            "data",
            "not 0x + an even number of hex digits",
        ),
        (
            {"data": raw_log(BASE, GOOD)["data"][:-2] + " 1"},
            "data",
            "not 0x + an even number of hex digits",
        ),
        (
            {"data": raw_log(BASE, GOOD)["data"][:-2] + "_1"},
            "data",
            "not 0x + an even number of hex digits",
        ),
        (
            {"data": raw_log(BASE, GOOD)["data"][:-1] + "\u0663"},
            "data",
            "not 0x + an even number of hex digits",
        ),
        ({"data": "00" + raw_log(BASE, GOOD)["data"][2:]}, "data", "not 0x"),
        ({"data": None}, "data", "not 0x"),
        ({"topics": raw_log(BASE, GOOD)["topics"][:2]}, "topics", "expected 3 topics, got 2"),
        (
            {"topics": [*raw_log(BASE, GOOD)["topics"], "0x" + "00" * 32]},
            "topics",
            "expected 3 topics, got 4",
        ),
        ({"logIndex": "0xzz"}, "logIndex", "not a 0x hex quantity"),
        ({"logIndex": "7"}, "logIndex", "not a 0x hex quantity"),
        ({"blockNumber": None}, "blockNumber", "not a 0x hex quantity"),
        ({"transactionHash": "0x1234"}, "transactionHash", "not 0x + 64 hex"),
        ({"transactionHash": None}, "transactionHash", "not 0x + 64 hex"),
        ({"transactionHash": "00" + TX[2:]}, "transactionHash", "not 0x + 64 hex"),
        ({"blockHash": "0x" + "cd" * 31 + " c"}, "blockHash", "not 0x + 64 hex"),
        ({"blockHash": None}, "blockHash", "not 0x + 64 hex"),
        ({"transactionIndex": None}, "transactionIndex", "not a 0x hex quantity"),
        ({"address": "0x1234"}, "address", "not 0x + 40 hex"),
    ],
)
def test_malformed_logs_raise_decode_error_saying_where(
    override: dict[str, Any], field: str, reason: str
) -> None:
    log = raw_log(BASE, GOOD, **override)
    decoder = LogDecoder([BASE])
    for batch in ([log], [raw_log(BASE, GOOD), log]):
        with pytest.raises(DecodeError, match=field) as caught:
            decoder.decode_logs(CHAIN, batch)
        message = str(caught.value)
        assert reason in message
        assert f"chain {CHAIN}," in message
        assert f"tx {log['transactionHash']}" in message
        assert isinstance(caught.value, IndexerError)
        assert isinstance(caught.value, ValueError)
        assert caught.value.chain_id == CHAIN


def test_decode_error_names_the_location() -> None:
    log = raw_log(BASE, GOOD, data=data_word(2, "00" * 30 + "01c8"), logIndex="0x2a")
    with pytest.raises(DecodeError) as caught:
        LogDecoder([BASE]).decode_logs(CHAIN, [log])
    error = caught.value
    assert str(error).startswith(
        f"cannot decode log (chain {CHAIN}, block 436, tx {TX}, log index 42, event Mixed): "
        "p4 (uint8): "
    )
    assert (error.event, error.field, error.block, error.log_index) == (
        "Mixed",
        "p4 (uint8)",
        "0x1b4",
        "0x2a",
    )


@pytest.mark.parametrize("log", [None, "0x", [1, 2], {"topics": [BASE.topic0]}])
def test_non_log_values_raise_decode_error(log: Any) -> None:
    with pytest.raises(DecodeError, match=f"chain {CHAIN}"):
        LogDecoder([BASE]).decode_logs(CHAIN, [log])


def test_topics_that_are_not_a_list_raise_even_if_unknown() -> None:
    with pytest.raises(DecodeError, match="topics"):
        LogDecoder([BASE]).decode_logs(CHAIN, [raw_log(BASE, GOOD, topics="0x00")])


def test_default_decoder_covers_every_compiled_event() -> None:
    decoder = default_decoder()
    for topic0, event in event_table().items():
        assert "def decode(topics, data):" in decoder.source(topic0), event.signature


def test_the_garbage_collector_is_restored_after_a_batch() -> None:
    import gc

    good, bad = raw_log(BASE, GOOD), raw_log(BASE, GOOD, data="0x")
    decoder = LogDecoder([BASE])
    assert gc.isenabled()
    decoder.decode_logs(CHAIN, [good])
    assert gc.isenabled()
    with pytest.raises(DecodeError):
        decoder.decode_logs(CHAIN, [good, bad])
    assert gc.isenabled()
    gc.disable()
    try:
        decoder.decode_logs(CHAIN, [good])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_malformed_log_is_left_out_not_fatal() -> None:
    """The pipeline's batch decode keeps going past a log that does not fit its ABI."""
    from indexer.pipeline import decode_batch

    table = event_table()
    transfer = next(e for e in table.values() if e.name == "Transfer")
    good = {
        "address": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
        "topics": [transfer.topic0, "0x" + "00" * 12 + "11" * 20, "0x" + "00" * 12 + "22" * 20],
        "data": "0x" + "00" * 31 + "05",
        "blockNumber": "0x1",
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "transactionIndex": "0x0",
        "logIndex": "0x0",
        "removed": False,
    }
    short = {**good, "data": "0x05", "logIndex": "0x1"}
    decoded = decode_batch(1, [good, short, {**good, "logIndex": "0x2"}])
    assert [d.log_index for d in decoded] == [0, 2]
    assert decoded[0].args["value"] == 5
