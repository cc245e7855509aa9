"""JSON bodies of the API: the same rules as the command line's ``--json``.

``api`` sits below ``rtrm`` in the layers, so it cannot use ``rtrm.output``; these are the
same rules, so a client sees the keys and values ``rtrm … --json`` prints: ints stay ints
(wei amounts are exact, never floats), ``Decimal`` becomes a string, enums their value,
dataclasses objects of their fields, tuples and sets arrays (sets sorted), mapping keys
strings (chain ids ``"42161"``), NaN and infinities ``null``, bytes ``0x…`` hex, dates
and times ISO 8601. Bodies are compact and key-sorted; orjson writes them, with the
standard library as the fallback for integers beyond 64 bits.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import TypeAlias

import orjson

__all__ = ["JSONValue", "dumps", "to_json"]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None


def to_json(value: object) -> JSONValue:
    """``value`` as plain JSON data, by the rules in the module docstring."""
    match value:
        case None | bool() | int() | str():
            return value.value if isinstance(value, Enum) else value
        case float():
            return value if math.isfinite(value) else None
        case Enum():
            return to_json(value.value)
        case Decimal():
            return str(value)
        case PurePath():
            return str(value)
        case datetime() | date() | time():
            return value.isoformat()
        case bytes():
            return "0x" + value.hex()
        case Mapping():
            return {_key(key): to_json(item) for key, item in value.items()}
        case set() | frozenset():
            return sorted((to_json(item) for item in value), key=json.dumps)
        case list() | tuple():
            return [to_json(item) for item in value]
        case _ if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy scalar
        return to_json(value.item())
    raise TypeError(f"cannot write {type(value).__name__} as JSON: {value!r}")


def _key(key: object) -> str:
    converted = to_json(key)
    return converted if isinstance(converted, str) else json.dumps(converted)


def dumps(value: object) -> bytes:
    """``value`` as a compact, key-sorted JSON body (UTF-8)."""
    data = to_json(value)
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits: exact through the standard library
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return text.encode()
