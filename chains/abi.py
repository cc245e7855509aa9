"""Fast, exact ABI calldata encoding and revert-data decoding.

The scenario seeder sends about a million transactions, and ``eth_abi.encode`` costs
tens of microseconds per call, so the static elementary types that make up almost all
of our calldata (``address``, ``bool``, ``uintN``, ``intN``, ``bytesN``) are encoded by
hand here; any other type (``bytes``, ``string``, arrays, tuples) falls back to
``eth_abi.encode`` for the whole argument list.

Invariants:

- ``encode_args(types, values)`` is byte-for-byte equal to ``eth_abi.encode(types,
  values)`` for every input ``eth_abi`` accepts (the tests check this with hypothesis).
  Out-of-range values raise ``ValueError`` and values of the wrong Python type raise
  ``TypeError``, naming the argument's position and type (``eth_abi``'s own errors from
  the generic path are re-raised as those two builtins too).
- Signatures are canonicalised before hashing: spaces removed, ``uint``/``int``
  widened to ``uint256``/``int256``. Selectors, topics and parsed signatures are cached.
- Addresses may be given in any case, unverified (as ``eth_abi`` does: checksums are
  checked where addresses enter the system, not in this hot path), or as 20 raw bytes.
- ``bytesN`` accepts ``bytes`` or a ``0x`` hex string of at most N bytes, right-padded
  with zeros as ``eth_abi`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import EncodingError, EncodingTypeError
from eth_utils.crypto import keccak

__all__ = [
    "decode_revert",
    "encode_args",
    "encode_call",
    "event_topic",
    "parse_signature",
    "selector",
]

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

# Solidity's panic codes (docs: "Panic via assert and Error via require").
PANIC_REASONS: dict[int, str] = {
    0x00: "generic compiler panic",
    0x01: "assert failed",
    0x11: "arithmetic underflow or overflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "invalid storage byte array encoding",
    0x31: "pop on empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory (allocation too large)",
    0x51: "call to zero-initialised internal function",
}

_Encoder = Callable[[Any, int], bytes]  # (value, argument index) -> 32-byte word

_SIGNATURE_RE = re.compile(r"^\s*([A-Za-z_$][A-Za-z0-9_$]*)\s*\((.*)\)\s*$", re.DOTALL)
_INT_ALIAS_RE = re.compile(r"\b(u?int)(?![0-9])")
_HEX_ADDRESS_RE = re.compile(r"^0[xX][0-9a-fA-F]{40}$")
WORD_BYTES = 32
ADDRESS_BYTES = 20
SELECTOR_BYTES = 4
MAX_INT_BITS = 256
_ZERO12 = bytes(WORD_BYTES - ADDRESS_BYTES)


# ---------------------------------------------------------------- signatures


@lru_cache(maxsize=4096)
def parse_signature(signature: str) -> tuple[str, tuple[str, ...]]:
    """Split ``"transfer(address, uint)"`` into ``("transfer", ("address", "uint256"))``."""
    match = _SIGNATURE_RE.match(signature)
    if match is None:
        raise ValueError(f"malformed function signature {signature!r}; expected 'name(type,...)'")
    name, inner = match.group(1), "".join(match.group(2).split())
    return name, tuple(_canonical_type(t) for t in _split_top_level(inner, signature))


def _split_top_level(inner: str, signature: str) -> list[str]:
    """Split on commas that are not inside a tuple's parentheses."""
    if not inner:
        return []
    parts, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
        if depth < 0:
            break
    parts.append(inner[start:])
    if depth != 0 or any(not part for part in parts):
        raise ValueError(f"malformed parameter list in signature {signature!r}")
    return parts


def _canonical_type(abi_type: str) -> str:
    return _INT_ALIAS_RE.sub(r"\g<1>256", abi_type)


def _canonical_signature(signature: str) -> str:
    name, types = parse_signature(signature)
    return f"{name}({','.join(types)})"


@lru_cache(maxsize=4096)
def selector(signature: str) -> bytes:
    """The 4-byte function selector: ``keccak256(canonical signature)[:4]``."""
    return keccak(text=_canonical_signature(signature))[:4]


@lru_cache(maxsize=4096)
def event_topic(signature: str) -> str:
    """The event's topic0 as 0x-prefixed lowercase hex (``keccak256`` of the signature)."""
    return "0x" + keccak(text=_canonical_signature(signature)).hex()


# ---------------------------------------------------------------- encoding


