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
from dataclasses import dataclass
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
    """:func:`unpack` in Python: the reference for the C one. Reads a row in one
    ``struct`` call when its bytes have the previous row's sizes, else in one per bytes
    field (:func:`_unpack_planned`: 0.9 to 2.4 µs per raw row); anything unexpected goes to
    :func:`_unpack_checked`, which reads field by field (3.0 µs) and says where the bytes
    went wrong."""
    _check(kinds)
    try:
        return _unpack_planned(data, kinds)
    except (ValueError, struct.error):
        return _unpack_checked(data, kinds)


@dataclass(frozen=True, slots=True)
class _Step:
    """One ``unpack_from`` of a row: the field count (first step only), each integer field
    as (length, value), and the length of the bytes field that follows, if one does."""

    reader: struct.Struct
    counted: bool
    lengths: slice  # of what ``reader`` reads: the integers' lengths...
    widths: tuple[int, ...]  # ...which must be these
    values: slice  # the integers
    then_bytes: bool


@functools.cache
def _plan(kinds: str) -> tuple[_Step, ...]:
    """The steps that read a row of ``kinds``: one per bytes field, and one for the
    integers after the last of them."""
    steps: list[_Step] = []
    fmt, widths, counted = ">h", [], True
    for kind in [*kinds, ""]:
        if kind in _WIDTHS:
            fmt += "iq" if kind == "q" else "ii"
            widths.append(_WIDTHS[kind])
            continue
        if kind or len(fmt) > 1:  # a bytes field, or integers after the last one
            c, k = int(counted), len(widths)
            reader = struct.Struct(fmt + ("i" if kind else ""))
            values = slice(c + 1, c + 2 * k, 2)
            lengths = slice(c, c + 2 * k, 2)
            steps.append(_Step(reader, counted, lengths, tuple(widths), values, bool(kind)))
        fmt, widths, counted = ">", [], False
    return tuple(steps)


def _unpack_planned(data: bytes, kinds: str) -> list[tuple[Any, ...]]:
    """The rows in ``data``; a ValueError or ``struct.error`` at the first thing that is
    not as :func:`pack_row` makes it. Consecutive rows often have bytes of the same sizes:
    each row is first read whole as if it had the previous row's (one ``struct`` call,
    right when every length read says so), else step by step (:func:`_plan`)."""
    steps, fields = _plan(kinds), len(kinds)
    rows: list[tuple[Any, ...]] = []
    at, end = 0, len(data)
    whole: struct.Struct | None = None
    lengths: tuple[int, ...] = ()
    while at < end:
        if whole is not None and at + whole.size <= end:
            got = whole.unpack_from(data, at)
            if got[0] == fields and got[1::2] == lengths:  # each field where it was guessed
                rows.append(got[2::2])
                at += whole.size
                continue
        row: tuple[Any, ...] = ()
        sizes: list[int] = []
        for step in steps:
            got = step.reader.unpack_from(data, at)
            at += step.reader.size
            if (step.counted and got[0] != fields) or got[step.lengths] != step.widths:
                raise ValueError("not a row of this layout")
            row += got[step.values]
            if step.then_bytes:
                size = got[-1]
                if size < 0 or at + size > end:
                    raise ValueError("a bytes field runs past the end")
                row += (data[at : at + size],)
                sizes.append(size)
                at += size
        rows.append(row)
        whole, lengths = _whole_row(kinds, tuple(sizes))
    return rows


@functools.lru_cache(maxsize=1024)
def _whole_row(kinds: str, sizes: tuple[int, ...]) -> tuple[struct.Struct, tuple[int, ...]]:
    """A row of ``kinds`` whose bytes fields have ``sizes``, in one ``struct``, and the
    lengths it must read (every second value from the first after the count)."""
    fmt, lengths, bytes_sizes = [">h"], [], iter(sizes)
    for kind in kinds:
        size = _WIDTHS[kind] if kind in _WIDTHS else next(bytes_sizes)
        fmt.append("iq" if kind == "q" else "ii" if kind == "i" else f"i{size}s")
        lengths.append(size)
    return struct.Struct("".join(fmt)), tuple(lengths)


def _unpack_checked(data: bytes, kinds: str) -> list[tuple[Any, ...]]:
    """The rows in ``data`` read field by field: a :class:`ValueError` that says where the
    bytes are not such rows."""
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
