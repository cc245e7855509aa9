"""Error answers: one JSON shape for every refusal, and which failure gets which status.

Every error body is ``{"error": {"code": "...", "message": "..."}}``: ``code`` is a
stable snake_case word a client may branch on, ``message`` says what was wrong and what
to do. Handlers validate their input and raise :class:`HttpError`; the package errors
that mean "bad input" (a mis-checksummed address, an unknown asset, a malformed shock,
an unknown claim) are mapped here to 4xx by :func:`from_package_error`, so a handler
can let them through. Status codes:

- 400 ``bad_request``, ``bad_address``, ``bad_json``, ``bad_parameter``;
- 401 ``unauthorized`` (no bearer token), 403 ``forbidden`` (a wrong one);
- 404 ``not_found``, ``unknown_asset``, ``unknown_claim``, ``unknown_epoch``,
  ``no_leaf``, ``unknown_scenario``;
- 405 ``method_not_allowed``; 409 ``conflict`` (a payout not awaiting approval);
- 413 ``too_large``; 415 ``unsupported_media_type``;
- 422 ``bad_shock``, ``bad_parameter``;
- 429 ``rate_limited`` (with ``Retry-After``);
- 503 ``not_ready`` (nothing indexed yet) and ``unavailable`` (the store is busy).
"""

from __future__ import annotations

from aiohttp import web

from aggregation.exceptions import (
    AggregationError,
    InvalidParamsError,
    InvalidShockError,
    UnknownAssetError,
)
from aggregation.loader import SnapshotError
from aggregation.snapshot import InvalidAddressError
from api.encoding import dumps
from api.exceptions import ApiError
from insurance.exceptions import AttestationError, PayoutError, UnknownClaimError

__all__ = ["HttpError", "error_response", "from_package_error"]


class HttpError(ApiError):
    """A request the API refuses: the status, a stable code and a message for people."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON error answer."""
    body = dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def from_package_error(exc: Exception) -> HttpError | None:
    """The 4xx/503 answer for a package error that means bad input or no data yet."""
    match exc:
        case InvalidAddressError():
            return HttpError(400, "bad_address", str(exc))
        case UnknownAssetError():
            return HttpError(404, "unknown_asset", str(exc))
        case InvalidShockError():
            return HttpError(422, "bad_shock", str(exc))
        case InvalidParamsError():
            return HttpError(422, "bad_parameter", str(exc))
        case UnknownClaimError():
            return HttpError(404, "unknown_claim", str(exc))
        case AttestationError():
            return HttpError(404, "no_leaf", str(exc))
        case PayoutError():
            return HttpError(409, "conflict", str(exc))
        case SnapshotError():
            return HttpError(503, "not_ready", str(exc), headers={"Retry-After": "1"})
        case AggregationError():
            return HttpError(422, "bad_parameter", str(exc))
    return None
