"""What commands print: rich tables for people, JSON with stable keys for scripts.

Every command that prints a table also takes ``--json``; both come from the same data
through :func:`emit`. Tables and JSON go to stdout, logs and errors to stderr.

JSON rules, so scripts can rely on them: keys sorted; ints stay ints (wei amounts are
exact, never floats); ``Decimal`` becomes a string (exact); enums their value; paths
strings; dataclasses objects of their fields; tuples and sets arrays (sets sorted);
mapping keys strings (chain ids ``"42161"``); NaN and infinities ``null``; bytes
``0x…`` hex; dates and times ISO 8601 (implemented once, in :mod:`api.encoding`, so
``rtrm … --json`` and the HTTP API print the same values).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable

from rich.console import Console, RenderableType
from rich.table import Table

# One set of JSON rules for the CLI and the API: the API's module sits lower in the layers.
from api.encoding import JSONValue, to_json

__all__ = ["JSONValue", "console", "dumps_json", "emit", "make_table", "to_json"]


def dumps_json(data: object) -> str:
    """Indented JSON with sorted keys; raises TypeError for values it cannot represent."""
    return json.dumps(to_json(data), indent=2, sort_keys=True, allow_nan=False)


def console() -> Console:
    """A console on the current stdout (looked up per call, so redirection is honoured)."""
    return Console(file=sys.stdout, soft_wrap=False)


def make_table(*columns: str, title: str | None = None, numeric: Iterable[str] = ()) -> Table:
    """A table in the house style; columns named in ``numeric`` are right-aligned.

    Cells wrap rather than truncate: an address cut short with an ellipsis is worse
    than a wrapped one.
    """
    right = set(numeric)
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        if column in right:
            table.add_column(column, justify="right", overflow="fold")
        else:
            table.add_column(column, overflow="fold")
    return table


def emit(
    data: object,
    *,
    as_json: bool,
    table: Callable[[], RenderableType] | None = None,
) -> None:
    """Print ``data`` as JSON if ``as_json`` (or there is no table), else render ``table()``.

    ``table`` is a callable so that the JSON path never pays for building the table.
    """
    if as_json or table is None:
        sys.stdout.write(dumps_json(data) + "\n")
    else:
        console().print(table())
