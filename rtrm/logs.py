"""Logging set-up for the command line: the one place where handlers are configured.

Library code only calls ``logging.getLogger(__name__)``. Records go to stderr through
rich, so stdout stays clean for tables and ``--json``. RTRM's own packages log INFO by
default (one line per indexed batch, per payout, …) and DEBUG with ``-v``; third-party
libraries log WARNING and above unless ``-v``.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["PROJECT_PACKAGES", "configure_logging"]

PROJECT_PACKAGES = ("chains", "indexer", "aggregation", "insurance", "api", "rtrm")


class _RtrmHandler(RichHandler):
    """Marks the handler this module installed, so a second call replaces it."""


def configure_logging(verbose: bool = False) -> None:
    """Send log records to stderr; idempotent (calling it again replaces the handler)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _RtrmHandler):
            root.removeHandler(handler)
    root.addHandler(
        _RtrmHandler(
            console=Console(stderr=True),
            show_path=verbose,
            rich_tracebacks=True,
            log_time_format="[%X]",
        )
    )
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for package in PROJECT_PACKAGES:
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)
