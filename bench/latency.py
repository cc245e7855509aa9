"""Block mined on anvil -> reflected in ``/v1/users/{address}/risk``: p50 and p99.

``python bench/latency.py [--users 2000] [--chains 3] [--block-time 1] [--samples 60]
[--oracle-every S]``

Starts a devnet (blocks every ``--block-time`` s), then ``rtrm serve`` as a subprocess
(live indexers, API on a free loopback port, rate limit off). For each sample, a user
who supplies to a lending pool (and owes nothing) withdraws 1 % of it on one of the
chains, in turn; the clock starts when the transaction's block is mined (its receipt is
polled every 5 ms) and stops when ``/v1/users/{address}/risk`` (polled every 5 ms) answers
at a watermark that includes that block on that chain. The reference, in the same
samples: when ``/v1/status`` first shows the block indexed (the indexer's share of the
latency; the rest is the snapshot refresh). Prints one row per chain and overall
(target: p99 <= 1 s), with the machine and its load, and the snapshot loads that ran
during the samples (``/metrics``: full loads run beside the per-user ones).

The seeded devnet is quiet: full loads come from the overlay's age and the service's
periodic full recompute. ``--oracle-every S`` adds what a live market does: every ``S``
seconds an ETH oracle round (+-0.1 %) on every chain, each of which moves every mark and
starts a full load.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from chains.abi import encode_call
from chains.deploy import DEPLOYER
from chains.devnet import DevnetOptions, up
from chains.exceptions import ChainError
from chains.rpc import RpcClient, hex_to_int
from chains.world import feed_name

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


def suppliers(base: str, n_chains: int, enough: int) -> dict[int, list[tuple[str, Any]]]:
    """Per chain: users with a lending supply and no debt, with that supply (until
    ``n_chains`` chains have ``enough`` each)."""
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
        if len(found) >= n_chains and all(len(f) >= enough for f in found.values()):
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
            response = session.get(f"{base}/v1/users/{user}/risk", timeout=30)
            risk = response.json()
            if not response.ok:  # said, and polled again: the sample counts the wait
                print(f"{response.status_code} for {user}: {risk}", file=sys.stderr, flush=True)
            elif risk["watermark"].get(str(chain_id), -1) >= block:
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
    parser.add_argument("--oracle-every", type=float, default=0.0, metavar="S")
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
        keep_states=4,  # a 20k-user state per block (anvil default) or even 64 exhaust 24 GB
    )
    started = time.monotonic()
    state, nodes = up(options)
    _progress(started, "devnet up")
    process = None
    try:
        process, base = start_serve(Path(state.config_path))
        wait_ready(base)
        _progress(started, f"rtrm serve ready on {base}")
        found = suppliers(base, args.chains, -(-args.samples // args.chains))
        _progress(started, "suppliers found; sampling")
        rpc = {n.chain_id: n.rpc_url for n in state.nodes}
        chains = sorted(c for c in found if c in rpc)
        seconds: dict[int, list[Sample]] = {c: [] for c in chains}
        stop = threading.Event()
        feeds = {c: state.contracts[str(c)][feed_name("ETH")] for c in rpc}
        rounds = threading.Thread(target=oracle_rounds, args=(rpc, feeds, args.oracle_every, stop))
        before = reloads(base)
        if args.oracle_every > 0:
            rounds.start()
        try:
            for i in range(args.samples):
                chain_id = chains[i % len(chains)]
                user, supply = found[chain_id][(i // len(chains)) % len(found[chain_id])]
                seconds[chain_id].append(sample(base, rpc[chain_id], chain_id, user, supply))
        except (ChainError, requests.RequestException) as exc:  # e.g. an anvil out of memory
            _progress(started, f"sampling stopped after {i} samples: {exc}")
            if i < len(chains):
                raise
        finally:
            stop.set()
            if rounds.is_alive():
                rounds.join(30)
        _report(seconds, args, reloads(base, before))
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for node in nodes:
            node.stop()


def oracle_rounds(
    rpc: dict[int, str], feeds: dict[int, str], every_s: float, stop: threading.Event
) -> None:
    """An ETH oracle round (+-0.1 %, alternating) on every chain every ``every_s`` s."""
    clients = {c: RpcClient(url) for c, url in rpc.items()}
    try:
        step = 0
        while not stop.wait(every_s):
            step += 1
            for chain_id, client in clients.items():
                call = {"to": feeds[chain_id], "data": encode_call("latestRoundData()")}
                raw = client.call("eth_call", [call, "latest"])
                answer = int.from_bytes(bytes.fromhex(raw[2:])[32:64], "big", signed=True)
                moved = round(answer * (1.001 if step % 2 else 1 / 1.001))
                data = encode_call("updateAnswer(int256)", moved)
                tx = {"from": DEPLOYER, "to": feeds[chain_id], "data": data, "gas": "0x30d40"}
                client.call("eth_sendTransaction", [{**tx, "gasPrice": "0x0"}])
    finally:
        for client in clients.values():
            client.close()


def reloads(base: str, since: dict[str, float] | None = None) -> dict[str, float]:
    """Snapshot loads by kind from ``/metrics`` (count and seconds), minus ``since``."""
    found: dict[str, float] = {}
    for line in requests.get(f"{base}/metrics", timeout=30).text.splitlines():
        for suffix in ("count", "sum"):
            name = f"rtrm_api_snapshot_reload_seconds_{suffix}{{"
            if line.startswith(name):
                kind = line.split('kind="')[1].split('"')[0]
                found[f"{kind}_{suffix}"] = float(line.split()[-1])
    return {k: v - (since or {}).get(k, 0.0) for k, v in found.items()}


def _progress(started: float, what: str) -> None:
    print(f"[{time.monotonic() - started:6.0f} s] {what}", file=sys.stderr, flush=True)


def _report(
    seconds: dict[int, list[Sample]], args: argparse.Namespace, loads: dict[str, float]
) -> None:
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
    rows = [*((str(c), v) for c, v in seconds.items() if v), ("all", everything)]
    for name, values in rows:
        indexed = np.asarray([s.indexed_s for s in values]) * 1000.0
        ms = np.asarray([s.reflected_s for s in values]) * 1000.0
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        met = "yes" if p99 <= TARGET_P99_MS else "**no**"
        print(
            f"| {name} | {len(ms)} | {np.percentile(indexed, 50):.0f} | "
            f"{np.percentile(indexed, 99):.0f} | {p50:.0f} | {p99:.0f} | {ms.max():.0f} | "
            f"<= {TARGET_P99_MS:.0f} | {met} |"
        )
    rounds = f", an oracle round every {args.oracle_every:g} s" if args.oracle_every else ""
    print(f"\nsnapshot loads during the samples{rounds}:")
    for kind in ("full", "users"):
        count = loads.get(f"{kind}_count", 0.0)
        mean = loads.get(f"{kind}_sum", 0.0) / count * 1000.0 if count else 0.0
        print(f"- {kind}: {count:.0f}, mean {mean:.0f} ms")


if __name__ == "__main__":
    main()
