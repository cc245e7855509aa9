"""Per-chain indexers that fill one unified store, plus the watermark that reads it.

For each configured chain, the indexer fetches logs and blocks over JSON-RPC, decodes
them and writes positions, collateral, debt and prices to the store (SQLModel;
SQLite by default, PostgreSQL in production). Invariants:

- exactly once: every event has the unique key (chain_id, tx_hash, log_index), and
  its data, the block ledger and the chain's cursor are written in one transaction;
- reorgs are detected from parent hashes within the chain's finality depth and rolled
  back before re-indexing;
- readers read at a watermark vector {chain_id: block}, a consistent cross-chain cut.

May import ``chains`` only.
"""
