"""How fast does the devnet seed a large world? (``make bench`` or ``python bench/seed.py``)

Runs ``rtrm devnet up`` in-process for ``--users`` users (default 100,000) on 3 chains
and reports wall time, transactions, events and events per second, next to the reference
measured in the same run: raw anvil throughput for a minimal transaction (one storage
write, two events) sent by the same batching sender on the same machine. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from chains.abi import encode_args, encode_call
from chains.anvil import AnvilConfig, AnvilNode
from chains.artifacts import load_artifact
from chains.deploy import DEPLOYER, create_address
from chains.devnet import BLOCK_GAS_LIMIT, DevnetOptions, up
from chains.rpc import RpcClient
from chains.scenario import user_addresses
from chains.sender import TxSender
from chains.world import GENESIS_TIMESTAMP


def reference_tx_per_s(transactions: int) -> float:
    """Raw ceiling on one anvil node: ``Token.approve`` (one storage write, one event) from
    distinct senders, through the same batching sender the seeder uses."""
    config = AnvilConfig(
        chain_id=1, no_mining=True, genesis_timestamp=GENESIS_TIMESTAMP, gas_limit=BLOCK_GAS_LIMIT
    )
    with AnvilNode.start(config) as node, RpcClient(node.url) as client:
        sender = TxSender(client, timestamp=GENESIS_TIMESTAMP, block_interval_s=1)
        token = create_address(DEPLOYER, sender.next_nonce(DEPLOYER))
        args = encode_args(["string", "string", "uint8"], ["Reference", "REF", 18]).hex()
        sender.send(DEPLOYER, None, load_artifact("Token").bytecode + args, gas=5_000_000)
        sender.mine()
        started = time.perf_counter()
        for user in user_addresses(99, transactions):
            sender.send(user, token, encode_call("approve(address,uint256)", user, 1), gas=100_000)
        sender.mine()
        return transactions / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--chains", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        state, nodes = up(
            DevnetOptions(
                chains=args.chains,
                users=args.users,
                block_time_s=0,
                state_dir=Path(home),
                keep_states=4,
            )
        )
        seconds = time.perf_counter() - started
        for node in nodes:
            node.stop()
    rows = state.summary["chains"]
    txs = sum(r["transactions"] for r in rows)
    events = sum(r["events"] for r in rows)
    reference = reference_tx_per_s(40_000)
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {python}")
    print(
        "| users | chains | seconds | transactions | events | events/s | tx/s "
        "| raw tx/s, 1 chain | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.users:,} | {args.chains} | {seconds:.1f} | {txs:,} | {events:,} "
        f"| {events / seconds:,.0f} "
        f"| {txs / seconds:,.0f} | {reference:,.0f} | {txs / seconds / reference:.2f} |"
    )


if __name__ == "__main__":
    main()
