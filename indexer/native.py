"""Which implementation of the indexer's hot loops runs: C or pure Python.

``indexer._native`` (``indexer/_native.c``, built by ``setup.py`` when a C compiler is
there) holds C twins of four loops: EIP-55 checksums (:func:`indexer.abiwords.checksum`),
raw-event rows packed as COPY tuples (``indexer.writer._raw_rows``), their unpacking
(:func:`indexer.copyrows.unpack`) and the batch decoder
(:meth:`indexer.decode.LogDecoder.decode_logs`). The Python code is the specification:
the C loop takes only input that is exactly what JSON-RPC promises and hands anything
else, from the first such log on, to the Python loop, so results and error messages are
the same either way (``tests/indexer/test_native.py`` compares them on random input).

``RTRM_PURE_PYTHON=1`` in the environment turns the C loops off (to compare, or to rule
them out when something looks wrong).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = [
    "checksum",
    "decode",
    "implementation",
    "keccak256",
    "raw_rows",
    "set_decoded_type",
    "unpack",
]

RawRows = tuple[bytes, dict[int, str]]


def _load() -> ModuleType | None:
    if os.environ.get("RTRM_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("indexer._native")
    except ImportError:  # not built: no C compiler at install time
        return None


_module = _load()
# The C functions (see indexer/_native.pyi), or None where the Python loop runs.
keccak256: Callable[[bytes], bytes] | None = None
checksum: Callable[[str], str] | None = None
raw_rows: Callable[[int, list[Any]], RawRows | None] | None = None
unpack: Callable[[bytes, str], list[tuple[Any, ...]]] | None = None
decode: Callable[..., tuple[list[Any], int]] | None = None
set_decoded_type: Callable[[type, tuple[Any, ...]], None] | None = None
if _module is not None:
    keccak256, checksum = _module.keccak256, _module.checksum
    raw_rows, decode = _module.raw_rows, _module.decode
    unpack = _module.unpack
    set_decoded_type = _module.set_decoded_type


def implementation() -> str:
    """``"C"`` or ``"Python"``: what the indexer's hot loops run on in this process."""
    return "C" if _module is not None else "Python"
