"""``rtrm demo``: everything, live, on a local devnet (``make demo``).

1. a 3-chain devnet (chain ids 1, 10, 42161) with ``--users`` users (default 2,000),
   blocks every 2 s;
2. the service (:mod:`rtrm.service`): indexers backfill and follow every chain, the API
   and the dashboard listen on ``http://127.0.0.1:PORT`` (default 8080), the insurance
   jobs run often (capital sizing every 30 s, the trigger every 10 s, paying from the
   devnet's funds as their operator);
3. the URLs and a summary (users, exposure per asset, the insurance pool), then, after
   ``--crash-after`` seconds, a scripted crash: ETH (and wstETH, rvETH) falls 35 % over
   ``--crash-blocks`` blocks while the devnet's keepers liquidate; the dashboard shows
   health falling, liquidations, deficits appearing and the fund paying them.

Ctrl-C (or SIGTERM) stops the service (ranges in flight are finished) and every node.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chains.devnet import DevnetState
    from rtrm.commands import Subparsers
    from rtrm.service import Service

__all__ = ["register"]

CRASH_MOVE = -0.35


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run everything on a local devnet (Ctrl-C stops it)"
    )
    parser.add_argument("--users", type=int, default=2_000, help="users to seed (default 2,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--port", type=int, default=8080, help="API port on 127.0.0.1")
    parser.add_argument(
        "--crash-after",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="seconds between the service being ready and the ETH crash (default 20)",
    )
    parser.add_argument(
        "--crash-blocks", type=int, default=6, help="blocks the crash is spread over (default 6)"
    )
    parser.add_argument("--no-crash", action="store_true", help="do not crash ETH")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from api.context import load_api_settings
    from chains.deploy import DEPLOYER
    from chains.devnet import DevnetOptions, down, state_dir_default, up
    from chains.exceptions import ConfigError
    from chains.registry import load_registry
    from indexer.store import open_store
    from insurance.config import InsuranceConfig
    from rtrm.commands.devnet import summary_tables
    from rtrm.output import console
    from rtrm.service import Service, ServiceOptions

    if not 0 <= args.port < 65536:  # noqa: PLR2004
        raise ConfigError(f"--port must be 0-65535, got {args.port}")
    if args.crash_blocks < 1:
        raise ConfigError(f"--crash-blocks must be at least 1, got {args.crash_blocks}")
    home = state_dir_default()
    out = console()
    with out.status(f"starting 3 chains and seeding {args.users:,} users…"):
        state, nodes = up(
            DevnetOptions(
                chains=3, users=args.users, seed=args.seed, block_time_s=2, state_dir=home
            )
        )
    try:
        out.print(summary_tables(state))
        registry = load_registry(Path(state.config_path))
        settings = load_api_settings(registry.source, port=args.port)
        # the devnet's deployer owns its insurance funds (anvil impersonates it)
        insurance = InsuranceConfig(operator=DEPLOYER, pay_after_finality=False)
        options = ServiceOptions(full_recompute_s=10.0, sizing_s=30.0, trigger_s=10.0)
        store = open_store(registry.database_url)
        try:
            service = Service(
                store, registry, settings=settings, insurance=insurance, options=options
            )
            asyncio.run(_demo(service, state, args))
        finally:
            store.dispose()
    finally:
        for node in nodes:
            node.stop()
        down(home)
    out.print("demo stopped: service and devnet are down")
    return 0


async def _demo(service: Service, state: DevnetState, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ready = asyncio.Event()
    script = asyncio.create_task(_script(service, state, args, ready, stop))
    try:
        await service.run(stop, ready=lambda _: ready.set())
    finally:
        script.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _script(
    service: Service,
    state: DevnetState,
    args: argparse.Namespace,
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """URLs, then the first snapshot's summary, then the crash (module docstring)."""
    from chains.keeper import ChainContracts, crash
    from rtrm.output import console

    out = console()
    await ready.wait()
    url = service.url
    out.print(
        f"\n[bold]RTRM is live[/]: dashboard [link={url}/]{url}/[/link]\n"
        f"  API      {url}/v1/status · {url}/v1/assets/exposure · {url}/openapi.json\n"
        f"  metrics  {url}/metrics\n  Ctrl-C stops everything.\n",
        highlight=False,
    )
    seeded = {c["chain_id"]: c["blocks"] for c in state.summary["chains"]}
    entry = await _backfilled(service, seeded, stop)
    if entry is None:
        return
    await service.capital_sizing()
    out.print(_summary(service, entry.snapshot), highlight=False)
    if args.no_crash:
        return
    out.print(f"ETH crashes {CRASH_MOVE:.0%} in {args.crash_after:.0f} s …", highlight=False)
    try:
        await asyncio.wait_for(stop.wait(), args.crash_after)
        return  # stopped before the crash
    except TimeoutError:
        pass
    chains = [
        ChainContracts(
            n.chain_id, n.rpc_url, state.contracts[str(n.chain_id)], state.tokens[str(n.chain_id)]
        )
        for n in state.nodes
    ]
    out.print(
        f"[bold red]crash[/]: ETH {CRASH_MOVE:.0%} over {args.crash_blocks} blocks on every "
        "chain; keepers liquidate after each block",
        highlight=False,
    )
    counts = await asyncio.to_thread(
        crash, chains, asset="ETH", move=CRASH_MOVE, blocks=args.crash_blocks
    )
    done = ", ".join(f"chain {c}: {_counted(n)}" for c, n in sorted(counts.items()))
    out.print(
        f"crash done ({done}); the insurance trigger pays the deficits within ~10 s",
        highlight=False,
    )


async def _backfilled(service: Service, seeded: dict[int, int], stop: asyncio.Event) -> Any:
    """The first snapshot whose watermark covers every chain's seeded blocks (so the
    summary counts every seeded user), or None when stopped first."""
    while not stop.is_set():
        try:
            entry = await service.context.snapshots.entry()
        except Exception:  # nothing indexed yet: the indexers are backfilling
            entry = None
        if entry is not None:
            watermark = entry.snapshot.watermark
            if all(watermark.get(chain, -1) >= block for chain, block in seeded.items()):
                return entry
        await asyncio.sleep(0.5)
    return None


def _counted(counts: Any) -> str:
    from dataclasses import asdict

    numbers = {k: v for k, v in asdict(counts).items() if isinstance(v, int) and v}
    return ", ".join(f"{v} {k}" for k, v in numbers.items()) or "no liquidations"


def _summary(service: Service, snapshot: Any) -> str:
    from aggregation.systemic import exposure_report

    report = exposure_report(snapshot, top_n=1)
    lines = [
        f"indexed: {snapshot.inputs.n_users:,} users at watermark "
        + ", ".join(f"{c}@{b}" for c, b in sorted(snapshot.watermark.items()))
    ]
    for a in report.assets:
        lines.append(
            f"  {a.asset:<5} price {a.price_usd:>12,.2f}  collateral "
            f"{a.total.collateral_usd:>16,.0f}  debt {a.total.debt_usd:>14,.0f} USD"
        )
    return "\n".join(lines)
