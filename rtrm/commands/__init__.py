"""The ``rtrm`` subcommands: one module per command, each with a ``register`` function.

To add a command, write ``rtrm/commands/<name>.py``::

    def register(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("name", help="one line for `rtrm --help`")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(func=run)


    def run(args: argparse.Namespace) -> int: ...

and add ``"<name>"`` to :data:`COMMANDS`. Handlers return an exit code and raise the
package errors (``ConfigError``, ``IndexerError``, …) instead of printing them:
``rtrm.cli.main`` turns those into one ``error: …`` line and exit code 2. Every
command module is imported by ``rtrm --help``, so keep heavy imports (web3, numpy,
the store) inside the handlers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from chains.registry import load_registry
from chains.spec import Registry

__all__ = ["COMMANDS", "Handler", "Subparsers", "load_config"]

# Order is the order of `rtrm --help`.
COMMANDS: tuple[str, ...] = (
    "demo",
    "devnet",
    "index",
    "status",
    "risk",
    "exposure",
    "stress",
    "insurance",
    "serve",
    "config",
)

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def load_config(args: argparse.Namespace) -> Registry:
    """The registry named by ``--config`` (or discovered), with ``RTRM_*`` overrides."""
    path: Path | None = args.config
    return load_registry(path)
