"""``bench/indexer.py`` still runs end to end (a tiny world: the numbers mean nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parents[2]


def test_the_indexing_benchmark_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "indexer.py"), "--users", "300"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == ["| store", "| SQLite", "| PostgreSQL"]
    assert all(row.count("|") == 12 for row in rows)
    assert "raw ceiling:" in done.stdout
    assert "store writes alone:" in done.stdout
