"""``rtrm devnet up|status|down|crash|liquidate``: the local multi-chain devnet.

``up`` starts anvil nodes, deploys the protocols, seeds a deterministic world and writes
``.rtrm/rtrm.toml`` so every other command finds the chains without flags. Without
``--detach`` it stays in the foreground until Ctrl-C and then stops every node; with it,
the nodes keep running until ``rtrm devnet down``.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from rtrm.output import console, emit, make_table

if TYPE_CHECKING:
    from rich.console import RenderableType

    from chains.devnet import DevnetState
    from chains.keeper import LiquidationCounts
    from rtrm.commands import Subparsers

__all__ = ["register", "run_up", "summary_tables"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("devnet", help="run a local multi-chain devnet on anvil")
    parser.add_argument(
        "--home", type=Path, default=None, help="state directory (default $RTRM_HOME or ./.rtrm)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    up = actions.add_parser("up", help="start anvil nodes, deploy, seed and write the config")
    up.add_argument(
        "--chains", type=int, default=3, help="number of chains (1-8; default 3: ids 1, 10, 42161)"
    )
    up.add_argument("--users", type=int, default=200, help="users to seed (default 200)")
    up.add_argument(
        "--seed", type=int, default=1, help="random seed: the same seed gives the same world"
    )
    up.add_argument(
        "--block-time",
        type=int,
        default=2,
        help="seconds per block once live; 0 = one per transaction",
    )
    up.add_argument("--port", type=int, default=None, help="first RPC port (default: free ports)")
    up.add_argument(
        "--detach", action="store_true", help="return once seeded and leave the nodes running"
    )
    up.add_argument("--json", action="store_true", help="machine-readable summary")
    up.set_defaults(func=run_up)

    status = actions.add_parser("status", help="chains, RPC URLs, heads and contract addresses")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)

    down = actions.add_parser("down", help="stop every node the devnet started")
    down.set_defaults(func=run_down)

    crash = actions.add_parser(
        "crash", help="move an asset's oracle prices on every chain; keepers liquidate"
    )
    crash.add_argument(
        "--asset", required=True, help="asset to crash, e.g. ETH (moves wstETH and rvETH too)"
    )
    crash.add_argument("--move", type=float, required=True, help="fractional move, e.g. -0.35")
    crash.add_argument(
        "--blocks", type=int, default=3, help="blocks to spread the move over (default 3)"
    )
    crash.add_argument("--json", action="store_true", help="machine-readable output")
    crash.set_defaults(func=run_crash)

    liquidate = actions.add_parser(
        "liquidate", help="run the liquidator keepers once on every chain"
    )
    liquidate.add_argument("--json", action="store_true", help="machine-readable output")
    liquidate.set_defaults(func=run_liquidate)


def _home(args: argparse.Namespace) -> Path:
    from chains.devnet import state_dir_default

    return args.home if args.home is not None else state_dir_default()


def run_up(args: argparse.Namespace) -> int:
    from chains.devnet import DevnetOptions, up

    options = DevnetOptions(
        chains=args.chains,
        users=args.users,
        seed=args.seed,
        block_time_s=args.block_time,
        state_dir=_home(args),
        detach=args.detach,
        base_port=args.port,
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("chain {task.fields[chain]:>6}"),
        TextColumn("{task.description:<11}"),
        BarColumn(bar_width=None),
        TextColumn("{task.completed:>9,.0f} txs"),
        TimeElapsedColumn(),
        console=console(),
        transient=args.json,
    ) as progress:
        tasks: dict[int, Any] = {}
        lock = threading.Lock()

        def on_progress(chain_id: int, step: str, transactions: int) -> None:
            with lock:
                if chain_id not in tasks:
                    tasks[chain_id] = progress.add_task(step, chain=chain_id, total=None)
                progress.update(tasks[chain_id], description=step, completed=transactions)

        state, nodes = up(options, on_progress)
    emit(_state_json(state), as_json=args.json, table=lambda: summary_tables(state))
    if args.detach:
        return 0
    console().print("[bold]devnet is up[/]; press Ctrl-C to stop it", highlight=False)
    return _serve_until_interrupted(nodes, options.state_dir)


def _serve_until_interrupted(nodes: list[Any], state_dir: Path) -> int:
    from chains.devnet import down

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and all(node.is_running() for node in nodes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for node in nodes:
            node.stop()
        down(state_dir)
    console().print("devnet stopped")
    return 0


def _state_json(state: DevnetState) -> dict[str, Any]:
    return {
        "config_path": state.config_path,
        "chains": [
            {"chain_id": n.chain_id, "name": n.name, "rpc_url": n.rpc_url, "pid": n.pid}
            for n in state.nodes
        ],
        "contracts": state.contracts,
        "tokens": state.tokens,
        "summary": state.summary,
    }


def summary_tables(state: DevnetState) -> RenderableType:
    from rich.console import Group

    chains = make_table(
        "chain",
        "name",
        "rpc url",
        "blocks",
        "txs",
        "events",
        numeric=("chain", "blocks", "txs", "events"),
    )
    people = make_table(
        "chain",
        "users",
        "suppliers",
        "borrowers",
        "option buyers",
        "option writers",
        "perp traders",
        "underwriters",
        "vault",
        "bridged in",
        title="users and positions",
        numeric=(
            "chain",
            "users",
            "suppliers",
            "borrowers",
            "option buyers",
            "option writers",
            "perp traders",
            "underwriters",
            "vault",
            "bridged in",
        ),
    )
    urls = {n.chain_id: n.rpc_url for n in state.nodes}
    for row in state.summary["chains"]:
        cid = row["chain_id"]
        chains.add_row(
            str(cid),
            row["name"],
            urls[cid],
            f"{row['blocks']:,}",
            f"{row['transactions']:,}",
            f"{row['events']:,}",
        )
        people.add_row(
            str(cid),
            *(
                f"{row[k]:,}"
                for k in (
                    "users",
                    "suppliers",
                    "borrowers",
                    "option_buyers",
                    "option_writers",
                    "perp_traders",
                    "underwriters",
                    "vault_depositors",
                    "bridged_in",
                )
            ),
        )
    contracts = make_table("contract", *(str(n.chain_id) for n in state.nodes), title="contracts")
    names = sorted({name for per_chain in state.contracts.values() for name in per_chain})
    for name in names:
        contracts.add_row(
            name, *(state.contracts[str(n.chain_id)].get(name, "-") for n in state.nodes)
        )
    footer = f"seeded in {state.summary['seconds']} s; config written to {state.config_path}"
    return Group(chains, people, contracts, footer)


def run_status(args: argparse.Namespace) -> int:
    from chains.devnet import chain_status

    rows = chain_status(_home(args))

    def table() -> RenderableType:
        t = make_table(
            "chain", "name", "rpc url", "pid", "running", "head", numeric=("chain", "pid", "head")
        )
        for r in rows:
            t.add_row(
                str(r["chain_id"]),
                r["name"],
                r["rpc_url"],
                str(r["pid"]),
                "yes" if r["running"] else "NO",
                str(r["head_block"] if r["head_block"] is not None else "-"),
            )
        return t

    emit({"chains": rows}, as_json=args.json, table=table)
    return 0 if all(r["running"] for r in rows) else 1


def run_down(args: argparse.Namespace) -> int:
    from chains.devnet import down

    stopped = down(_home(args))
    print(f"stopped {stopped} anvil node{'s' if stopped != 1 else ''}")
    return 0


def _keeper_chains(args: argparse.Namespace) -> list[Any]:
    from chains.devnet import load_state
    from chains.keeper import ChainContracts

    state = load_state(_home(args))
    return [
        ChainContracts(
            n.chain_id, n.rpc_url, state.contracts[str(n.chain_id)], state.tokens[str(n.chain_id)]
        )
        for n in state.nodes
    ]


def _counts_output(results: dict[int, LiquidationCounts], as_json: bool) -> None:
    keys = (
        "lending",
        "options",
        "perps",
        "reverted",
        "lending_deficits",
        "options_bad_debts",
        "perps_bad_debts",
    )
    data = {
        "chains": [
            {"chain_id": cid, **{k: getattr(c, k) for k in keys}} for cid, c in results.items()
        ]
    }

    def table() -> RenderableType:
        t = make_table("chain", *keys, title="liquidations", numeric=("chain", *keys))
        for cid, c in results.items():
            t.add_row(str(cid), *(str(getattr(c, k)) for k in keys))
        return t

    emit(data, as_json=as_json, table=table)


def run_crash(args: argparse.Namespace) -> int:
    from chains.keeper import crash

    results = crash(
        _keeper_chains(args), asset=args.asset.upper(), move=args.move, blocks=args.blocks
    )
    _counts_output(results, args.json)
    return 0


def run_liquidate(args: argparse.Namespace) -> int:
    from chains.keeper import liquidate_all

    _counts_output(liquidate_all(_keeper_chains(args)), args.json)
    return 0
