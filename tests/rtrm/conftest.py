"""Fixtures of the command-line tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from rtrm.logs import PROJECT_PACKAGES


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() configures logging globally; put it back so other tests see the default."""
    loggers = [logging.getLogger(), *map(logging.getLogger, PROJECT_PACKAGES)]
    saved = [(logger, logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, level, handlers in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
