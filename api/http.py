"""Small helpers every handler module shares: the context key, JSON answers, parameters.

Parameters are validated here, once, with messages that name the parameter and show a
valid value; a malformed one is a 400 ``bad_parameter``. Bodies are JSON objects of at
most ``ApiSettings.max_body_bytes``; anything else is a 400 ``bad_json`` (415 for another
content type).
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import re
from typing import Any

from aiohttp import web

from aggregation.snapshot import checksummed
from api.context import ApiContext
from api.encoding import dumps
from api.errors import HttpError

__all__ = [
    "CONTEXT",
    "address_param",
    "bool_param",
    "choice_param",
    "context",
    "finite_number",
    "int_param",
    "json_body",
    "json_body_response",
    "json_response",
    "require_token",
]

CONTEXT: web.AppKey[ApiContext] = web.AppKey("context", ApiContext)
_INT = re.compile(r"[0-9]{1,18}")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def json_response(data: object, *, status: int = 200) -> web.Response:
    """``data`` as a JSON answer (the rules of :mod:`api.encoding`)."""
    return json_body_response(dumps(data), status=status)


def json_body_response(body: bytes, *, status: int = 200) -> web.Response:
    """An already-encoded JSON body (memoised answers)."""
    return web.Response(body=body, status=status, content_type="application/json")


@functools.lru_cache(maxsize=1 << 17)
def _checksummed(address: str) -> str:
    return checksummed(address)  # keccak per call: remembered (errors are not)


def address_param(request: web.Request, name: str = "address") -> str:
    """The path's address, EIP-55 checksummed (all-lowercase accepted); 400 otherwise."""
    text = request.match_info[name]
    if len(text) != 42:  # noqa: PLR2004 - 0x + 40 hex digits; longer junk is not remembered
        return checksummed(text)  # raises InvalidAddressError -> 400 bad_address
    return _checksummed(text)


def int_param(
    request: web.Request,
    name: str,
    *,
    default: int | None = None,
    low: int = 0,
    high: int = 2**62,
    path: bool = False,
) -> int | None:
    """A whole-number parameter in ``[low, high]`` (query, or path with ``path=True``)."""
    text = request.match_info.get(name) if path else request.query.get(name)
    if text is None:
        return default
    if not _INT.fullmatch(text) or not low <= int(text) <= high:
        where = "path segment" if path else "query parameter"
        raise HttpError(
            400,
            "bad_parameter",
            f"{where} {name}={text[:40]!r}: expected a whole number from {low} to {high}",
        )
    return int(text)


def choice_param(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    text = request.query.get(name, default)
    if text not in choices:
        raise HttpError(
            400,
            "bad_parameter",
            f"query parameter {name}={text[:40]!r}: expected one of {', '.join(choices)}",
        )
    return text


def bool_param(request: web.Request, name: str, *, default: bool = False) -> bool:
    text = request.query.get(name)
    if text is None:
        return default
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise HttpError(
        400, "bad_parameter", f"query parameter {name}={text[:40]!r}: expected true or false"
    )


async def json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty optional body)."""
    limit = context(request).settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, "too_large", f"the body is over {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise HttpError(413, "too_large", f"the body is over {limit} bytes")
    if not raw.strip():
        if required:
            raise HttpError(400, "bad_json", "expected a JSON object body, got nothing")
        return {}
    kind = request.content_type
    if kind not in ("application/json", "application/octet-stream") and not kind.endswith("+json"):
        raise HttpError(
            415, "unsupported_media_type", f"send Content-Type: application/json, not {kind}"
        )
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "bad_json", f"expected a JSON object, got {type(data).__name__}")
    return data


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def finite_number(value: object, what: str) -> float:
    """``value`` as a finite float (JSON numbers only; booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HttpError(422, "bad_parameter", f"{what} must be a number, got {value!r}"[:200])
    number = float(value)
    if not math.isfinite(number):
        raise HttpError(422, "bad_parameter", f"{what} must be a finite number")
    return number


def require_token(request: web.Request) -> None:
    """401 without a bearer token, 403 with a wrong one (or when none is configured)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HttpError(
            401,
            "unauthorized",
            "this endpoint needs Authorization: Bearer <token> (the token is RTRM_API_TOKEN)",
            headers={"WWW-Authenticate": 'Bearer realm="rtrm"'},
        )
    token = context(request).settings.token
    if token is None:
        raise HttpError(
            403, "forbidden", "no API token is configured (RTRM_API_TOKEN), so nobody may do this"
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HttpError(403, "forbidden", "the bearer token is not the API's token")
