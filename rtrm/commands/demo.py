"""``rtrm demo``: everything on a local devnet.

For now: a 3-chain devnet with a seeded world, its summary, and the nodes kept up until
Ctrl-C. Later stages (indexing, risk, the API and dashboard) join here as they land.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtrm.commands import Subparsers

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run everything on a local devnet (Ctrl-C stops it)"
    )
    parser.add_argument("--users", type=int, default=2_000, help="users to seed (default 2,000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtrm.commands.devnet import run_up

    up_args = argparse.Namespace(
        chains=3,
        users=args.users,
        seed=args.seed,
        block_time=2,
        port=None,
        detach=False,
        json=False,
        home=None,
    )
    return run_up(up_args)
