"""The aiohttp application: routes, middlewares, and starting it on loopback.

:func:`create_app` wires the handler modules (``api.handlers_*``) to a
:class:`~api.context.ApiContext`. Two middlewares wrap every request:

1. ``observe`` (outermost): times the request into ``rtrm_api_*`` metrics by route
   template, and turns every refusal into the JSON error shape of :mod:`api.errors`:
   :class:`~api.errors.HttpError`, aiohttp's own (404 unknown path, 405 method), and
   the package errors that mean bad input. Anything else is a bug: it is logged with its
   traceback and answered with a JSON 500 -- handlers validate their input so that no
   input reaches that path (tested with schemathesis);
2. ``limit``: the per-client token bucket (:mod:`api.ratelimit`), 429 with
   ``Retry-After``; ``/healthz`` and ``/metrics`` are exempt.

:func:`start_site` listens on a loopback address only (the API has no TLS and trusts
the remote address for rate limiting), port 0 picking a free one.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from api.context import ApiContext
from api.errors import HttpError, error_response, from_package_error
from api.exceptions import ApiConfigError
from api.handlers_insurance import routes as insurance_routes
from api.handlers_ops import routes as ops_routes
from api.handlers_systemic import routes as systemic_routes
from api.handlers_users import routes as user_routes
from api.http import CONTEXT
from api.ratelimit import RateLimiter

__all__ = ["create_app", "start_site"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_EXEMPT = frozenset({"/healthz", "/metrics"})
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}
STATIC_DIR = Path(__file__).with_name("static")
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter", RateLimiter)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except HttpError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:  # noqa: PLR2004 - a redirect is an answer, not an error
            raise
        code = _HTTP_CODES.get(exc.status, "bad_request")
        message = exc.text if exc.status not in (404, 405) else _http_message(request, exc)
        response = error_response(exc.status, code, message or exc.reason)
    except Exception as exc:
        mapped = from_package_error(exc)
        if mapped is None:
            log.exception("%s %s failed", request.method, request.path)
            response = error_response(
                500, "internal_error", f"unexpected {type(exc).__name__}; this is a bug in rtrm"
            )
        else:
            response = error_response(mapped.status, mapped.code, mapped.message, mapped.headers)
    metrics = request.app[CONTEXT].metrics
    route = _route(request)
    metrics.requests.labels(route, request.method, str(response.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - started)
    return response


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 405:  # noqa: PLR2004
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return f"{request.method} is not allowed on {request.path[:200]}; use {allowed}"
    return f"no such endpoint: {request.path[:200]}; see /openapi.json"


@web.middleware
async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    limiter = request.app[LIMITER]
    if limiter.enabled and request.path not in _EXEMPT:
        wait_s = limiter.take(request.remote or "unknown")
        if wait_s > 0.0:
            request.app[CONTEXT].metrics.rate_limited.inc()
            raise HttpError(
                429,
                "rate_limited",
                f"too many requests: {limiter.rate_per_s:g}/s per client "
                f"(bursts of {limiter.burst}); retry in {wait_s:.2f} s",
                headers={"Retry-After": RateLimiter.retry_after(wait_s)},
            )
    return await handler(request)


async def _close(app: web.Application) -> None:
    await app[CONTEXT].snapshots.close()


def create_app(context: ApiContext) -> web.Application:
    """The API application for ``context`` (not listening yet: see :func:`start_site`)."""
    settings = context.settings
    app = web.Application(middlewares=[observe, limit], client_max_size=settings.max_body_bytes)
    app[CONTEXT] = context
    app[LIMITER] = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    for routes in (user_routes(), systemic_routes(), insurance_routes(), ops_routes()):
        app.add_routes(routes)
    _add_dashboard(app)
    app.on_cleanup.append(_close)
    return app


def _add_dashboard(app: web.Application) -> None:
    """``/`` and ``/static/…`` when the dashboard's files are installed."""
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        return

    async def dashboard(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(index)

    app.router.add_get("/", dashboard)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    vendor = STATIC_DIR.parents[1] / "node_modules"
    for package, folder in (("uplot", "dist"),):
        path = vendor / package / folder
        if path.is_dir():
            app.router.add_static(f"/vendor/{package}/", path, show_index=False)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (loopback only; port 0 picks one); returns the runner
    (``await runner.cleanup()`` stops it) and the bound port."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ApiConfigError(
            f"the API listens on loopback only (127.0.0.1 or ::1), not {host}; put a "
            "TLS-terminating proxy in front of it to serve other hosts"
        )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ApiConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another "
            "`rtrm serve` running? pick another port with --port"
        ) from None
    addresses = runner.addresses
    return runner, int(addresses[0][1]) if addresses else port
