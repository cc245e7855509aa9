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
:func:`pack_row` is the reference: it raises :class:`ValueError` for a value its column
cannot hold. The indexer's raw-row loops (``indexer.writer._raw_rows`` with one cached
``struct`` per row, its C twin ``indexer._native.raw_rows`` while it reads the logs)
make the same bytes and refuse the same values, so a log whose quantities do not fit the
store fails where it is read, with its name, on both databases alike. The C unpacker
(``indexer._native.unpack``) is checked against :func:`unpack_python` by
``tests/indexer/test_copyrows.py``, the raw-row loops by ``tests/indexer/test_native.py``
and ``tests/indexer/test_writer.py``.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

from indexer import native

__all__ = ["SIGNATURE", "TRAILER", "pack_row", "row_struct", "unpack", "unpack_python"]

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
    """:func:`unpack` in Python: the reference for the C one. Consecutive rows often have
    bytes of the same sizes: each row is first read whole as if it had the previous row's
    (one :func:`row_struct` call, right when every length it reads says so: 0.9 µs per
    raw row), else field by field (:func:`_read_row`, 3.0 µs), which says where the bytes
    are not such rows."""
    _check(kinds)
    rows: list[tuple[Any, ...]] = []
    at, end = 0, len(data)
    whole: struct.Struct | None = None
    lengths: tuple[int, ...] = ()
    while at < end:
        if whole is not None and at + whole.size <= end:
            got = whole.unpack_from(data, at)
            if got[0] == len(kinds) and got[1::2] == lengths:  # each field where guessed
                rows.append(got[2::2])
                at += whole.size
                continue
        row, at, sizes = _read_row(data, at, kinds)
        rows.append(row)
        whole, lengths = row_struct(kinds, sizes), _lengths(kinds, sizes)
    return rows


@functools.lru_cache(maxsize=1024)
def row_struct(kinds: str, sizes: tuple[int, ...]) -> struct.Struct:
    """One row of ``kinds`` whose bytes fields have ``sizes``, as one ``struct``: the field
    count, then each field's length and value (integers out of range raise
    ``struct.error`` when packing)."""
    fmt, bytes_sizes = [">h"], iter(sizes)
    for kind in kinds:
        fmt.append("iq" if kind == "q" else "ii" if kind == "i" else f"i{next(bytes_sizes)}s")
    return struct.Struct("".join(fmt))


@functools.lru_cache(maxsize=1024)
def _lengths(kinds: str, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The length of each field of such a row (every second value after the count)."""
    bytes_sizes = iter(sizes)
    return tuple(_WIDTHS[kind] if kind in _WIDTHS else next(bytes_sizes) for kind in kinds)


def _read_row(data: bytes, at: int, kinds: str) -> tuple[tuple[Any, ...], int, tuple[int, ...]]:
    """The row at byte ``at`` read field by field, where the next one starts and the sizes
    of its bytes fields; a :class:`ValueError` that says where the bytes are not a row."""
    end = len(data)
    try:
        (fields,) = _FIELDS.unpack_from(data, at)
        if fields != len(kinds):
            raise ValueError(f"a row of {fields} fields at byte {at}, expected {len(kinds)}")
        at += 2
        row: list[Any] = []
        sizes: list[int] = []
        for kind in kinds:
            (size,) = _LENGTH.unpack_from(data, at)
            at += 4
            if size != _WIDTHS.get(kind, size) or size < 0 or at + size > end:
                raise ValueError(f"a field of {size} bytes at byte {at - 4} ({kind!r})")
            value = data[at : at + size]
            if kind == "b":
                row.append(value)
                sizes.append(size)
            else:
                row.append(int.from_bytes(value, "big", signed=True))
            at += size
    except struct.error:
        raise ValueError(f"truncated at byte {at} of {end}") from None
    return tuple(row), at, tuple(sizes)


def _unpack_checked(data: bytes, kinds: str) -> list[tuple[Any, ...]]:
    """The rows in ``data``, each read field by field (:func:`unpack_python` without its
    whole-row reads: what the tests compare it with)."""
    _check(kinds)
    rows: list[tuple[Any, ...]] = []
    at = 0
    while at < len(data):
        row, at, _ = _read_row(data, at, kinds)
        rows.append(row)
    return rows


def _check(kinds: str) -> None:
    for kind in kinds:
        if kind not in "qib":
            raise ValueError(f"unknown column kind {kind!r} in {kinds!r}: use q, i or b")
