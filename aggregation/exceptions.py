"""Errors raised by the ``aggregation`` package.

Messages name the watermark, asset or address involved and what to do next::

    AggregationError    root: a snapshot that cannot be loaded or priced
"""

from __future__ import annotations

__all__ = ["AggregationError"]


class AggregationError(Exception):
    """Root of every error raised by ``aggregation``."""
