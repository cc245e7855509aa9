"""Errors raised by the ``api`` package.

Messages name the request, address or watermark involved and what to do next::

    ApiError            root: the API cannot start or cannot answer a request
    ├── ApiConfigError (also ValueError)  bad [api] settings: names the key and the fix
    └── HttpError                         a refused request: status, code and message
                                          (``api.errors``; becomes a JSON error answer)
"""

from __future__ import annotations

__all__ = ["ApiConfigError", "ApiError"]


class ApiError(Exception):
    """Root of every error raised by ``api``."""


class ApiConfigError(ApiError, ValueError):
    """API settings that cannot be used (a bad port, rate limit or token)."""
