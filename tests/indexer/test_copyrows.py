"""Binary COPY tuples (indexer.copyrows): packed rows come back as they went in, the C
unpacker gives what the Python one gives (errors included), and both stores write them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from indexer import native
from indexer.copyrows import _unpack_checked, pack_row, unpack, unpack_python
from indexer.store import BulkWriter, open_store
from indexer.writer import RAW_COLUMNS, RAW_KINDS

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
VALUES = {
    "q": st.integers(-(2**63), 2**63 - 1),
    "i": st.integers(-(2**31), 2**31 - 1),
    "b": st.binary(max_size=80),
}


@st.composite
def layouts(draw: st.DrawFn) -> tuple[str, list[tuple[Any, ...]]]:
    kinds = draw(st.text("qib", min_size=1, max_size=9))
    row = st.tuples(*(VALUES[kind] for kind in kinds))
    return kinds, draw(st.lists(row, max_size=6))


def result(call: Callable[[], Any]) -> Any:
    try:
        return "ok", call()
    except ValueError as exc:
        return "error", str(exc)


@EXAMPLES
@given(layouts())
def test_rows_come_back_as_they_were_packed(case: tuple[str, list[tuple[Any, ...]]]) -> None:
    kinds, rows = case
    packed = b"".join(pack_row(row, kinds) for row in rows)
    assert unpack_python(packed, kinds) == rows
    assert unpack(packed, kinds) == rows


needs_c = pytest.mark.skipif(native.unpack is None, reason="indexer._native is not built")


@needs_c
@EXAMPLES
@given(layouts(), st.data())
def test_c_unpacks_broken_bytes_as_python_does(
    case: tuple[str, list[tuple[Any, ...]]], data: st.DataObject
) -> None:
    """Cut short, a byte changed, a byte added, a layout that does not match: the same
    rows or the same ValueError."""
    assert native.unpack is not None
    kinds, rows = case
    packed = bytearray(b"".join(pack_row(row, kinds) for row in rows))
    cut = data.draw(st.integers(0, len(packed)))
    variants = [bytes(packed[:cut]), bytes(packed) + b"\x00", bytes(packed) + b"\x00\x05"]
    if packed:
        at = data.draw(st.integers(0, len(packed) - 1))
        changed = bytearray(packed)
        changed[at] = data.draw(st.integers(0, 255))
        variants.append(bytes(changed))
    other = data.draw(st.text("qib", min_size=1, max_size=9))
    for variant in variants:
        for layout in (kinds, other):
            c_result = result(partial(native.unpack, variant, layout))
            assert c_result == result(partial(unpack_python, variant, layout))


@EXAMPLES
@given(st.lists(layouts(), min_size=1, max_size=3), st.data())
def test_whole_row_reads_give_what_field_by_field_reads_give(
    cases: list[tuple[str, list[tuple[Any, ...]]]], data: st.DataObject
) -> None:
    """Rows whose sizes change or repeat (the whole-row guess right and wrong), cut short,
    a byte changed: the same rows, or the checked reader's error."""
    kinds = cases[0][0]
    rows = [row for layout, found in cases if layout == kinds for row in found]
    rows += [row for row in rows[:3] if data.draw(st.booleans())]  # sizes seen before
    packed = bytearray(b"".join(pack_row(row, kinds) for row in rows))
    variants = [bytes(packed), bytes(packed[: data.draw(st.integers(0, len(packed)))])]
    if packed:
        at = data.draw(st.integers(0, len(packed) - 1))
        packed[at] = data.draw(st.integers(0, 255))
        variants.append(bytes(packed))
    for variant in variants:
        assert result(partial(unpack_python, variant, kinds)) == result(
            partial(_unpack_checked, variant, kinds)
        )


@pytest.mark.parametrize("unpacker", [unpack, unpack_python])
def test_errors_name_the_problem(unpacker: Callable[[bytes, str], Any]) -> None:
    row = pack_row((1, 2, b"ab"), "qib")
    with pytest.raises(ValueError, match=r"unknown column kind 'x' in 'qxb': use q, i or b"):
        unpacker(row, "qxb")
    with pytest.raises(ValueError, match=r"a row of 3 fields at byte 0, expected 2"):
        unpacker(row, "qi")
    with pytest.raises(ValueError, match=r"a field of 8 bytes at byte 2 \('i'\)"):
        unpacker(row, "iqb")
    with pytest.raises(ValueError, match=r"truncated at byte 22 of 23"):
        unpacker(row[:-5], "qib")
    with pytest.raises(ValueError, match=r"a field of 2 bytes at byte 22 \('b'\)"):
        unpacker(row[:-1], "qib")


@pytest.mark.parametrize(
    ("row", "kinds", "message"),
    [
        ((2**63,), "q", "does not fit an int8 column"),
        ((-(2**63) - 1,), "q", "does not fit an int8 column"),
        ((2**31,), "i", "does not fit an int4 column"),
        ((True,), "i", "does not fit an int4 column"),
        (("ab",), "b", "expected bytes, got str"),
        ((1, 2), "q", "expected 1 values, got 2"),
        ((1,), "z", "unknown column kind 'z'"),
    ],
)
def test_a_value_its_column_cannot_hold_is_refused(
    row: tuple[Any, ...], kinds: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pack_row(row, kinds)


def test_the_store_writes_packed_rows_on_both_databases(store_url: str) -> None:
    """PostgreSQL copies the bytes as they are; SQLite inserts the unpacked tuples."""
    rows = [
        (10, 2**63 - 1, 2**31 - 1, b"\x01" * 32, 0, b"\x02" * 20, b"", b""),
        (10, 0, 0, b"\x03" * 32, 7, b"\x04" * 20, b"\x05" * 128, b"\x06" * 300),
        (10, 5, 1, b"\x07" * 32, 2**31 - 1, b"\x08" * 20, b"\x09" * 32, b"\x0a"),
    ]
    chunks = [pack_row(rows[0], RAW_KINDS) + pack_row(rows[1], RAW_KINDS), b""]
    chunks.append(pack_row(rows[2], RAW_KINDS))
    store = open_store(store_url)
    try:
        with store.transaction() as conn:
            BulkWriter(conn).insert_packed("raw_event", RAW_COLUMNS, RAW_KINDS, chunks)
        columns = ", ".join(RAW_COLUMNS)
        with store.engine.connect() as conn:
            found = conn.execute(text(f"SELECT {columns} FROM raw_event ORDER BY block_number"))
            assert [tuple(row) for row in found] == sorted(rows, key=lambda row: row[1])
    finally:
        store.dispose()
