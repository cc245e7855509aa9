"""The async JSON-RPC client of the indexer: several endpoints, retry, failover, rate limit.

One :class:`AsyncRpcClient` serves one chain through one or more endpoint URLs, over one
aiohttp ``ClientSession`` with keep-alive connections. Use it as ``async with`` (or
``await open()`` / ``await close()``), from one event loop; it is not thread-safe. The
wire format and error classification are in :mod:`chains.rpcwire` (shared with the
synchronous :mod:`chains.rpc`), health ranking and the rate limit in
:mod:`chains.endpoints`, the chain check in :mod:`chains.chainguard`.

Invariants:

- Only :class:`~chains.exceptions.TransientRPCError` is retried: timeouts, HTTP 429 (after
  its ``Retry-After``), 5xx, resets, cut-off or invalid JSON. Each retry goes to the best
  ranked endpoint not yet tried in this round (failover); after a round over all
  endpoints the client backs off (exponential, full jitter). A call makes at most
  ``max_attempts`` HTTP attempts within ``call_timeout_s``, then raises a transient error
  saying what was tried, the last error chained. Anything else (revert, invalid params,
  an ``eth_getLogs`` range limit) is raised at once with its JSON-RPC ``code`` and the
  provider's message; range-limit messages are kept whole, ``data`` included, for the
  indexer's range controller.
- **Same chain, always.** An endpoint's answers are returned only after it passed the
  chain check: ``eth_chainId`` equals ``chain_id`` (when given) and block 0's hash equals
  ``expected_genesis_hash`` or, when none is given, the hash first seen on any endpoint.
  The check runs on first contact; after a connection failure or a bench; whenever a new
  connection to the endpoint was opened (a restarted node drops its connections: the
  check runs before an answer that came over the new connection is returned); and every
  ``reverify_interval_s``, which bounds how long a silent switch behind a load balancer
  goes unseen. A mismatch raises ``ChainIdMismatchError`` / ``GenesisMismatchError``.
- Batch answers are matched to requests by id, never by position.
- URLs are connected to as configured, and named in errors and logs with their
  credentials hidden (:mod:`chains.urls`); :attr:`AsyncRpcClient.urls`,
  :meth:`~AsyncRpcClient.ranked_urls` and the stats keep them as configured, to match
  against, not to print.
- JSON is encoded and parsed with orjson when installed, else the standard library.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace, TracebackType
from typing import Any, Self, TypeVar

import aiohttp

from chains.chainguard import CHECK_LABEL, ChainGuard
from chains.endpoints import ClientStats, Endpoint, EndpointStats, RpcPolicy, full_jitter_s
from chains.exceptions import ConfigError, RPCConnectionError, RPCError, TransientRPCError
from chains.rpc import retry_after_s
from chains.rpcwire import (
    AttemptError,
    batch_results,
    dumps,
    error_kind,
    invalid,
    parse,
    post,
    request,
    result_of,
    rpc_failure,
)
from chains.urls import hide_credentials, rpc_url_problem

__all__ = ["AsyncRpcClient", "ClientStats", "EndpointStats", "RpcPolicy"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_Call = tuple[str, Sequence[Any]]
# After these failures the node may be restarting (as another chain): check it again.
_CONNECTION_KINDS = frozenset({"timeout", "connection", "truncated"})
# The endpoint serves another chain: benched at once, the call fails over to the others.
_WRONG_CHAIN_KINDS = frozenset({"genesis_mismatch", "chain_id_mismatch"})
_BLOCK0 = ("0x0", "0x00", "earliest")


async def _on_connection_created(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object
) -> None:
    """A new TCP connection to an endpoint may lead to another node: check it again."""
    endpoint = ctx.trace_request_ctx
    if isinstance(endpoint, Endpoint):
        endpoint.connections_opened += 1


class AsyncRpcClient:
    """JSON-RPC over HTTP(S) to one chain, through ``urls`` ranked by health.

    ``chain_id`` and ``expected_genesis_hash`` are what the chain check expects (see the
    module invariants); ``verify_endpoints=False`` turns the check off unless a genesis
    hash is expected. ``policy`` holds timeouts, retries, ranking and the rate limit;
    ``seed`` makes the back-off jitter reproducible.
    """

    def __init__(
        self,
        urls: Sequence[str] | str,
        *,
        chain_id: int | None = None,
        expected_genesis_hash: str | None = None,
        verify_endpoints: bool = True,
        policy: RpcPolicy | None = None,
        seed: int | None = None,
    ) -> None:
        urls = [urls] if isinstance(urls, str) else list(urls)
        where = f" for chain {chain_id}" if chain_id is not None else ""
        if not urls:
            raise ConfigError(f"no RPC URL{where}; add one to rpc_urls in rtrm.toml")
        for url in urls:
            if (problem := rpc_url_problem(url)) is not None:
                raise ConfigError(f"unsupported RPC URL{where}: {problem}")
        if len(set(urls)) != len(urls):
            twice = hide_credentials(next(url for url in urls if urls.count(url) > 1))
            raise ConfigError(f"duplicate RPC URL {twice!r}{where}; list each endpoint once")
        self.chain_id = chain_id
        self.policy = policy or RpcPolicy()
        self._guard = ChainGuard(
            chain_id=chain_id,
            expected_genesis_hash=expected_genesis_hash,
            enabled=verify_endpoints,
            reverify_interval_s=self.policy.reverify_interval_s,
            check_new_connections=self.policy.check_new_connections,
        )
        now = time.monotonic()
        several = len(urls) > 1
        self._endpoints = [
            Endpoint(url, i, self.policy, now, benchable=several) for i, url in enumerate(urls)
        ]
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self._next_id = 1
        self._calls = self._retries = self._failovers = self._gave_up = 0

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> Self:
        """Create the HTTP session; ``async with`` does this for you."""
        if self._session is None:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(_on_connection_created)
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=self.policy.max_connections_per_endpoint,
                keepalive_timeout=15.0,  # below the usual 60 s idle timeout of servers
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[trace],
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self

    async def close(self) -> None:
        """Stop re-probes and close every connection. Safe to call twice."""
        for task in self._probes:
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            await asyncio.sleep(0)  # let the transports finish closing

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------ public calls

    @property
    def urls(self) -> tuple[str, ...]:
        """The endpoints in configured order, as configured (credentials included)."""
        return tuple(ep.url for ep in self._endpoints)

    @property
    def known_genesis_hash(self) -> str | None:
        """The expected genesis hash, or the one first seen; None before any check."""
        return self._guard.genesis

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Send one request and return its ``result``; raise a classified ``RPCError``."""
        payload = dumps(request(self._take_ids(1), method, params))

        block0 = method == "eth_getBlockByNumber" and bool(params) and params[0] in _BLOCK0

        def decode(raw: bytes, ep: Endpoint) -> Any:
            result = result_of(raw, url=ep.url, method=method)
            if block0:
                self._guard.judge_block0(ep, result)
            return result

        return await self._execute(method, payload, 1, decode)

    async def call_raw(self, method: str, params: Sequence[Any], decode: Callable[[bytes], T]) -> T:
        """Send one request and hand the raw response body to ``decode`` (one parse only).

        ``decode`` gets the whole JSON-RPC response body (e.g. ``lambda body:
        orjson.loads(body)["result"]``, or a typed decoder) and runs inside the retry loop:
        a ``ValueError``, ``KeyError`` or ``TypeError`` from it means a cut-off or malformed
        body and is retried like any transient error. Error responses never reach
        ``decode``: they are raised as in :meth:`call`.
        """
        payload = dumps(request(self._take_ids(1), method, params))

        def checked(raw: bytes, ep: Endpoint) -> T:
            # Results of eth_getLogs & co. are hex and addresses: only an error has this key.
            if b'"error"' in raw:
                reply = parse(raw, url=ep.url, label=method)
                if isinstance(reply, dict) and reply.get("error") is not None:
                    raise rpc_failure(reply["error"], url=ep.url, method=method)
            try:
                return decode(raw)
            except (ValueError, KeyError, TypeError) as exc:
                raise invalid(method, ep.url, f"cannot decode the response: {exc!r:.200}") from exc

        return await self._execute(method, payload, 1, checked)

    async def batch(self, calls: Sequence[_Call], *, raise_on_error: bool = True) -> list[Any]:
        """Send ``calls`` as one JSON array; results come back in request order.

        A transient error in any element retries the whole batch. Other element errors
        are raised (the first one), or with ``raise_on_error=False`` returned in their
        slot as ``RPCError`` instances.
        """
        if not calls:
            return []
        first_id = self._take_ids(len(calls))
        payload = dumps([request(first_id + i, m, p) for i, (m, p) in enumerate(calls)])
        methods = [method for method, _ in calls]
        label = f"batch of {len(calls)} ({methods[0]}, ...)"

        block0 = [m == "eth_getBlockByNumber" and bool(p) and p[0] in _BLOCK0 for m, p in calls]

        def decode(raw: bytes, ep: Endpoint) -> list[Any]:
            results = batch_results(raw, first_id, methods, url=ep.url, label=label)
            for result, is_block0 in zip(results, block0, strict=True):
                if isinstance(result, TransientRPCError):
                    raise AttemptError("rpc_transient", result)
                if isinstance(result, RPCError):
                    ep.errors[error_kind(result)] += 1
                elif is_block0:
                    self._guard.judge_block0(ep, result)
            return results

        results = await self._execute(label, payload, len(calls), decode)
        if raise_on_error:
            for result in results:
                if isinstance(result, RPCError):
                    raise result
        return results

    async def genesis_hash(self) -> str:
        """The hash of block 0 (checked against ``expected_genesis_hash`` if given)."""
        block = await self.call("eth_getBlockByNumber", ["0x0", False])
        if not isinstance(block, dict) or not isinstance(block.get("hash"), str):
            urls = ", ".join(ep.shown_url for ep in self._endpoints)
            raise RPCError(f"eth_getBlockByNumber(0) on {urls} returned no block: {block!r:.200}")
        return str(block["hash"]).lower()

    def stats(self) -> ClientStats:
        """Counters per call and per endpoint, for metrics (a snapshot)."""
        now = time.monotonic()
        return ClientStats(
            calls=self._calls,
            retries=self._retries,
            failovers=self._failovers,
            gave_up=self._gave_up,
            endpoints=tuple(ep.snapshot(now) for ep in self._endpoints),
        )

    def ranked_urls(self) -> tuple[str, ...]:
        """The endpoints in the order the next call would try them."""
        now = time.monotonic()
        return tuple(ep.url for ep in sorted(self._endpoints, key=lambda e: e.rank_key(now)))

    # ------------------------------------------------------------ retry loop

    def _take_ids(self, count: int) -> int:
        first = self._next_id
        self._next_id += count
        return first

    async def _execute(
        self, label: str, payload: bytes, cost: int, decode: Callable[[bytes, Endpoint], T]
    ) -> T:
        """Attempts over ranked endpoints until one succeeds; see the module invariants."""
        policy = self.policy
        start = time.monotonic()
        deadline = start + policy.call_timeout_s
        self._calls += 1
        self._start_due_probes(start)
        tried: set[int] = set()
        wrong: set[int] = set()  # endpoints that serve another chain: not asked again
        last: RPCError | None = None
        previous: Endpoint | None = None
        round_no = attempts = 0
        reason = f"{policy.max_attempts} attempts used"
        while attempts < policy.max_attempts:
            now = time.monotonic()
            endpoint = self._pick(tried | wrong, now)
            if endpoint is None:  # every endpoint failed in this round: back off
                round_no += 1
                tried.clear()
                delay = full_jitter_s(
                    round_no, policy.backoff_base_s, policy.backoff_max_s, self._rng
                )
                if now + delay >= deadline:
                    reason = f"call deadline of {policy.call_timeout_s:g}s reached"
                    break
                await asyncio.sleep(delay)
                continue
            wait = endpoint.not_before - now  # Retry-After; only when no endpoint is ready
            if now + max(wait, 0.0) >= deadline:
                reason = f"call deadline of {policy.call_timeout_s:g}s reached"
                if wait > 0:
                    reason = f"the server asked to wait {wait:.1f}s (Retry-After); {reason}"
                break
            if wait > 0:
                await asyncio.sleep(wait)
            tried.add(endpoint.index)
            if attempts:
                self._retries += 1
                self._failovers += endpoint is not previous
            attempts += 1
            previous = endpoint
            try:
                return await self._attempt(
                    endpoint,
                    label=label,
                    payload=payload,
                    cost=cost,
                    deadline=deadline,
                    decode=decode,
                )
            except AttemptError as failure:
                self._record_failure(endpoint, failure)
                last = failure.error
                if failure.kind in _WRONG_CHAIN_KINDS and self._others_left(wrong, endpoint):
                    continue  # the others may serve the chain
                if not isinstance(last, TransientRPCError):
                    raise last from last.__cause__
                logger.debug(
                    "%s failed on %s (%s); retrying", label, endpoint.shown_url, failure.kind
                )
        self._gave_up += 1
        raise self._give_up_error(label, last, attempts, time.monotonic() - start, reason)

    def _others_left(self, wrong: set[int], endpoint: Endpoint) -> bool:
        """Add ``endpoint`` to those serving another chain; whether any other is left."""
        wrong.add(endpoint.index)
        return len(wrong) < len(self._endpoints)

    def _pick(self, tried: set[int], now: float) -> Endpoint | None:
        untried = [ep for ep in self._endpoints if ep.index not in tried]
        return min(untried, key=lambda ep: ep.rank_key(now)) if untried else None

    async def _attempt(
        self,
        ep: Endpoint,
        *,
        label: str,
        payload: bytes,
        cost: int,
        deadline: float,
        decode: Callable[[bytes, Endpoint], T],
    ) -> T:
        if self._guard.needs_check(ep, time.monotonic()):
            await self._check_endpoint(ep, deadline)
        raw, latency_s = await self._post(ep, label, payload, cost, deadline)
        value = decode(raw, ep)
        if self._guard.needs_check(ep, time.monotonic()):  # it came over a new connection
            await self._check_endpoint(ep, deadline)
        ep.record_success(latency_s)
        return value

    def _record_failure(self, ep: Endpoint, failure: AttemptError) -> None:
        now = time.monotonic()
        if failure.kind in _CONNECTION_KINDS:
            ep.verified_connections = None
        retry_after = retry_after_s(failure.error)
        wrong_chain = failure.kind in _WRONG_CHAIN_KINDS
        if ep.record_failure(
            failure.kind,
            now,
            penalise=failure.penalise,
            retry_after_s=retry_after,
            bench_now=wrong_chain,
        ):
            if wrong_chain:
                logger.warning(
                    "RPC endpoint %s benched for %.1fs, its answers unused: %s",
                    ep.shown_url,
                    ep.benched_until - now,
                    failure.error,
                )
                return
            logger.warning(
                "RPC endpoint %s benched for %.1fs after repeated failures (last: %s)",
                ep.shown_url,
                ep.benched_until - now,
                failure.error,
            )

    def _give_up_error(
        self, label: str, last: RPCError | None, attempts: int, elapsed_s: float, reason: str
    ) -> TransientRPCError:
        cls = RPCConnectionError if isinstance(last, RPCConnectionError) else TransientRPCError
        chain = f"chain {self.chain_id} " if self.chain_id is not None else ""
        error = cls(
            f"{label}: gave up after {attempts} attempt(s) in {elapsed_s:.1f}s ({reason}) on "
            f"{chain}endpoints {', '.join(ep.shown_url for ep in self._endpoints)}; last error: "
            f"{last or 'none'}. Check that "
            "the nodes are up, or add another endpoint to the chain's rpc_urls in rtrm.toml (or "
            "RTRM_CHAIN_<ID>_RPC_URLS); calling the client directly, raise "
            "RpcPolicy.call_timeout_s / max_attempts",
            code=last.code if last else None,
            url=last.url if last else None,
        )
        error.__cause__ = last
        return error

    async def _post(
        self, ep: Endpoint, label: str, payload: bytes, cost: int, deadline: float
    ) -> tuple[bytes, float]:
        """POST ``payload`` to ``ep`` within its rate limit; return (body, latency_s)."""
        if self._session is None:
            raise RuntimeError("AsyncRpcClient is not open: use `async with AsyncRpcClient(...)`")
        if ep.bucket is not None:
            now = time.monotonic()
            wait = ep.bucket.reserve(cost, now)
            if now + wait >= deadline:
                ep.bucket.refund(cost)
                text = (
                    f"{label} on {ep.shown_url}: the client-side rate limit "
                    f"({ep.bucket.rate_per_s:g} calls/s) would delay this call past its "
                    "deadline; raise the chain's rpc_rate_limit_per_s in rtrm.toml (if the "
                    "provider allows it)"
                )
                raise AttemptError("throttled", TransientRPCError(text, url=ep.url), penalise=False)
            if wait > 0:
                ep.throttled_s += wait
                await asyncio.sleep(wait)
        ep.requests += 1
        ep.calls += cost
        timeout_s = min(self.policy.request_timeout_s, deadline - time.monotonic())
        return await post(
            self._session, ep.url, payload, label=label, timeout_s=timeout_s, trace_ctx=ep
        )

    async def _check_endpoint(self, ep: Endpoint, deadline: float) -> float | None:
        """Run the chain check on ``ep`` if still due; its latency, or None if not run."""
        async with ep.verify_lock:
            if not self._guard.needs_check(ep, time.monotonic()):
                return None
            ep.verifications += 1
            calls = self._guard.calls()
            first_id = self._take_ids(len(calls))
            payload = dumps([request(first_id + i, m, p) for i, (m, p) in enumerate(calls)])
            raw, latency_s = await self._post(ep, CHECK_LABEL, payload, len(calls), deadline)
            methods = [method for method, _ in calls]
            results = batch_results(raw, first_id, methods, url=ep.url, label=CHECK_LABEL)
            for result in results:
                if isinstance(result, RPCError):
                    raise AttemptError(error_kind(result), result)
            self._guard.judge(ep, results, time.monotonic())
            return latency_s

    # ------------------------------------------------------------ re-probes

    def _start_due_probes(self, now: float) -> None:
        for ep in self._endpoints:
            if ep.take_due_probe(now):
                task = asyncio.get_running_loop().create_task(self._probe(ep))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)

    async def _probe(self, ep: Endpoint) -> None:
        """Re-probe a benched endpoint after its cool-down: the chain check, or chain id."""
        deadline = time.monotonic() + self.policy.request_timeout_s
        latency_s: float | None
        try:
            if self._guard.enabled:
                latency_s = await self._check_endpoint(ep, deadline)
            else:
                payload = dumps(request(0, "eth_chainId", []))
                raw, latency_s = await self._post(ep, "eth_chainId (probe)", payload, 1, deadline)
                result_of(raw, url=ep.url, method="eth_chainId")
        except AttemptError as failure:
            self._record_failure(ep, failure)
            logger.warning("re-probe of RPC endpoint %s failed: %s", ep.shown_url, failure.error)
            return
        if latency_s is not None:
            ep.record_success(latency_s)
        logger.info("RPC endpoint %s answers again after its cool-down", ep.shown_url)
