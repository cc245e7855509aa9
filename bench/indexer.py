"""How close to the RPC ceiling does the indexer run? (``python bench/indexer.py``)

In one run, on one seeded anvil chain (``--users``, default 280,000: about 1M events from
the indexed contracts; or an already running devnet's first chain with ``--config``):

(a) the raw ceiling: a minimal client that only calls ``eth_getLogs`` over the same
    contracts and parses the JSON (orjson), no decoding, no storage — the best events/s
    over several block spans and concurrencies, with the CPU that client and the anvil
    node spent per event in that pass (what is left of two cores for the indexer);
(b) RTRM end to end, ``rtrm index --once`` in a fresh process, into SQLite and into
    PostgreSQL (a fresh schema): events/s, the ratio ours/raw, JSON-RPC calls per 1,000
    events, the indexer process's CPU time per event and its peak memory (max RSS);
(c) the store's share alone: the rows (b) left in SQLite, read into memory, then written
    into a fresh store of each kind as a bulk backfill writes them (deferrable indexes
    dropped, ``BulkWriter`` inserts in transactions of 50,000 rows, indexes built at the
    end), timed without any fetch, decode or state. Final versions only, no closes: a
    floor under what (b) spends writing, and so a ceiling on the ratio that a faster
    fetch and decode could reach with this schema.

Prints a markdown table and the machine it ran on. Target: ratio >= 0.6 on both stores.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/indexer.py`, this folder comes first on sys.path and this file's
# name would shadow the `indexer` package: drop the folder before importing the project.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import os
import platform
import resource
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

import aiohttp
import orjson
from sqlalchemy import create_engine, text

from chains.abi import encode_call, event_topic
from chains.devnet import DevnetOptions, load_state, up
from chains.exceptions import DevnetError
from chains.registry import load_registry
from chains.rpc import RpcClient, hex_to_int
from indexer import native
from indexer.models import metadata
from indexer.store import BulkWriter, open_store

POSTGRES_URL = os.environ.get(
    "RTRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


async def _raw_pass(url: str, addresses: list[str], last: int, span: int, workers: int) -> int:
    """Fetch every log in ``[0, last]`` with ``workers`` concurrent getLogs of ``span``."""
    ranges = [(lo, min(lo + span - 1, last)) for lo in range(0, last + 1, span)]
    total = 0
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal total
            while ranges:
                lo, hi = ranges.pop(0)
                body = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "eth_getLogs",
                    "params": [{"fromBlock": hex(lo), "toBlock": hex(hi), "address": addresses}],
                }
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=orjson.dumps(body), headers=headers) as response:
                    answer = orjson.loads(await response.read())
                if "result" not in answer:
                    raise SystemExit(f"eth_getLogs {lo}..{hi} failed: {answer}")
                result = answer["result"]
                total += len(result)

        await asyncio.gather(*(worker() for _ in range(workers)))
    return total


@dataclass(frozen=True, slots=True)
class RawCeiling:
    """The minimal client's best pass, and the CPU it and the node spent per event."""

    events_per_s: float
    events: int
    how: str
    client_cpu_us: float
    node_cpu_us: float | None  # None: the node's process is not known (another host)


def raw_ceiling(url: str, addresses: list[str], last: int, node_pid: int | None) -> RawCeiling:
    """Best events/s of the minimal client over spans and concurrencies."""
    best: RawCeiling | None = None
    for span in (1, 2, 4):  # blocks; a seeded block holds ~3,000 events
        for workers in (1, 2):
            node_before, client_before = _process_cpu_s(node_pid), _own_cpu_s()
            started = time.perf_counter()
            events = asyncio.run(_raw_pass(url, addresses, last, span, workers))
            rate = events / (time.perf_counter() - started)
            client_cpu, node_after = _own_cpu_s() - client_before, _process_cpu_s(node_pid)
            if best is None or rate > best.events_per_s:
                node_cpu = None
                if node_before is not None and node_after is not None:
                    node_cpu = (node_after - node_before) / max(events, 1) * 1e6
                how = f"span {span} blocks, {workers} concurrent"
                best = RawCeiling(rate, events, how, client_cpu / max(events, 1) * 1e6, node_cpu)
    assert best is not None
    return best


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None if it cannot be read)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _node_pid(config: Path, url: str) -> int | None:
    """The anvil process behind ``url``, when ``config`` is a devnet's (``devnet.json``)."""
    try:
        state = load_state(config.parent)
    except DevnetError:  # not a devnet's config: the node's CPU is not measured
        return None
    return next((node.pid for node in state.nodes if node.rpc_url == url), None)


