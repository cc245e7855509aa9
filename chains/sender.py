"""Send many transactions to an anvil node fast and deterministically, and prove they landed.

The node runs with automatic mining off. :class:`TxSender` queues transactions, then
:meth:`TxSender.mine` sends them as JSON-RPC batches and mines one block per chunk at a
timestamp it chooses, so the same queue always produces the same blocks, hashes and
events. Senders are impersonated (anvil ``--auto-impersonate``) and pay a zero gas price
on a zero base fee; nonces are tracked here, and gas limits are given explicitly, so anvil
never estimates gas (estimation would cost more than execution).

Invariant: :meth:`mine` returns only when every queued transaction is mined *and
succeeded*: each block's receipts are read back and a reverted transaction raises
:class:`~chains.exceptions.DevnetError` naming it and its revert reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from chains.exceptions import DevnetError, ExecutionRevertedError, RPCError
from chains.rpc import RpcClient, hex_to_int, to_hex
from chains.urls import hide_credentials

__all__ = ["MinedStats", "TxSender"]

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 2_000  # txs per block: anvil's pending pool slows down sharply past this
_NONCE_BATCH = 1_000
MAX_REQUEST_BYTES = 1_000_000  # anvil drops the connection on much larger request bodies


def _by_size(chunk: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """Split ``chunk`` (order kept) into parts whose calldata stays under the request cap."""
    parts: list[list[dict[str, str]]] = []
    size = MAX_REQUEST_BYTES
    for tx in chunk:
        if size + len(tx["data"]) > MAX_REQUEST_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(tx)
        size += len(tx["data"])
    return parts


@dataclass(slots=True)
class MinedStats:
    """What :meth:`TxSender.mine` has mined so far."""

    blocks: int = 0
    transactions: int = 0
    events: int = 0
    first_block: int | None = None
    last_block: int | None = None
    events_by_topic: dict[str, int] = field(default_factory=dict)


class TxSender:
    """Queue transactions for one chain and mine them in deterministic blocks."""

    def __init__(
        self,
        client: RpcClient,
        *,
        timestamp: int,
        block_interval_s: int,
        chunk: int = DEFAULT_CHUNK,
        count_topics: bool = False,
    ) -> None:
        self.client = client
        self.timestamp = timestamp  # of the last mined block; the next is + interval
        self.block_interval_s = block_interval_s
        self.chunk = chunk
        self.count_topics = count_topics
        self.stats = MinedStats()
        self._nonces: dict[str, int] = {}
        self._queue: list[dict[str, str]] = []

    def send(self, sender: str, to: str | None, data: str, *, gas: int = 600_000) -> None:
        """Queue a call (or a deployment when ``to`` is None) from ``sender``."""
        tx = {"from": sender, "data": data, "gas": to_hex(gas), "gasPrice": "0x0"}
        if to is not None:
            tx["to"] = to
        self._queue.append(tx)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def next_nonce(self, sender: str) -> int:
        """The nonce the next queued transaction of ``sender`` will get (fetched once)."""
        key = sender.lower()
        if key not in self._nonces:
            self._fetch_nonces([key])
        return self._nonces[key] + sum(1 for tx in self._queue if tx["from"].lower() == key)

    def mine(self, *, advance_s: int | None = None) -> MinedStats:
        """Send everything queued and mine it, ``chunk`` transactions per block; with an empty
        queue, mine one empty block. ``advance_s`` overrides the gap before the first block."""
        queue, self._queue = self._queue, []
        chunks = [queue[i : i + self.chunk] for i in range(0, len(queue), self.chunk)] or [[]]
        for i, chunk in enumerate(chunks):
            self._assign_nonces(chunk)
            for part in _by_size(chunk):
                self.client.batch([("eth_sendTransaction", [tx]) for tx in part])
            gap = advance_s if (i == 0 and advance_s is not None) else self.block_interval_s
            self.timestamp += gap
            self.client.batch([("evm_setNextBlockTimestamp", [self.timestamp]), ("evm_mine", [])])
            self._verify_block(chunk)
        return self.stats

    # ------------------------------------------------------------------ internals

    def _assign_nonces(self, chunk: list[dict[str, str]]) -> None:
        unknown = sorted({tx["from"].lower() for tx in chunk} - self._nonces.keys())
        for i in range(0, len(unknown), _NONCE_BATCH):
            self._fetch_nonces(unknown[i : i + _NONCE_BATCH])
        for tx in chunk:
            key = tx["from"].lower()
            tx["nonce"] = to_hex(self._nonces[key])
            self._nonces[key] += 1

    def _fetch_nonces(self, addresses: list[str]) -> None:
        counts = self.client.batch(
            [("eth_getTransactionCount", [address, "latest"]) for address in addresses]
        )
        for address, count in zip(addresses, counts, strict=True):
            self._nonces[address] = hex_to_int(count)

    def _verify_block(self, chunk: list[dict[str, str]]) -> None:
        """Check every transaction of the block just mined succeeded, and count its events.

        anvil answers ``eth_getBlockReceipts`` in O(n²) (3 s for 2,000 receipts), but
        ``eth_getLogs`` by block hash in milliseconds. A reverted transaction emits no log,
        so only the transactions without any log need their receipt read.
        """
        block = self.client.call("eth_getBlockByNumber", ["latest", False])
        hashes: list[str] = block["transactions"]
        if len(hashes) != len(chunk):
            raise DevnetError(
                f"chain {hide_credentials(self.client.url)}: sent {len(chunk)} transactions but "
                f"the block holds {len(hashes)}; the node dropped some (is another process "
                "mining it?)"
            )
        logs: list[dict[str, Any]] = self.client.call("eth_getLogs", [{"blockHash": block["hash"]}])
        stats = self.stats
        with_logs = {entry["transactionIndex"] for entry in logs}
        silent = [i for i in range(len(chunk)) if to_hex(i) not in with_logs]
        receipts = self.client.batch([("eth_getTransactionReceipt", [hashes[i]]) for i in silent])
        for i, receipt in zip(silent, receipts, strict=True):
            if receipt is None or receipt["status"] != "0x1":
                raise DevnetError(self._describe_failure(chunk[i], receipt, hashes[i]))
        stats.events += len(logs)
        if self.count_topics:
            for entry in logs:
                topic = entry["topics"][0]
                stats.events_by_topic[topic] = stats.events_by_topic.get(topic, 0) + 1
        number = hex_to_int(block["number"])
        stats.blocks += 1
        stats.transactions += len(chunk)
        stats.first_block = number if stats.first_block is None else stats.first_block
        stats.last_block = number

    def _describe_failure(
        self, tx: dict[str, str], receipt: dict[str, Any] | None, tx_hash: str
    ) -> str:
        if receipt is None:
            return f"transaction {tx_hash} from {tx['from']} was mined but has no receipt"
        block = hex_to_int(receipt["blockNumber"])
        call = {k: tx[k] for k in ("from", "to", "data", "gas") if k in tx}
        gas_used, gas_limit = hex_to_int(receipt["gasUsed"]), hex_to_int(tx["gas"])
        if gas_used >= gas_limit:
            reason = f"out of gas (limit {gas_limit})"
        else:
            reason = (
                "it succeeds on the parent block's state, so an earlier transaction in the "
                "same block made it fail"
            )
        try:  # replay on the parent state: usually reproduces the revert with its reason
            self.client.call("eth_call", [call, to_hex(block - 1)])
        except ExecutionRevertedError as exc:
            reason = exc.reason or str(exc)
        except RPCError as exc:
            reason = f"replay failed: {exc}"
        return (
            f"transaction {receipt['transactionHash']} from {tx['from']} to {tx.get('to')} "
            f"(selector {tx['data'][:10]}) reverted in block {block}: {reason}"
        )
