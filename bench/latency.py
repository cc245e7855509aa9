"""Block mined on anvil -> reflected in ``/v1/users/{address}/risk``: p50 and p99.

``python bench/latency.py [--users 2000] [--chains 3] [--block-time 1] [--samples 60]``

Starts a devnet (blocks every ``--block-time`` s), then ``rtrm serve`` as a subprocess
(live indexers, API on a free loopback port, rate limit off). For each sample, a user
who supplies to a lending pool (and owes nothing) withdraws 1 % of it on one of the
chains, in turn; the clock starts when the transaction's block is mined (its receipt is
polled every 5 ms) and stops when ``/v1/users/{address}/risk`` (polled every 5 ms) answers
at a watermark that includes that block on that chain. The reference, in the same
samples: when ``/v1/status`` first shows the block indexed (the indexer's share of the
latency; the rest is the snapshot refresh). Prints one row per chain and overall
(target: p99 <= 1 s), with the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from chains.abi import encode_call
from chains.devnet import DevnetOptions, up
from chains.rpc import RpcClient, hex_to_int

TARGET_P99_MS = 1000.0
POLL_S = 0.005


def start_serve(config: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``rtrm serve --port 0`` on ``config``; returns the process and its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTRM_")}
    env |= {"RTRM_CONFIG": str(config), "RTRM_API_RATE_LIMIT": "0"}
    rtrm = Path(sys.executable).with_name("rtrm")
    process = subprocess.Popen(
        [str(rtrm), "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("RTRM serving on "):
        process.kill()
        raise SystemExit(f"rtrm serve did not start: {line!r}")
    return process, line.split()[-1]


def wait_ready(base: str, timeout_s: float = 600.0) -> None:
    """Until a snapshot is loaded and no chain lags."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=10).ok:
                status = requests.get(f"{base}/v1/status", timeout=10).json()
                if all(c["lag_blocks"] <= 1 for c in status["chains"]):
                    return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not catch up in time")


def suppliers(base: str) -> dict[int, list[tuple[str, dict[str, Any]]]]:
    """Per chain: users with a lending supply and no debt, with that supply."""
    exposure = requests.get(f"{base}/v1/assets/exposure?top=100", timeout=60).json()
    users = sorted({h["address"] for a in exposure["assets"] for h in a["top_holders"]})
    found: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for user in users:
        chains = requests.get(f"{base}/v1/users/{user}/positions", timeout=60).json()["chains"]
        for chain in chains:
            if any(b["kind"] == "debt" and b["amount"] for b in chain["balances"]):
                continue
            for b in chain["balances"]:
                if b["protocol_kind"] == "lending" and b["amount"] >= 100:
                    found.setdefault(chain["chain_id"], []).append((user, b))
                    break
    return found


@dataclass(frozen=True, slots=True)
class Sample:
    indexed_s: float  # block mined -> /v1/status shows it indexed
    reflected_s: float  # block mined -> /v1/users/{address}/risk answers at it


def sample(base: str, rpc_url: str, chain_id: int, user: str, supply: dict[str, Any]) -> Sample:
    """From the withdrawal's block being mined to it being indexed and in the API's risk."""
    data = encode_call(
        "withdraw(address,uint256,address)", supply["token"], supply["amount"] // 100, user
    )
    tx = {"from": user, "to": supply["protocol_address"], "data": data, "gas": "0x7a120"}
    with RpcClient(rpc_url) as client:
        tx_hash = client.call("eth_sendTransaction", [{**tx, "gasPrice": "0x0"}])
        while True:
            receipt = client.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                mined = time.monotonic()
                block = hex_to_int(receipt["blockNumber"])
                break
            time.sleep(POLL_S)
    indexed = None
    with requests.Session() as session:
        while True:
            if indexed is None:
                status = session.get(f"{base}/v1/status", timeout=30).json()
                chain = next(c for c in status["chains"] if c["chain_id"] == chain_id)
                if chain["indexed_block"] >= block:
                    indexed = time.monotonic() - mined
            risk = session.get(f"{base}/v1/users/{user}/risk", timeout=30).json()
            if risk["watermark"].get(str(chain_id), -1) >= block:
                reflected = time.monotonic() - mined
                return Sample(reflected if indexed is None else indexed, reflected)
            time.sleep(POLL_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--chains", type=int, default=3)
    parser.add_argument("--block-time", type=int, default=1)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rtrm-latency-") as home:
        run(args, Path(home))


def run(args: argparse.Namespace, home: Path) -> None:
    """Devnet in ``home``, ``rtrm serve`` on it, the samples, the table."""
    options = DevnetOptions(
        chains=args.chains,
        users=args.users,
        seed=args.seed,
        block_time_s=args.block_time,
        state_dir=home,
    )
    state, nodes = up(options)
    process = None
    try:
        process, base = start_serve(Path(state.config_path))
        wait_ready(base)
        found = suppliers(base)
        rpc = {n.chain_id: n.rpc_url for n in state.nodes}
        chains = sorted(c for c in found if c in rpc)
        seconds: dict[int, list[Sample]] = {c: [] for c in chains}
        for i in range(args.samples):
            chain_id = chains[i % len(chains)]
            user, supply = found[chain_id][(i // len(chains)) % len(found[chain_id])]
            seconds[chain_id].append(sample(base, rpc[chain_id], chain_id, user, supply))
        _report(seconds, args)
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)
        for node in nodes:
            node.stop()


def _report(seconds: dict[int, list[Sample]], args: argparse.Namespace) -> None:
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(
        f"\nblock -> /v1/users/{{address}}/risk, {args.users:,} users, {args.chains} chains, "
        f"block time {args.block_time} s; {platform.machine()}, {os.cpu_count()} cores, "
        f"{python}, load {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| chain | samples | indexed p50 ms | indexed p99 ms | risk p50 ms | risk p99 ms "
        "| risk max ms | target p99 | met |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    everything = [s for values in seconds.values() for s in values]
    for name, values in [*((str(c), v) for c, v in seconds.items()), ("all", everything)]:
        indexed = np.asarray([s.indexed_s for s in values]) * 1000.0
        ms = np.asarray([s.reflected_s for s in values]) * 1000.0
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        met = "yes" if p99 <= TARGET_P99_MS else "**no**"
        print(
            f"| {name} | {len(ms)} | {np.percentile(indexed, 50):.0f} | "
            f"{np.percentile(indexed, 99):.0f} | {p50:.0f} | {p99:.0f} | {ms.max():.0f} | "
            f"<= {TARGET_P99_MS:.0f} | {met} |"
        )


if __name__ == "__main__":
    main()
