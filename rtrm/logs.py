"""Logging set-up for the command line: the one place where handlers are configured.

Library code only calls ``logging.getLogger(__name__)``. Records go to stderr, so stdout
stays clean for tables and ``--json``: through rich on a terminal, as plain timestamped
lines otherwise (a file, a pipe, a service manager's collector; rich's layout costs a few
milliseconds a line, and a backfill logs hundreds). RTRM's own packages log INFO by
default (one line per indexed batch, per payout, …) and DEBUG with ``-v``; third-party
libraries log WARNING and above unless ``-v``.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["PROJECT_PACKAGES", "configure_logging"]

PROJECT_PACKAGES = ("chains", "indexer", "aggregation", "insurance", "api", "rtrm")


class _RtrmHandler(logging.Handler):
    """Marks the handler this module installed, so a second call replaces it."""


class _RichHandler(RichHandler, _RtrmHandler):
    pass


class _PlainHandler(logging.StreamHandler, _RtrmHandler):  # type: ignore[type-arg]
    pass


def configure_logging(verbose: bool = False) -> None:
    """Send log records to stderr; idempotent (calling it again replaces the handler)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _RtrmHandler):
            root.removeHandler(old)
    console = Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = _RichHandler(
            console=console, show_path=verbose, rich_tracebacks=True, log_time_format="[%X]"
        )
    else:
        handler = _PlainHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for package in PROJECT_PACKAGES:
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)
