"""Errors raised by the ``indexer`` package.

Messages name the chain id and block range involved and what to do next::

    IndexerError                    root: anything that stops indexing or reading the store
    ├── StoreError                  the database cannot be opened, migrated or written
    │   ├── WriterLockedError       another indexer already writes this chain
    │   └── WriterLostError         this writer lost its lock, or the cursor moved under it
    ├── ChainPausedError            a chain stopped to protect the store (reorg below
    │                               finality, syncing node, new genesis); others go on
    ├── DecodeError (ValueError)    a log does not match its event's ABI
    ├── MalformedAnswerError        a node's answer is not what JSON-RPC promises
    │   └── MalformedLogError       a log's envelope (hashes, indexes, hex), also a DecodeError
    └── RangeNotSplittableError     eth_getLogs failed on one block: retry, or read receipts
"""

from __future__ import annotations

__all__ = [
    "ChainPausedError",
    "DecodeError",
    "IndexerError",
    "MalformedAnswerError",
    "MalformedLogError",
    "RangeNotSplittableError",
    "StoreError",
    "WriterLockedError",
    "WriterLostError",
]


class IndexerError(Exception):
    """Root of every error raised by ``indexer``."""


class StoreError(IndexerError):
    """The store cannot be opened, migrated or written."""


class WriterLockedError(StoreError):
    """Another process holds the single-writer lock of a chain."""


class WriterLostError(StoreError):
    """This process may no longer write a chain: its writer lock's session ended (killed,
    a database restart, an idle timeout) or the cursor is not where it left it (another
    process wrote the chain). The write was rolled back; stand by for the lock again."""


class ChainPausedError(IndexerError):
    """Indexing a chain must stop until an operator acts (the message says how)."""

    def __init__(self, chain_id: int, reason: str) -> None:
        super().__init__(f"chain {chain_id} paused: {reason}")
        self.chain_id = chain_id
        self.reason = reason


class DecodeError(IndexerError, ValueError):
    """A log's topics or data do not match the ABI of its event.

    The message names the chain, block, transaction, log index, event and field; the same
    facts are attributes (``None`` where unknown; ``block``/``log_index`` as the node sent
    them, hex strings).
    """

    def __init__(
        self,
        message: str,
        *,
        chain_id: int | None = None,
        block: object = None,
        tx_hash: object = None,
        log_index: object = None,
        event: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.chain_id = chain_id
        self.block = block
        self.tx_hash = tx_hash
        self.log_index = log_index
        self.event = event
        self.field = field


class MalformedAnswerError(IndexerError):
    """A node answered with something JSON-RPC does not allow (a block header without a
    0x-hex hash, a log that is not an object, a non-hex block number).

    Never trusted, never written: the range is read again, and a chain whose node keeps
    answering so restarts with back-off (the message names the method and the field).
    """


class MalformedLogError(MalformedAnswerError, DecodeError):
    """A log whose envelope is not what JSON-RPC promises (a missing ``logIndex``, a
    transaction hash that is not 0x + 64 hex digits, ...): a broken answer, read again, as
    opposed to a well-formed log that does not fit its event's ABI (a plain
    :class:`DecodeError`, stored raw and left out of the derived state)."""


class RangeNotSplittableError(IndexerError):
    """An ``eth_getLogs`` call over one block failed with a range-size or unknown error.

    Splitting the range cannot help: the caller backs off and retries, or reads the block
    another way (its receipts) when ``reason`` is ``"results"`` (the provider caps the
    answer's size below what the block holds); ``cause`` is the provider's error.
    """

    def __init__(
        self, message: str, *, chain_id: int, block: int, cause: object, reason: str = "unknown"
    ) -> None:
        super().__init__(message)
        self.chain_id = chain_id
        self.block = block
        self.cause = cause
        self.reason = reason  # results | range | timeout | unknown (indexer.ranges)
