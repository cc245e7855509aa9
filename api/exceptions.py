"""Errors raised by the ``api`` package.

Messages name the request, address or watermark involved and what to do next::

    ApiError            root: the API cannot start or cannot answer a request
"""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """Root of every error raised by ``api``."""