def encode_args(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """ABI-encode ``values`` as ``types`` (the argument block, without a selector)."""
    if len(types) != len(values):
        raise ValueError(f"{len(types)} ABI types but {len(values)} values: {tuple(types)}")
    encoders = _encoders_for(tuple(types))
    if encoders is None:
        return _generic_encode(tuple(types), values)
    return _encode_static(encoders, values)


def encode_call(signature: str, *args: Any) -> str:
    """Calldata for ``signature`` called with ``args``, as a 0x-prefixed hex string."""
    prefix, types, encoders = _call_plan(signature)
    if len(args) != len(types):
        raise ValueError(f"{signature} takes {len(types)} arguments, got {len(args)}")
    if encoders is None:
        return prefix + _generic_encode(types, args).hex()
    return prefix + _encode_static(encoders, args).hex()


def _encode_static(encoders: tuple[_Encoder, ...], values: Sequence[Any]) -> bytes:
    pairs = zip(encoders, values, strict=True)
    return b"".join([encode(value, i) for i, (encode, value) in enumerate(pairs)])


def _generic_encode(types: tuple[str, ...], values: Sequence[Any]) -> bytes:
    try:
        return abi_encode(list(types), list(values))
    except EncodingTypeError as exc:
        raise TypeError(f"cannot encode {list(values)!r} as {types}: {exc}") from exc
    except EncodingError as exc:
        raise ValueError(f"cannot encode {list(values)!r} as {types}: {exc}") from exc


@lru_cache(maxsize=4096)
def _call_plan(signature: str) -> tuple[str, tuple[str, ...], tuple[_Encoder, ...] | None]:
    _, types = parse_signature(signature)
    return "0x" + selector(signature).hex(), types, _encoders_for(types)


@lru_cache(maxsize=4096)
def _encoders_for(types: tuple[str, ...]) -> tuple[_Encoder, ...] | None:
    """One fast encoder per type, or ``None`` if any type needs the generic encoder."""
    encoders = [_static_encoder(_canonical_type(t)) for t in types]
    if any(encoder is None for encoder in encoders):
        return None
    return tuple(e for e in encoders if e is not None)


def _static_encoder(abi_type: str) -> _Encoder | None:
    if abi_type == "address":
        return _encode_address
    if abi_type == "bool":
        return _encode_bool
    for prefix, make in (("uint", _uint_encoder), ("int", _int_encoder), ("bytes", _bytes_encoder)):
        if abi_type.startswith(prefix) and abi_type[len(prefix) :].isdigit():
            return make(int(abi_type[len(prefix) :]))
    return None


def _encode_address(value: Any, index: int) -> bytes:
    if isinstance(value, str):
        try:
            return _address_word(value)
        except ValueError as exc:
            raise ValueError(f"argument {index} (address): {exc}") from None
    if isinstance(value, bytes | bytearray) and len(value) == ADDRESS_BYTES:
        return _ZERO12 + bytes(value)
    raise TypeError(f"argument {index} (address): expected a 0x hex address, got {value!r}")


@lru_cache(maxsize=65536)
def _address_word(value: str) -> bytes:
    if not _HEX_ADDRESS_RE.match(value):
        raise ValueError(f"{value!r} is not 0x + 40 hex digits")
    return _ZERO12 + bytes.fromhex(value[2:])


_TRUE_WORD = (1).to_bytes(WORD_BYTES, "big")
_FALSE_WORD = bytes(WORD_BYTES)


def _encode_bool(value: Any, index: int) -> bytes:
    if value is True:
        return _TRUE_WORD
    if value is False:
        return _FALSE_WORD
    raise TypeError(f"argument {index} (bool): expected True or False, got {value!r}")


def _check_bits(bits: int, abi_type: str) -> None:
    if not 0 < bits <= MAX_INT_BITS or bits % 8:
        raise ValueError(f"invalid ABI type {abi_type!r}: size must be a multiple of 8 in 8..256")


def _uint_encoder(bits: int) -> _Encoder:
    _check_bits(bits, f"uint{bits}")
    upper = 1 << bits

    def encode(value: Any, index: int) -> bytes:
        if type(value) is not int:
            _reject_non_int(value, index, f"uint{bits}")
        if not 0 <= value < upper:
            raise ValueError(f"argument {index} (uint{bits}): {value} is outside [0, 2**{bits})")
        return value.to_bytes(32, "big")  # type: ignore[no-any-return]

    return encode


def _int_encoder(bits: int) -> _Encoder:
    _check_bits(bits, f"int{bits}")
    bound = 1 << (bits - 1)

    def encode(value: Any, index: int) -> bytes:
        if type(value) is not int:
            _reject_non_int(value, index, f"int{bits}")
        if not -bound <= value < bound:
            raise ValueError(
                f"argument {index} (int{bits}): {value} is outside [-2**{bits - 1}, 2**{bits - 1})"
            )
        return value.to_bytes(32, "big", signed=True)  # type: ignore[no-any-return]

    return encode


def _reject_non_int(value: Any, index: int, abi_type: str) -> None:
    """Allow int subclasses (IntEnum, NewType values are plain ints) but never bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"argument {index} ({abi_type}): expected an int, got {value!r}")


def _bytes_encoder(size: int) -> _Encoder:
    if not 0 < size <= WORD_BYTES:
        raise ValueError(f"invalid ABI type 'bytes{size}': size must be in 1..32")

    def encode(value: Any, index: int) -> bytes:
        raw = _as_bytes(value, index, f"bytes{size}")
        if len(raw) > size:
            raise ValueError(f"argument {index} (bytes{size}): {len(raw)} bytes is too long")
        return raw.ljust(WORD_BYTES, b"\0")

    return encode


def _as_bytes(value: Any, index: int, abi_type: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise TypeError(f"argument {index} ({abi_type}): expected bytes or 0x hex, got {value!r}")


# ---------------------------------------------------------------- revert data


def decode_revert(data: str | bytes) -> str | None:
    """A readable reason for revert ``data``, or ``None`` when there is no data.

    ``Error(string)`` gives the string, ``Panic(uint256)`` gives ``"panic 0x11 (arithmetic
    underflow or overflow)"``, and anything else (a custom error) gives its 4-byte
    selector as ``"0x"`` + 8 hex digits (shorter data is returned as hex in full).
    """
    raw = _revert_bytes(data)
    if not raw:
        return None
    head, body = raw[:SELECTOR_BYTES], raw[SELECTOR_BYTES:]
    if head == ERROR_SELECTOR:
        try:
            (reason,) = abi_decode(["string"], body)
        except Exception:  # eth_abi raises several unrelated types on malformed data
            return "Error(string) with malformed data 0x" + body.hex()
        return str(reason)
    if head == PANIC_SELECTOR and len(body) == WORD_BYTES:
        code = int.from_bytes(body, "big")
        return f"panic 0x{code:02x} ({PANIC_REASONS.get(code, 'unknown panic code')})"
    return "0x" + head.hex()


def _revert_bytes(data: str | bytes) -> bytes:
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    text = data[2:] if data[:2] in ("0x", "0X") else data
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
