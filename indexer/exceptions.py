"""Errors raised by the ``indexer`` package.

Messages name the chain id and block range involved and what to do next::

    IndexerError        root: anything that stops indexing or reading the store
"""

from __future__ import annotations

__all__ = ["IndexerError"]


class IndexerError(Exception):
    """Root of every error raised by ``indexer``."""
