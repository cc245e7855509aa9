"""How fast do we decode ``eth_getLogs`` entries? (``python -m bench.decode``)

Builds ``--logs`` synthetic raw logs (default 200,000) of our real event mix, encoded with
``eth_abi.encode`` and shaped as a node returns them (hex strings, ~20 logs per block, 1-3
per transaction, 5,000 users), then decodes them in the same run with:

- ``indexer.decode`` (ours): the full result, :class:`~indexer.decode.DecodedLog` values,
  with its C loop (:mod:`indexer.native`) and, where that is built, with its Python loop;
- ``eth_abi.decode``: data and indexed topics only, nothing else (the usual reference);
- ``eth_abi`` + the same output: plus checksummed addresses, envelope, ``DecodedLog``.

Checks that ours (both loops) and the third agree on every log, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from chains.artifacts import EventAbi, event_table
from indexer import native
from indexer.decode import DecodedLog, LogDecoder

# (event name, weight): what a busy devnet block looks like
MIX = [
    ("PositionOpened", 20),
    ("PositionModified", 15),
    ("Supply", 12),
    ("Borrow", 8),
    ("Transfer", 20),
    ("AnswerUpdated", 8),
    ("PositionClosed", 5),
    ("Repay", 4),
    ("CollateralDeposited", 4),
    ("FundingUpdated", 2),
    ("VolSurfaceUpdated", 2),
]


def _value(rng: random.Random, abi_type: str, users: list[str]) -> Any:
    if abi_type == "address":
        return rng.choice(users)
    if abi_type == "bool":
        return rng.random() < 0.5
    if abi_type.startswith("uint"):
        return rng.getrandbits(min(int(abi_type[4:]), rng.choice([64, 96, 128])))
    if abi_type.startswith("int"):
        bits = min(int(abi_type[3:]), 96)
        return rng.getrandbits(bits) - (1 << (bits - 1))
    if abi_type == "bytes32":
        return rng.choice([b"ETH", b"BTC", b"SOL"]).ljust(32, b"\0")
    raise ValueError(abi_type)


def synthetic_logs(count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    by_name: dict[str, EventAbi] = {}
    for event in event_table().values():
        by_name.setdefault(event.name, event)
    events = [by_name[name] for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    users = ["0x" + rng.randbytes(20).hex() for _ in range(5_000)]
    contracts = ["0x" + rng.randbytes(20).hex() for _ in range(8)]
    logs: list[dict[str, Any]] = []
    block, tx, tx_index, log_index = 1_000_000, "", 0, 0
    for i in range(count):
        if i % 20 == 0:
            block, tx_index, log_index = block + 1, -1, 0
        if i % 2 == 0 or tx_index < 0:
            tx, tx_index = "0x" + rng.randbytes(32).hex(), tx_index + 1
        event = rng.choices(events, weights)[0]
        values = [_value(rng, p["type"], users) for p in event.inputs]
        indexed = [(p, v) for p, v in zip(event.inputs, values, strict=True) if p["indexed"]]
        plain = [(p, v) for p, v in zip(event.inputs, values, strict=True) if not p["indexed"]]
        topics = [event.topic0] + ["0x" + abi_encode([p["type"]], [v]).hex() for p, v in indexed]
        data = abi_encode([p["type"] for p, _ in plain], [v for _, v in plain])
        logs.append(
            {
                "address": rng.choice(contracts),
                "topics": topics,
                "data": "0x" + data.hex(),
                "blockNumber": hex(block),
                "blockHash": "0x" + block.to_bytes(32, "big").hex(),
                "transactionHash": tx,
                "transactionIndex": hex(tx_index),
                "logIndex": hex(log_index),
                "removed": False,
            }
        )
        log_index += 1
    return logs


def _abi_args(event: EventAbi, log: Mapping[str, Any]) -> dict[str, Any]:
    topics, out, data_params = iter(log["topics"][1:]), {}, []
    for p in event.inputs:
        if p["indexed"]:
            out[p["name"]] = abi_decode([p["type"]], bytes.fromhex(next(topics)[2:]))[0]
        else:
            data_params.append(p)
    values = abi_decode([p["type"] for p in data_params], bytes.fromhex(log["data"][2:]))
    out.update(zip([p["name"] for p in data_params], values, strict=True))
    return {p["name"]: out[p["name"]] for p in event.inputs}


def eth_abi_only(chain_id: int, logs: list[dict[str, Any]]) -> list[Any]:
    table = event_table()
    return [_abi_args(table[log["topics"][0]], log) for log in logs]


def eth_abi_full(chain_id: int, logs: list[dict[str, Any]]) -> list[DecodedLog]:
    table, out = event_table(), []
    for log in logs:
        event = table[log["topics"][0]]
        args = _abi_args(event, log)
        for p in event.inputs:
            if p["type"] == "address":
                args[p["name"]] = to_checksum_address(args[p["name"]])
            elif p["type"] == "bytes32":
                args[p["name"]] = "0x" + args[p["name"]].hex()
        out.append(
            DecodedLog(
                chain_id=chain_id,
                block_number=int(log["blockNumber"], 16),
                block_hash=log["blockHash"],
                tx_hash=log["transactionHash"],
                tx_index=int(log["transactionIndex"], 16),
                log_index=int(log["logIndex"], 16),
                address=to_checksum_address(log["address"]),
                contract=event.contract,
                event=event.name,
                args=args,
                removed=bool(log["removed"]),
            )
        )
    return out


def python_loop(decoder: LogDecoder) -> Callable[[int, list[dict[str, Any]]], list[DecodedLog]]:
    """``decoder.decode_logs`` with the C loop switched off (the Python twin runs)."""

    def run(chain_id: int, logs: list[dict[str, Any]]) -> list[DecodedLog]:
        saved, native.decode = native.decode, None
        try:
            return decoder.decode_logs(chain_id, logs)
        finally:
            native.decode = saved

    return run


def best_rate(
    fn: Callable[[int, list[dict[str, Any]]], list[Any]], logs: list[Any], n: int
) -> float:
    """Events per CPU-second of this process, best of ``n`` (robust on a shared machine).

    The cyclic GC is paused for every decoder, as ``indexer.decode`` does for its batches,
    so the comparison is of decoding work alone."""
    best = float("inf")
    for _ in range(n):
        gc.collect()
        gc.disable()
        started = time.process_time()
        fn(1, logs)
        best = min(best, time.process_time() - started)
        gc.enable()
    return len(logs) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logs", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per decoder")
    args = parser.parse_args()
    logs = synthetic_logs(args.logs)
    decoder = LogDecoder()
    ours = decoder.decode_logs(1, logs)
    if ours != eth_abi_full(1, logs):
        raise SystemExit("MISMATCH: indexer.decode disagrees with eth_abi")
    if python_loop(decoder)(1, logs) != ours:
        raise SystemExit("MISMATCH: indexer.decode's C and Python loops disagree")
    rates = {
        f"indexer.decode (ours, {native.implementation()} loop)": best_rate(
            decoder.decode_logs, logs, args.repeat
        )
    }
    if native.implementation() == "C":
        rates["indexer.decode, Python loop"] = best_rate(python_loop(decoder), logs, args.repeat)
    rates["eth_abi.decode, args only"] = best_rate(eth_abi_only, logs, args.repeat)
    rates["eth_abi.decode + same output"] = best_rate(eth_abi_full, logs, args.repeat)
    reference = next(iter(rates.values()))
    print(f"{args.logs:,} logs, {len(MIX)} event types, best of {args.repeat} (CPU time), ", end="")
    print(f"Python {platform.python_version()} on {platform.machine()}; outputs identical\n")
    print("| decoder | events/s | ours is |")
    print("|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {reference / rate:.1f}x |")


if __name__ == "__main__":
    main()
