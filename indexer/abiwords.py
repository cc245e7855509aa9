"""One ABI value, checked: the reference that :mod:`indexer.decode`'s generated code matches.

A 32-byte word (from a topic or from data) becomes the value ``eth_abi.decode`` would
return, in our conventions: ``uintN``/``intN`` -> ``int``, ``bool`` -> ``bool``,
``address`` -> EIP-55 checksummed ``str``, ``bytesN`` -> ``"0x"`` + 2N lowercase hex
digits, an indexed reference type -> its topic as 0x-hex; anything else goes through
``eth_abi``. A word that ``eth_abi`` rejects, or a JSON-RPC field that is not the hex it
should be, raises :class:`MalformedError` saying why (:mod:`indexer.decode` turns it into a
``DecodeError`` that says where). Nothing here is on the fast path except the helpers the
generated decoders call on a cache miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from Crypto.Hash import keccak as pycryptodome_keccak
from eth_abi.abi import decode as abi_decode
from eth_abi.grammar import ABIType, BasicType, TupleType
from eth_abi.grammar import parse as parse_abi_type

from indexer import native

__all__ = [
    "ADDRESS_PARAM",
    "BOOL_TOPICS",
    "BOOL_WORDS",
    "HEX_WORD",
    "QUANTITIES",
    "WORD",
    "ArgValue",
    "MalformedError",
    "Param",
    "abi_values",
    "checked_address",
    "checksum",
    "checksum_python",
    "hex_bytes",
    "node_hash",
    "param_kind",
    "topic_word",
    "word_value",
]

ArgValue = int | str | bool | bytes | tuple[Any, ...]
WORD = 32
HEX_WORD = 66  # characters of a 0x-hex 32-byte word
BOOL_WORDS = {bytes(WORD): False, bytes(WORD - 1) + b"\x01": True}
BOOL_TOPICS = {"0x" + "0" * 64: False, "0x" + "0" * 63 + "1": True}
_CHECKSUM_CACHE_SIZE = 65_536  # the same address in another form: usually the same log
_BIT5 = int.from_bytes(b"\x20" * 40, "big")  # bit 5 of each of 40 bytes
_QUANTITY_RE = re.compile(r"0x[0-9a-fA-F]{1,64}")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


class MalformedError(Exception):
    """A value that ``eth_abi`` (or JSON-RPC) would reject; ``str()`` says why."""


class _Quantities(dict[str, int]):
    """``"0x0"`` ... ``"0xfff"`` -> int, looked up; anything else parsed strictly."""

    def __missing__(self, value: Any) -> int:
        if not isinstance(value, str) or not _QUANTITY_RE.fullmatch(value):
            raise MalformedError(f"{value!r} is not a 0x hex quantity")
        return int(value, 16)


QUANTITIES = _Quantities({hex(i): i for i in range(4096)})


@lru_cache(maxsize=_CHECKSUM_CACHE_SIZE)
def checksum(body: str) -> str:
    """EIP-55: 40 hex digits (no ``0x``, already validated) -> ``"0x"`` + mixed case."""
    if native.checksum is not None:  # the same in C: ~1 µs instead of ~7
        return native.checksum(body)
    return checksum_python(body)


def checksum_python(body: str) -> str:
    """:func:`checksum` in Python (pycryptodome's keccak): the reference for the C one."""
    lower = body.lower().encode()
    digest = pycryptodome_keccak.new(data=lower, digest_bits=256).digest()
    # Upper-case the letters whose digest nibble is >= 8, 40 characters at once: as 320-bit
    # integers with one ASCII character per byte, a digit >= 8 ('8', '9', 'a'-'f') has bit 3
    # or bit 6 set, a letter bit 6, and upper case is lower case with bit 5 cleared.
    nibbles = int.from_bytes(digest[:20].hex().encode(), "big")
    high = ((nibbles >> 1) | (nibbles << 2)) & _BIT5
    text = int.from_bytes(lower, "big")
    return "0x" + (text ^ ((text >> 1) & high)).to_bytes(40, "big").decode()


def checked_address(address: Any) -> str:
    """A JSON-RPC address (``"0x"`` + 40 hex digits, any case), checksummed."""
    if not isinstance(address, str) or not _ADDRESS_RE.fullmatch(address):
        raise MalformedError(f"{address!r} is not 0x + 40 hex digits")
    return checksum(address[2:])


def hex_bytes(value: Any, size: int | None, what: str) -> bytes:
    """``"0x"`` + hex digits as bytes (``size`` of them unless ``None``), else
    ``MalformedError``; ``bytes.fromhex`` skips spaces, hence the length check."""
    digits = value[2:] if isinstance(value, str) and value[:2] == "0x" else "?"
    try:
        raw: bytes | None = bytes.fromhex(digits)
    except ValueError:
        raw = None
    if raw is None or len(raw) * 2 != len(digits) or (size is not None and len(raw) != size):
        want = "an even number of" if size is None else str(2 * size)
        raise MalformedError(f"{what} {str(value)[:80]!r} is not 0x + {want} hex digits")
    return raw


def node_hash(value: Any, what: str) -> str:
    """A block or transaction hash as nodes write it, ``"0x"`` + 64 hex digits in lower
    case (RTRM stores and compares block hashes as text: upper case would be another)."""
    hex_bytes(value, WORD, what)
    if value != value.lower():
        raise MalformedError(f"{what} {str(value)[:80]!r} is not in lower case, as nodes write it")
    return str(value)


def topic_word(topic: Any) -> bytes:
    """A topic (or a block or transaction hash): ``"0x"`` + 64 hex digits, as 32 bytes."""
    return hex_bytes(topic, WORD, "topic")


@dataclass(frozen=True, slots=True)
class Param:
    """One event parameter, and where and how its value is read."""

    name: str
    abi_type: str
    indexed: bool
    kind: str  # address | bool | uint | int | bytes | hash (indexed reference type) | abi
    size: int  # bits of uintN/intN, bytes of bytesN
    slot: int  # topic index, data word index, or position in the eth_abi result


ADDRESS_PARAM = Param("address", "address", False, "address", 0, 0)


def param_kind(abi_type: str, indexed: bool) -> tuple[str, int]:
    """(kind, size) of a parameter of ``abi_type`` (see :class:`Param`)."""
    parsed = parse_abi_type(abi_type)
    if isinstance(parsed, BasicType) and not parsed.is_array:
        if parsed.base in ("address", "bool"):
            return parsed.base, 0
        if parsed.base in ("uint", "int") or (parsed.base == "bytes" and parsed.sub):
            return parsed.base, int(parsed.sub)
    if indexed and (parsed.is_dynamic or parsed.is_array or isinstance(parsed, TupleType)):
        return "hash", 0  # Solidity stores keccak256(value) as the topic of reference types
    return "abi", 0  # fixed/ufixed/function, or composite data: eth_abi decodes it


def word_value(p: Param, word: bytes) -> ArgValue:
    """Checked decode of one 32-byte word: the reference the generated code must match."""
    if p.kind == "address":
        if word[:12] != bytes(12):
            raise MalformedError(f"address word 0x{word.hex()} has non-zero upper 12 bytes")
        return checksum(word[12:].hex())
    if p.kind == "bool":
        if word not in BOOL_WORDS:
            raise MalformedError(f"bool word 0x{word.hex()} is neither 0 nor 1")
        return BOOL_WORDS[word]
    if p.kind in ("uint", "int"):
        value = int.from_bytes(word, "big", signed=p.kind == "int")
        low, high = (0, 1 << p.size) if p.kind == "uint" else (-(1 << p.size - 1), 1 << p.size - 1)
        if not low <= value < high:
            wrong = "does not fit" if p.kind == "uint" else "is not a sign-extended"
            raise MalformedError(f"word 0x{word.hex()} {wrong} {p.kind}{p.size}")
        return value
    if p.kind == "bytes":
        if word[p.size :] != bytes(WORD - p.size):
            raise MalformedError(f"bytes{p.size} word 0x{word.hex()} has non-zero padding")
        return "0x" + word[: p.size].hex()
    if p.kind == "hash":
        return "0x" + word.hex()
    return abi_values((p.abi_type,), word)[0]


def abi_values(types: tuple[str, ...], raw: bytes) -> tuple[ArgValue, ...]:
    """``eth_abi.decode(types, raw)`` in our conventions; :class:`MalformedError` if it
    cannot decode them."""
    try:
        values = abi_decode(list(types), raw)
    except Exception as exc:  # eth_abi raises several unrelated types on bad input
        raise MalformedError(f"eth_abi cannot decode {types}: {exc}") from None
    return tuple(_normalise(parse_abi_type(t), v) for t, v in zip(types, values, strict=True))


def _normalise(abi_type: ABIType, value: Any) -> Any:
    """eth_abi's value in our conventions: checksummed addresses, bytesN as 0x-hex."""
    if abi_type.is_array:
        return tuple(_normalise(abi_type.item_type, v) for v in value)
    if isinstance(abi_type, TupleType):
        return tuple(_normalise(t, v) for t, v in zip(abi_type.components, value, strict=True))
    if isinstance(abi_type, BasicType) and abi_type.base == "address":
        return checksum(value[2:])
    if isinstance(abi_type, BasicType) and abi_type.base == "bytes" and abi_type.sub:
        return "0x" + bytes(value).hex()
    return value
