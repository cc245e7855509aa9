"""Hand-written ABI encoding agrees with eth_abi byte for byte; revert data decodes."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from chains.abi import (
    decode_revert,
    encode_args,
    encode_call,
    event_topic,
    parse_signature,
    selector,
)

SIZES = list(range(8, 257, 8))


# ---------------------------------------------------------------- strategies


@st.composite
def addresses(draw: st.DrawFn) -> str:
    raw = draw(st.binary(min_size=20, max_size=20)).hex()
    style = draw(st.sampled_from(["lower", "upper", "checksum"]))
    if style == "upper":
        return "0x" + raw.upper()
    if style == "checksum":
        return to_checksum_address("0x" + raw)
    return "0x" + raw


@st.composite
def static_arg(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["uint", "int", "address", "bool", "bytes"]))
    if kind == "uint":
        bits = draw(st.sampled_from(SIZES))
        edge = st.sampled_from([0, 1, (1 << bits) - 1])
        return f"uint{bits}", draw(edge | st.integers(0, (1 << bits) - 1))
    if kind == "int":
        bits = draw(st.sampled_from(SIZES))
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return f"int{bits}", draw(st.sampled_from([low, -1, 0, high]) | st.integers(low, high))
    if kind == "address":
        return "address", draw(addresses())
    if kind == "bool":
        return "bool", draw(st.booleans())
    size = draw(st.integers(1, 32))
    return f"bytes{size}", draw(st.binary(min_size=0, max_size=size))


# ---------------------------------------------------------------- static fast path


@given(st.lists(static_arg(), max_size=8))
def test_static_encoding_matches_eth_abi(args: list[tuple[str, Any]]) -> None:
    types = [t for t, _ in args]
    values = [v for _, v in args]
    assert encode_args(types, values) == abi_encode(types, values)


@given(st.lists(static_arg(), max_size=5))
def test_encode_call_is_selector_plus_args(args: list[tuple[str, Any]]) -> None:
    types = [t for t, _ in args]
    values = [v for _, v in args]
    signature = f"f({','.join(types)})"
    expected = "0x" + selector(signature).hex() + abi_encode(types, values).hex()
    assert encode_call(signature, *values) == expected


@pytest.mark.parametrize(
    ("abi_type", "value"),
    [
        ("uint256", (1 << 256) - 1),
        ("uint256", 0),
        ("int256", -(1 << 255)),
        ("int256", (1 << 255) - 1),
        ("int8", -128),
        ("int8", 127),
        ("int24", -1),
        ("uint8", 255),
        ("bytes32", b"\xff" * 32),
        ("bytes1", b""),
    ],
)
def test_bounds_match_eth_abi(abi_type: str, value: Any) -> None:
    assert encode_args([abi_type], [value]) == abi_encode([abi_type], [value])


@pytest.mark.parametrize(
    ("abi_type", "value", "words"),
    [
        ("uint8", 256, r"argument 0 \(uint8\): 256 is outside \[0, 2\*\*8\)"),
        ("uint256", -1, r"argument 0 \(uint256\)"),
        ("int8", 128, r"argument 0 \(int8\): 128 is outside"),
        ("int8", -129, r"argument 0 \(int8\): -129 is outside"),
        ("bytes2", b"abc", r"argument 0 \(bytes2\): 3 bytes is too long"),
        ("address", "0x1234", r"argument 0 \(address\)"),
        ("address", "0x" + "g" * 40, r"argument 0 \(address\)"),
    ],
)
def test_out_of_range_values_raise_value_error_naming_the_arg(
    abi_type: str, value: Any, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        encode_args([abi_type], [value])


@pytest.mark.parametrize(
    ("abi_type", "value"),
    [
        ("uint256", True),
        ("uint256", 1.0),
        ("int8", "1"),
        ("bool", 1),
        ("bytes32", "abc"),
        ("address", 1),
    ],
)
def test_wrong_python_types_raise_type_error(abi_type: str, value: Any) -> None:
    with pytest.raises(TypeError, match=rf"argument 1 \({abi_type}\)"):
        encode_args(["uint8", abi_type], [0, value])


def test_addresses_are_case_insensitive_and_may_be_raw_bytes() -> None:
    raw = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
    forms = [
        "0x" + raw.hex(),
        "0x" + raw.hex().upper(),
        "0X" + raw.hex(),
        to_checksum_address(raw),
        raw,
    ]
    encodings = {encode_args(["address"], [form]) for form in forms}
    assert encodings == {abi_encode(["address"], [raw])}


def test_bytes_n_accepts_hex_strings() -> None:
    assert encode_args(["bytes32"], ["0x" + "ab" * 32]) == abi_encode(["bytes32"], [b"\xab" * 32])
    assert encode_args(["bytes4"], ["0x0102"]) == abi_encode(["bytes4"], [b"\x01\x02"])


def test_int_subclasses_encode_like_ints() -> None:
    class Side(int):
        pass

    assert encode_args(["uint8", "int16"], [Side(3), Side(-2)]) == abi_encode(
        ["uint8", "int16"], [3, -2]
    )


def test_argument_count_must_match() -> None:
    with pytest.raises(ValueError, match="2 ABI types but 1 values"):
        encode_args(["uint256", "address"], [1])
    with pytest.raises(ValueError, match=r"takes 2 arguments, got 1"):
        encode_call("transfer(address,uint256)", "0x" + "00" * 20)


# ---------------------------------------------------------------- dynamic fallback


@given(
    st.lists(addresses(), max_size=5),
    st.lists(st.integers(0, (1 << 256) - 1), max_size=5),
    st.text(max_size=40),
    st.binary(max_size=70),
    st.integers(-(1 << 255), (1 << 255) - 1),
)
def test_dynamic_types_fall_back_to_eth_abi(
    holders: list[str], amounts: list[int], memo: str, blob: bytes, delta: int
) -> None:
    types = ["address[]", "uint256[]", "string", "bytes", "int256"]
    values = [holders, amounts, memo, blob, delta]
    assert encode_args(types, values) == abi_encode(types, values)
    signature = f"batch({','.join(types)})"
    expected = "0x" + selector(signature).hex() + abi_encode(types, values).hex()
    assert encode_call(signature, *values) == expected


def test_tuples_and_fixed_arrays_fall_back_to_eth_abi() -> None:
    types = ["(uint256,address)", "uint8[2]", "(bool,string)[]"]
    values = [(5, "0x" + "11" * 20), [1, 2], [(True, "a"), (False, "bc")]]
    assert encode_args(types, values) == abi_encode(types, values)


def test_fallback_errors_are_builtin_exceptions() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_args(["uint8[]"], [[256]])
    with pytest.raises(TypeError, match="cannot encode"):
        encode_args(["string"], [5])


# ---------------------------------------------------------------- signatures


def test_known_selectors_and_topics() -> None:
    assert selector("transfer(address,uint256)").hex() == "a9059cbb"
    assert selector("transfer(address, uint)") == selector("transfer(address,uint256)")
    assert selector("balanceOf(address)").hex() == "70a08231"
    transfer = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    assert event_topic("Transfer(address,address,uint256)") == transfer
    assert event_topic("Transfer(address, address, uint)") == transfer


def test_parse_signature() -> None:
    assert parse_signature("transfer(address,uint256)") == ("transfer", ("address", "uint256"))
    assert parse_signature("ok()") == ("ok", ())
    assert parse_signature(" f( (uint,address)[] , bytes32 ) ") == (
        "f",
        ("(uint256,address)[]", "bytes32"),
    )
    assert parse_signature("g(int,uint[],int8)") == ("g", ("int256", "uint256[]", "int8"))


@pytest.mark.parametrize("bad", ["transfer", "f(uint256", "f(,uint256)", "f((uint256)", "1f()"])
def test_malformed_signatures_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_signature(bad)


def test_invalid_type_sizes_raise() -> None:
    for bad in ("uint7", "uint264", "bytes33", "int0"):
        with pytest.raises(ValueError, match="invalid ABI type"):
            encode_args([bad], [1])


# ---------------------------------------------------------------- revert data


def test_decode_revert() -> None:
    error = bytes.fromhex("08c379a0") + abi_encode(["string"], ["not enough collateral"])
    assert decode_revert(error) == "not enough collateral"
    assert decode_revert("0x" + error.hex()) == "not enough collateral"
    panic = "0x4e487b71" + (0x11).to_bytes(32, "big").hex()
    assert decode_revert(panic) == "panic 0x11 (arithmetic underflow or overflow)"
    div = "0x4e487b71" + (0x12).to_bytes(32, "big").hex()
    assert decode_revert(div) == "panic 0x12 (division or modulo by zero)"
    unknown = decode_revert("0x4e487b71" + (0x99).to_bytes(32, "big").hex())
    assert unknown == "panic 0x99 (unknown panic code)"
    custom = "0x" + selector("InsufficientMargin(address,uint256)").hex() + "00" * 64
    assert decode_revert(custom) == "0x" + selector("InsufficientMargin(address,uint256)").hex()
    assert decode_revert("0x") is None
    assert decode_revert(b"") is None
    assert decode_revert("not hex") is None
    assert decode_revert("0x08c379a0dead") == "Error(string) with malformed data 0xdead"
