"""Log records on stderr: rich on a terminal, plain timestamped lines anywhere else."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from rtrm.logs import configure_logging


@pytest.fixture
def configured() -> Iterator[None]:
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__module__ == "rtrm.logs":
            root.removeHandler(handler)


@pytest.mark.usefixtures("configured")
def test_plain_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    configure_logging()  # idempotent: one handler, one line per record
    logging.getLogger("indexer.pipeline").info("chain %s: blocks %s..%s", 1, 5, 8)
    logging.getLogger("urllib3").info("third-party INFO stays quiet")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO indexer\.pipeline: "
        r"chain 1: blocks 5\.\.8",
        lines[0],
    )
