"""The ``rtrm`` command line: global options, subcommand dispatch, errors to exit codes.

Subcommands live in ``rtrm.commands`` (one module each, listed in ``COMMANDS``).
The global options ``--config PATH`` and ``-v/--verbose`` are accepted before or after
the subcommand (``rtrm -v config show`` and ``rtrm config show -v`` are the same).

Exit codes, which scripts rely on:

- 0: success;
- 1: an unexpected error, i.e. a bug: one line on stderr, the traceback with ``-v``;
- 2: a usage error or an expected failure (bad config, unreachable chain, …): one
  ``error: …`` line on stderr saying what to do;
- 130: interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from aggregation.exceptions import AggregationError
from api.exceptions import ApiError
from chains.exceptions import ChainError
from indexer.exceptions import IndexerError
from insurance.exceptions import InsuranceError
from rtrm import __version__
from rtrm.commands import COMMANDS
from rtrm.logs import configure_logging

__all__ = ["EXPECTED_ERRORS", "build_parser", "main", "run"]

# The roots of every package's errors: failures with a message meant for the user.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    ChainError,
    IndexerError,
    AggregationError,
    InsuranceError,
    ApiError,
)


def _add_global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        default=default,
        help="rtrm.toml to use (default: $RTRM_CONFIG, ./rtrm.toml, ./.rtrm/rtrm.toml)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logging, and tracebacks for unexpected errors",
    )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommand parsers (at any depth) take the global options.

    Subcommand parsers default the options to SUPPRESS, so a value given before the
    subcommand is not overwritten by the subcommand's default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self, default=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rtrm",
        description="Real-time, cross-chain risk engine for crypto options and margin.",
        epilog="Start with `rtrm demo`; `rtrm COMMAND --help` describes each command.",
    )
    parser.set_defaults(config=None, verbose=False)
    parser.add_argument("--version", action="version", version=f"rtrm {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    for name in COMMANDS:
        importlib.import_module(f"rtrm.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rtrm`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse has printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    configure_logging(verbose=args.verbose)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc or type(exc).__name__}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
            print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            print(
                f"error: unexpected {type(exc).__name__}: {exc} "
                "(a bug in rtrm; rerun with -v for the traceback and report it)",
                file=sys.stderr,
            )
        return 1
    return code


def run() -> NoReturn:
    """The ``rtrm`` process (console script and ``python -m rtrm``): :func:`main`, then
    exit without tearing the interpreter down.

    ``rtrm index`` ends with a heap of a gigabyte and more (a chain's open versions, the
    ranges it parsed); freeing it object by object took 1.0-1.5 s after the work was
    done, which the kernel does at once. Everything that must outlive the process is
    finished when :func:`main` returns (stores disposed, child processes joined); the log
    handlers and standard streams are flushed here. Call :func:`main` to stay in-process.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (rtrm … | head)
            stream.flush()
    os._exit(code)