def rtrm_index(
    config: Path, database_url: str, chain_id: int
) -> tuple[float, int, int, float, float]:
    """``rtrm index --once --chain chain_id`` in a child process (the chain the raw client
    read, whatever else the devnet runs): seconds, events, RPC calls, CPU seconds (user +
    system) and max RSS MiB."""
    env = {**os.environ, "RTRM_DATABASE_URL": database_url, "RTRM_CONFIG": str(config)}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "rtrm", "index", "--once", "--no-progress", "--json"),
            *("--chain", str(chain_id)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rtrm index failed:\n{done.stderr[-3000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = orjson.loads(done.stdout)
    events = sum(chain["events"] for chain in summary)
    calls = sum(chain["rpc_calls"] for chain in summary)
    rss_mib = max(usage.ru_maxrss, before) / 1024  # Linux reports KiB
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    return seconds, events, calls, cpu, rss_mib


_FLOOR_ROWS = 50_000  # rows per transaction when only writing (a pipeline group's size)


def read_rows(database_url: str) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    """Every row of every table of the store at ``database_url``, by table."""
    store = open_store(database_url, migrate=False)
    tables = {}
    try:
        with store.engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows = [tuple(row) for row in conn.execute(table.select())]
                if rows:
                    tables[table.name] = ([column.name for column in table.columns], rows)
    finally:
        store.dispose()
    return tables


def write_floor(
    tables: dict[str, tuple[list[str], list[tuple[object, ...]]]], database_url: str
) -> float:
    """Seconds to write ``tables`` into the empty store at ``database_url`` as a bulk
    backfill does (migrations not timed)."""
    store = open_store(database_url)
    try:
        started = time.perf_counter()
        store.defer_indexes()
        for name, (columns, rows) in tables.items():
            for first in range(0, len(rows), _FLOOR_ROWS):
                with store.transaction() as conn:
                    BulkWriter(conn).insert(name, columns, rows[first : first + _FLOOR_ROWS])
        store.end_deferral()
        return time.perf_counter() - started
    finally:
        store.dispose()


def _postgres_url() -> tuple[str, str]:
    schema = f"rtrm_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", schema


def _drop_schema(schema: str) -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def trade_rounds(config: Path, url: str, rounds: int) -> int:
    """``rounds`` blocks of market activity after seeding: every perps trader trims one
    position by 1% per round (a reduction needs no initial margin); each trade emits
    PositionModified, PositionState and MarginBalance. Returns the trades mined.

    anvil leaves the odd transaction of such a batch out of its pool (not an RPC error);
    a benchmark needs volume, not every trade, so what is mined is what counts.
    """
    chain = load_registry(config).chains[0]
    perps = next(c.address for c in chain.contracts if c.kind.value == "perps_market")
    topic = event_topic("PositionState(address,bytes32,int256,int256,int256)")
    with RpcClient(url, timeout_s=600) as client:
        logs = client.call(
            "eth_getLogs",
            [{"fromBlock": "0x0", "toBlock": "latest", "address": perps, "topics": [topic]}],
        )
        positions: dict[str, tuple[bytes, int]] = {}  # one position per trader
        for entry in logs:
            size = int.from_bytes(bytes.fromhex(entry["data"][2:66]), "big", signed=True)
            market = bytes.fromhex(entry["topics"][2][2:])
            positions["0x" + entry["topics"][1][26:]] = (market, size)
        users = sorted(positions)
        nonces = client.batch([("eth_getTransactionCount", [u, "latest"]) for u in users])
        nonce = {u: int(n, 16) for u, n in zip(users, nonces, strict=True)}
        mined = 0
        for _ in range(rounds):
            calls = []
            for user in users:
                market, size = positions[user]
                delta = -(size // 100)  # 1% toward zero (floor keeps shorts from flipping)
                if delta == 0:
                    continue
                positions[user] = (market, size + delta)
                data = encode_call("modifyPosition(bytes32,int256)", market, delta)
                tx = {
                    "from": user,
                    "to": perps,
                    "data": data,
                    "gas": "0x927c0",
                    "gasPrice": "0x0",
                    "nonce": hex(nonce[user]),
                }
                calls.append(("eth_sendTransaction", [tx]))
            for i in range(0, len(calls), 1_500):  # anvil's pool slows down past ~2,000
                client.batch(calls[i : i + 1_500], raise_on_error=False)
                client.call("evm_mine")
                block = client.call("eth_getBlockByNumber", ["latest", False])
                mined += len(block["transactions"])
            nonces = client.batch([("eth_getTransactionCount", [u, "latest"]) for u in users])
            nonce = {u: int(n, 16) for u, n in zip(users, nonces, strict=True)}
    return mined


def measure(config: Path, home: Path, *, rounds: int, postgres: bool) -> None:
    """The raw ceiling, then RTRM into each store, on the devnet of ``config``."""
    registry = load_registry(config)
    chain = registry.chains[0]
    url = chain.rpc_urls[0]
    addresses = [str(c.address) for c in chain.contracts]
    trades = trade_rounds(config, url, rounds) if rounds else 0
    with RpcClient(url) as client:
        last = hex_to_int(client.call("eth_blockNumber"))
    print(f"chain {chain.chain_id}: head {last}, {trades:,} perps trades added")
    raw = raw_ceiling(url, addresses, last, _node_pid(config, url))
    raw_rate = raw.events_per_s
    node_cpu = "unknown" if raw.node_cpu_us is None else f"{raw.node_cpu_us:.1f} µs"
    print(
        f"raw ceiling: {raw.events:,} events at {raw_rate:,.0f} events/s ({raw.how}); CPU "
        f"per event: client {raw.client_cpu_us:.1f} µs, node {node_cpu}"
    )
    rows = []
    sqlite_url = f"sqlite:///{home / 'bench.db'}"
    open_store(sqlite_url).dispose()  # migrations are not part of the timing
    rows.append(("SQLite", *rtrm_index(config, sqlite_url, chain.chain_id)))
    if postgres:
        pg_url, schema = _postgres_url()
        try:
            open_store(pg_url).dispose()
            rows.append(("PostgreSQL", *rtrm_index(config, pg_url, chain.chain_id)))
        finally:
            _drop_schema(schema)
    tables = read_rows(sqlite_url)
    floors = {"SQLite": write_floor(tables, f"sqlite:///{home / 'floor.db'}")}
    if postgres:
        pg_url, schema = _postgres_url()
        try:
            floors["PostgreSQL"] = write_floor(tables, pg_url)
        finally:
            _drop_schema(schema)
    stored = sum(len(table_rows) for _, table_rows in tables.values())
    print(f"store writes alone: {stored:,} rows in {len(tables)} tables")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {python}; one anvil")
    print(f"indexer hot loops: {native.implementation()} (RTRM_PURE_PYTHON=1: Python)")
    print(f"load average after the run: {load}")
    print(
        "| store | events | seconds | events/s | raw events/s | ours/raw "
        "| RPC calls per 1k events | CPU µs per event | peak RSS (MiB) "
        "| writes alone (s) | ours/raw at most |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for store, seconds, events, calls, cpu, rss in rows:
        rate = events / seconds
        floor = floors[store]
        print(
            f"| {store} | {events:,} | {seconds:.1f} | {rate:,.0f} | {raw_rate:,.0f} "
            f"| {rate / raw_rate:.2f} | {calls / max(events, 1) * 1000:.2f} "
            f"| {cpu / max(events, 1) * 1e6:.1f} | {rss:,.0f} "
            f"| {floor:.1f} | {events / floor / raw_rate:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=280_000)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="measure on this running devnet's first chain (rtrm.toml) instead of seeding one",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="rounds of perps trading after seeding (more events; anvil's memory grows by "
        "~2 GB per 30 s under this load, so keep it small on a 24 GB machine)",
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        if args.config is not None:
            measure(args.config, Path(home), rounds=args.rounds, postgres=not args.no_postgres)
            return
        started = time.perf_counter()
        options = DevnetOptions(
            chains=1, users=args.users, block_time_s=0, state_dir=Path(home), keep_states=4
        )
        state, nodes = up(options)
        print(f"seeded {args.users:,} users in {time.perf_counter() - started:.0f} s")
        try:
            config = Path(state.config_path)
            measure(config, Path(home), rounds=args.rounds, postgres=not args.no_postgres)
        finally:
            for node in nodes:
                node.stop()


if __name__ == "__main__":
    main()
