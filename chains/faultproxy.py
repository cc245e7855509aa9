"""A fault-injecting JSON-RPC reverse proxy, for tests and chaos drills.

:class:`FaultProxy` listens on 127.0.0.1 (a free port by default) in a background thread
with its own event loop, forwards each JSON-RPC request to one upstream URL, and injects
the faults its :class:`~chains.faultplan.FaultPlan` decides: HTTP 429 / 500 / 502 / 503,
a timeout (hold, then drop), a cut-off body, a dropped connection, an answer with a
broken block header or log (valid JSON, fields JSON-RPC does not allow), provider-style
``eth_getLogs`` range-limit errors (by span, or by the number of logs in the answer), and
"method not found" for methods the plan's node lacks. Two switches change it at run
time: :meth:`set_syncing` makes it a node that lags behind (stale ``eth_blockNumber``, an
``eth_syncing`` object, ``latest`` blocks from the stale head), and :meth:`repoint` sends
it to another upstream, closing client connections as a restarted node would.

::

    with FaultProxy.start(anvil.url, FaultPlan.chaos(0.2, seed=1)) as proxy:
        client = AsyncRpcClient([proxy.url])  # ...
        proxy.stats().injected  # {"http_503": 3, "drop": 2, ...}

Or for a drill against a local node: ``python -m chains.faultproxy URL --chaos 0.1``.

Invariants:

- Loopback only. ``stop()`` (or leaving ``with``) releases held requests, closes every
  connection, the listening socket and the upstream session, and joins the thread.
- Counters in :meth:`stats` count what really happened: calls received and forwarded
  per method, faults injected per :class:`~chains.faultplan.Fault` kind.
- A request the proxy answers itself (a fault, a range error, an unsupported method, a
  syncing answer) is not forwarded; a batch is split only when some of its calls are
  answered locally. An answer over the result limit is forwarded, then replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from chains.anvil import LOOPBACK
from chains.faultplan import (
    TRANSIENT_FAULTS,
    Fault,
    FaultInjector,
    FaultPlan,
    RangeLimitStyle,
    calls_of,
    cap_results,
    head_needed,
    local_reply,
    malform,
)
from chains.rpcwire import dumps, loads
from chains.urls import hide_credentials

__all__ = ["FaultProxy", "ProxyStats"]

_STATUS_TEXT = {
    Fault.HTTP_500: (500, "Internal Server Error"),
    Fault.HTTP_502: (502, "Bad Gateway"),
    Fault.HTTP_503: (503, "Service Unavailable"),
}
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """What the proxy saw and did (a snapshot)."""

    received: int  # HTTP requests
    received_calls: Mapping[str, int]  # JSON-RPC calls received, by method
    forwarded_calls: Mapping[str, int]  # calls sent upstream for clients, by method
    injected: Mapping[str, int]  # by Fault value
    upstream_requests: int  # HTTP requests sent upstream, head look-ups included
    connections_closed: int  # by repoint()

    def injected_total(self) -> int:
        return sum(self.injected.values())


class FaultProxy:
    """A running proxy; create with :meth:`start`, stop with :meth:`stop` or ``with``."""

    def __init__(self, upstream_url: str, plan: FaultPlan, port: int) -> None:
        self._upstream = upstream_url
        self._injector = FaultInjector(plan)
        self._lag_blocks: int | None = None
        self._lock = threading.Lock()  # guards the settings above and the counters
        self._received = 0
        self._received_calls: Counter[str] = Counter()
        self._forwarded_calls: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._upstream_requests = 0
        self._connections_closed = 0
        self._sock = socket.create_server((LOOPBACK, port))
        self.port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        # A daemon, so that a proxy someone forgot to stop never blocks interpreter exit.
        self._thread = threading.Thread(
            target=self._serve, name=f"faultproxy-{self.port}", daemon=True
        )
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()  # binds to the proxy's loop on first use
        self._stopped = False

    @classmethod
    def start(
        cls,
        upstream_url: str,
        plan: FaultPlan | None = None,
        *,
        port: int = 0,
        startup_timeout_s: float = 10.0,
    ) -> FaultProxy:
        """Start serving on ``127.0.0.1:port`` (0: a free port) in a background thread."""
        proxy = cls(upstream_url, plan or FaultPlan(), port)
        proxy._thread.start()
        if not proxy._ready.wait(startup_timeout_s):
            proxy.stop()
            raise RuntimeError(f"fault proxy on port {proxy.port} did not start in time")
        if proxy._startup_error is not None:
            proxy._thread.join()
            proxy._stopped = True
            raise RuntimeError(
                f"fault proxy on port {proxy.port} did not start: {proxy._startup_error}"
            ) from proxy._startup_error
        return proxy

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def upstream_url(self) -> str:
        with self._lock:
            return self._upstream

    def set_plan(self, plan: FaultPlan) -> None:
        """Use ``plan`` from the next request on (its schedules start from zero)."""
        with self._lock:
            self._injector = FaultInjector(plan)

    def set_syncing(self, lag_blocks: int | None) -> None:
        """Act as a node ``lag_blocks`` behind the upstream head; None: a synced node."""
        if lag_blocks is not None and lag_blocks < 0:
            raise ValueError(f"lag_blocks must be >= 0, got {lag_blocks}")
        with self._lock:
            self._lag_blocks = lag_blocks

    def repoint(self, upstream_url: str, *, close_connections: bool = True) -> None:
        """Forward to ``upstream_url`` from now on, as if the node behind the URL changed.

        With ``close_connections`` every client connection is closed, as a restarted
        node's would be (clients reconnect, and a careful client re-checks the chain).
        """
        with self._lock:
            self._upstream = upstream_url
        if close_connections:
            future = asyncio.run_coroutine_threadsafe(self._close_connections(), self._loop)
            future.result(timeout=10)

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                received=self._received,
                received_calls=dict(self._received_calls),
                forwarded_calls=dict(self._forwarded_calls),
                injected=dict(self._injected),
                upstream_requests=self._upstream_requests,
                connections_closed=self._connections_closed,
            )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Release held requests, close everything and join the thread. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed itself
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
        elif not self._loop.is_closed():  # never started
            self._sock.close()
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ the serving thread

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._setup())
            except Exception as exc:  # reported to start(), which raises it
                self._startup_error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(self._teardown())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _teardown(self) -> None:
        self._stopping.set()  # held "timeout" requests give up now
        if self._runner is not None:
            await self._runner.cleanup()
        else:
            self._sock.close()
        if self._session is not None:
            await self._session.close()
        await asyncio.sleep(0)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("fault proxy is not running")
        return self._session

    async def _close_connections(self) -> None:
        server = self._runner.server if self._runner is not None else None
        handlers = server.connections if server is not None else []
        for handler in handlers:
            handler.force_close()
        with self._lock:
            self._connections_closed += len(handlers)

    # ------------------------------------------------------------ one request

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = loads(body)
        except ValueError:
            parsed = None
        calls = calls_of(parsed)
        methods = [str(call.get("method")) for call in calls]
        with self._lock:
            self._received += 1
            self._received_calls.update(methods)
            fault = self._injector.decide(methods)
            plan = self._injector.plan
            upstream, lag = self._upstream, self._lag_blocks
            if fault is not None:
                self._injected[fault.value] += 1
        if fault is Fault.HTTP_429:
            headers = {"Retry-After": f"{plan.retry_after_s:g}"}
            return web.Response(status=429, text="Too Many Requests", headers=headers)
        if fault in _STATUS_TEXT:
            status, text = _STATUS_TEXT[fault]
            return web.Response(status=status, text=text)
        if fault is Fault.TIMEOUT:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), plan.timeout_hold_s)
            return _drop(request)
        if fault is Fault.DROP:
            return _drop(request)
        status, answer = await self._answer(
            upstream, body=body, parsed=parsed, calls=calls, plan=plan, lag=lag
        )
        if plan.result_limit is not None and "eth_getLogs" in methods:
            answer = self._cap(answer, calls, plan.result_limit, hint=plan.range_limit_hint)
        if fault is Fault.MALFORMED:
            answer = self._malform(answer)
        if fault is Fault.TRUNCATE:
            answer = answer[
                : min(len(answer) - 1, max(1, int(len(answer) * plan.truncate_fraction)))
            ]
        if plan.delay_s > 0:
            await asyncio.sleep(plan.delay_s)
        return web.Response(body=answer, status=status, content_type="application/json")

    def _cap(self, body: bytes, calls: list[dict[str, Any]], limit: int, *, hint: bool) -> bytes:
        """``body`` with each ``eth_getLogs`` result above ``limit`` logs
        replaced by the provider's error (:func:`~chains.faultplan.cap_results`)."""
        try:
            answer = loads(body)
        except ValueError:
            return body  # an upstream failure: nothing to cap
        replies = answer if isinstance(answer, list) else [answer]
        wanted = {call.get("id"): call for call in calls}
        capped = 0
        for reply in replies:
            call = wanted.get(reply.get("id")) if isinstance(reply, dict) else None
            if call is not None and cap_results(call, reply, limit, hint=hint):
                capped += 1
        if not capped:
            return body
        with self._lock:
            self._injected[Fault.RESULT_LIMIT.value] += capped
        return dumps(answer)

    def _malform(self, body: bytes) -> bytes:
        """``body`` with one header or log broken (:func:`~chains.faultplan.malform`)."""
        try:
            answer = loads(body)
        except ValueError:
            return body  # an upstream failure: nothing to break
        with self._lock:
            draw = self._injector.draw()
        return dumps(answer) if malform(answer, draw) else body

    async def _answer(
        self,
        upstream: str,
        *,
        body: bytes,
        parsed: Any,
        calls: list[dict[str, Any]],
        plan: FaultPlan,
        lag: int | None,
    ) -> tuple[int, bytes]:
        """Forward, answering locally what the plan or syncing mode says; (status, body)."""
        head = None
        if head_needed(calls, plan, lag):
            head = await self._upstream_head(upstream)
        answers: list[dict[str, Any]] = []
        forward: list[dict[str, Any]] = []
        faults: Counter[str] = Counter()
        for call in calls:
            answer, fault, forwarded = local_reply(call, plan, head, lag)
            if fault is not None:
                faults[fault.value] += 1
            if answer is not None:
                answers.append(answer)
            else:
                forward.append(forwarded)
        if faults:
            with self._lock:
                self._injected.update(faults)
        if not faults:  # untouched: forward the very bytes received
            return await self._forward(upstream, body, calls)
        if not isinstance(parsed, list):  # a single call
            if answers:
                return 200, dumps(answers[0])
            return await self._forward(upstream, dumps(forward[0]), forward)
        replies: list[Any] = []
        if forward:
            status, raw = await self._forward(upstream, dumps(forward), forward)
            try:
                upstream_replies = loads(raw)
            except ValueError:
                upstream_replies = None
            if not isinstance(upstream_replies, list):
                return status, raw  # an upstream failure: pass it on as it is
            replies.extend(upstream_replies)
        return 200, dumps(replies + answers)

    async def _forward(
        self, upstream: str, payload: bytes, calls: Sequence[Mapping[str, Any]]
    ) -> tuple[int, bytes]:
        with self._lock:
            self._upstream_requests += 1
            self._forwarded_calls.update(str(call.get("method")) for call in calls)
        try:
            async with self._client().post(upstream, data=payload, headers=_JSON) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            return 502, f"fault proxy: upstream {upstream} unreachable: {exc}".encode()

    async def _upstream_head(self, upstream: str) -> int | None:
        request = {"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []}
        with self._lock:
            self._upstream_requests += 1
        try:
            async with self._client().post(
                upstream, data=dumps(request), headers=_JSON
            ) as response:
                reply = loads(await response.read())
            return int(reply["result"], 16)
        except (aiohttp.ClientError, OSError, ValueError, KeyError, TypeError):
            return None


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the response below is never sent)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m chains.faultproxy UPSTREAM [--chaos RATE] ...``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m chains.faultproxy",
        description="Serve a JSON-RPC proxy on 127.0.0.1 that injects faults into UPSTREAM.",
    )
    parser.add_argument("upstream", help="JSON-RPC URL to forward to, e.g. http://127.0.0.1:8545")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    parser.add_argument("--chaos", type=float, default=0.0, help="share of requests to break")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument("--range-limit", type=int, default=None, help="max eth_getLogs span")
    parser.add_argument(
        "--style", choices=[s.value for s in RangeLimitStyle], default=RangeLimitStyle.ALCHEMY
    )
    parser.add_argument(
        "--result-limit", type=int, default=None, help="max logs in an eth_getLogs answer"
    )
    parser.add_argument("--no-hint", action="store_true", help="no suggested range in errors")
    parser.add_argument(
        "--unsupported",
        action="append",
        default=[],
        metavar="METHOD",
        help="answer METHOD with 'method not found' (repeatable)",
    )
    parser.add_argument("--lag", type=int, default=None, help="act as a node this far behind")
    parser.add_argument(
        "--malformed", action="store_true", help="--chaos also breaks headers and logs"
    )
    args = parser.parse_args(argv)
    faults = (*TRANSIENT_FAULTS, Fault.MALFORMED) if args.malformed else TRANSIENT_FAULTS
    plan = FaultPlan.chaos(
        args.chaos,
        faults=faults,
        seed=args.seed,
        delay_s=args.delay,
        range_limit_blocks=args.range_limit,
        range_limit_style=RangeLimitStyle(args.style),
        range_limit_hint=not args.no_hint,
        result_limit=args.result_limit,
        unsupported_methods=frozenset(args.unsupported),
    )
    with FaultProxy.start(args.upstream, plan, port=args.port) as proxy:
        proxy.set_syncing(args.lag)
        upstream = hide_credentials(args.upstream)
        print(f"fault proxy {proxy.url} -> {upstream}; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        print(f"injected: {dict(proxy.stats().injected)}")


if __name__ == "__main__":
    main()
