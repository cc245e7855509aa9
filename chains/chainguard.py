"""Same chain, always: when an RPC endpoint must prove which chain it serves, and the verdict.

An endpoint proves its chain with one batch: ``eth_chainId`` (when a chain id is
configured) and block 0. :class:`ChainGuard` says when that check is due and judges the
answers; the async client (:mod:`chains.aiorpc`) sends it.

Invariants:

- The chain id must equal the configured one (``ChainIdMismatchError``).
- Block 0's hash must equal ``expected_genesis_hash`` or, when none is configured, the
  hash the first checked endpoint reported (trust on first use): endpoints of one client
  can never disagree on genesis (``GenesisMismatchError``). Hashes compare lower-cased.
  Every block 0 a caller reads is judged too (:meth:`ChainGuard.judge_block0`), not only
  the check's: a node restarted behind a kept-alive connection (a proxy, a load balancer)
  shows its new genesis there first.
- A mismatch is the endpoint's fault, not the chain's: the client benches that endpoint
  at once and fails over to the others; only when every endpoint mismatches does the
  caller get the error (:mod:`chains.aiorpc`).
- A check is due on first contact; after a connection failure or a bench (the client
  clears ``verified_connections``); every ``reverify_interval_s``; and, unless
  ``check_new_connections`` is off, whenever a new connection to the endpoint was opened
  since the last check (a restarted node drops its connections; the client checks before
  it returns an answer that went over a new connection).
- No I/O and no clock reads: ``now`` is passed in (monotonic seconds).
"""

from __future__ import annotations

import logging
from typing import Any

from chains.endpoints import Endpoint
from chains.exceptions import ChainIdMismatchError, GenesisMismatchError
from chains.rpc import hex_to_int
from chains.rpcwire import AttemptError, invalid

__all__ = ["CHECK_LABEL", "ChainGuard"]

logger = logging.getLogger(__name__)

CHECK_LABEL = "chain check (eth_chainId + block 0)"


class ChainGuard:
    """When to check an endpoint's chain, and whether its answers match."""

    def __init__(
        self,
        *,
        chain_id: int | None,
        expected_genesis_hash: str | None,
        enabled: bool,
        reverify_interval_s: float | None,
        check_new_connections: bool = True,
    ) -> None:
        self.chain_id = chain_id
        self.enabled = enabled or expected_genesis_hash is not None
        self.genesis = expected_genesis_hash.lower() if expected_genesis_hash else None
        self._genesis_source = "expected"
        self.reverify_interval_s = reverify_interval_s
        self.check_new_connections = check_new_connections

    def needs_check(self, ep: Endpoint, now: float) -> bool:
        if not self.enabled:
            return False
        if ep.verified_connections is None:
            return True
        if self.check_new_connections and ep.verified_connections != ep.connections_opened:
            return True
        interval = self.reverify_interval_s
        return interval is not None and now - ep.verified_at >= interval

    def calls(self) -> list[tuple[str, list[Any]]]:
        """The JSON-RPC calls of one check, in the order :meth:`judge` expects answers."""
        block0: tuple[str, list[Any]] = ("eth_getBlockByNumber", ["0x0", False])
        return [block0] if self.chain_id is None else [("eth_chainId", []), block0]

    def judge(self, ep: Endpoint, results: list[Any], now: float) -> None:
        """Raise an ``AttemptError`` unless the answers match; else mark ``ep`` checked."""
        if self.chain_id is not None:
            self._judge_chain_id(ep, self.chain_id, results[0])
        self._judge_genesis(ep, results[-1])
        ep.verified_connections = ep.connections_opened
        ep.verified_at = now

    def _judge_chain_id(self, ep: Endpoint, expected: int, answer: Any) -> None:
        try:
            found = hex_to_int(answer)
        except ValueError:
            raise invalid("eth_chainId", ep.url, f"not a hex quantity: {answer!r:.100}") from None
        if found != expected:
            message = (
                f"{ep.shown_url} answers eth_chainId {found}, but it is configured for chain "
                f"{expected}: it serves another network. Fix rpc_urls of chain {expected} "
                "in rtrm.toml"
            )
            error = ChainIdMismatchError(message, expected=expected, found=found, url=ep.url)
            raise AttemptError("chain_id_mismatch", error, penalise=True)

    def judge_block0(self, ep: Endpoint, block: Any) -> None:
        """A caller's answer for block 0 (any well-formed one): raise an ``AttemptError``
        if its hash is not the genesis this client expects or first saw."""
        found = block.get("hash") if isinstance(block, dict) else None
        if self.enabled and self.genesis is not None and isinstance(found, str):
            self._judge_genesis(ep, block)

    def _judge_genesis(self, ep: Endpoint, block: Any) -> None:
        found = block.get("hash") if isinstance(block, dict) else None
        if not isinstance(found, str):
            raise invalid("eth_getBlockByNumber(0)", ep.url, f"no block 0 in {block!r:.100}")
        found = found.lower()
        if self.genesis is None:
            self.genesis = found
            self._genesis_source = f"first seen on {ep.shown_url}"
            logger.info(
                "chain %s: genesis %s (first seen on %s)", self.chain_id, found, ep.shown_url
            )
            return
        if found != self.genesis:
            chain = f"chain {self.chain_id}" if self.chain_id is not None else "the chain"
            message = (
                f"{ep.shown_url} serves a chain whose block 0 hash is {found}, but {chain} has "
                f"genesis {self.genesis} ({self._genesis_source}): the node was restarted "
                "with a fresh state (anvil keeps none) or the URL now points at another "
                "network. Its data must not be mixed with what is indexed: re-index the chain "
                "from scratch if the node was reset on purpose, otherwise fix rpc_urls in "
                "rtrm.toml"
            )
            error = GenesisMismatchError(message, expected=self.genesis, found=found, url=ep.url)
            raise AttemptError("genesis_mismatch", error, penalise=True)
