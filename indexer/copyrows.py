"""Rows as PostgreSQL's binary COPY tuples: how raw events travel to the store.

A range's raw-event rows go from the indexer to the store as one ``bytes`` in the tuple
format of ``COPY … FROM STDIN (FORMAT BINARY)``, not as a list of tuples: each row is a
16-bit field count, then each field as a 32-bit length and its value, big-endian.
PostgreSQL takes the bytes as they are (:meth:`indexer.store.BulkWriter.insert_packed`);
SQLite gets the tuples back from :func:`unpack`; and a writer process receives one
bytes object instead of eight objects per row to pickle and unpickle. Measured per raw
row: pickling 0.6 µs and unpickling 1.3 µs; psycopg's ``write_row`` 1.2 µs of the
writer's CPU, which sending packed bytes saves altogether.

A layout is a string of column kinds: ``q`` int8, ``i`` int4, ``b`` bytea; no NULLs.
:func:`pack_row` raises :class:`ValueError` for a value its column cannot hold, so a log
whose quantities do not fit the store fails where it is read, with its name, on both
databases alike. The C twins (``indexer._native.raw_rows``, which packs while it reads
the logs, and ``unpack``) are checked against these functions by
``tests/indexer/test_copyrows.py`` and ``tests/indexer/test_native.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from indexer import native

__all__ = ["SIGNATURE", "TRAILER", "pack_row", "unpack", "unpack_python"]

# The stream's header (signature, flags, header extension length) and its end marker.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"

_FIELDS = struct.Struct(">h")
_LENGTH = struct.Struct(">i")
_INTEGERS = {"q": struct.Struct(">iq"), "i": struct.Struct(">ii")}  # length, value
_WIDTHS = {"q": 8, "i": 4}
_LIMITS = {"q": 1 << 63, "i": 1 << 31}


def pack_row(row: Sequence[Any], kinds: str) -> bytes:
    """``row`` (one value per kind of ``kinds``) as a binary COPY tuple."""
    _check(kinds)
    if len(row) != len(kinds):
        raise ValueError(f"expected {len(kinds)} values, got {len(row)}")
    parts = [_FIELDS.pack(len(kinds))]
    for kind, value in zip(kinds, row, strict=True):
        if kind == "b":
            if type(value) is not bytes:
                raise ValueError(f"expected bytes, got {type(value).__name__}")
            parts += (_LENGTH.pack(len(value)), value)
        elif type(value) is not int or not -_LIMITS[kind] <= value < _LIMITS[kind]:
            raise ValueError(f"{value!r} does not fit an int{_WIDTHS[kind]} column")
        else:
            parts.append(_INTEGERS[kind].pack(_WIDTHS[kind], value))
    return b"".join(parts)


def unpack(data: bytes, kinds: str) -> list[tuple[Any, ...]]:
    """The rows packed in ``data`` (binary COPY tuples of the layout ``kinds``); a
    :class:`ValueError` if ``data`` is not exactly such rows."""
    if native.unpack is not None:
        return native.unpack(data, kinds)
    return unpack_python(data, kinds)


def unpack_python(data: bytes, kinds: str) -> list[tuple[Any, ...]]:
    """:func:`unpack` in Python: the reference for the C one."""
    _check(kinds)
    rows: list[tuple[Any, ...]] = []
    at, end = 0, len(data)
    try:
        while at < end:
            (fields,) = _FIELDS.unpack_from(data, at)
            if fields != len(kinds):
                raise ValueError(f"a row of {fields} fields at byte {at}, expected {len(kinds)}")
            at += 2
            row: list[Any] = []
            for kind in kinds:
                (size,) = _LENGTH.unpack_from(data, at)
                at += 4
                if size != _WIDTHS.get(kind, size) or size < 0 or at + size > end:
                    raise ValueError(f"a field of {size} bytes at byte {at - 4} ({kind!r})")
                value = data[at : at + size]
                row.append(value if kind == "b" else int.from_bytes(value, "big", signed=True))
                at += size
            rows.append(tuple(row))
    except struct.error:
        raise ValueError(f"truncated at byte {at} of {end}") from None
    return rows


def _check(kinds: str) -> None:
    for kind in kinds:
        if kind not in "qib":
            raise ValueError(f"unknown column kind {kind!r} in {kinds!r}: use q, i or b")
