"""The committed contract artifacts are exactly what the pinned solc makes of the sources."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from chains.artifacts import BUILD_DIR, CONTRACTS_DIR, event_table, stale_sources


def test_manifest_matches_sources() -> None:
    assert stale_sources() == [], "run `make contracts` and commit contracts/build"


def test_recompiling_reproduces_the_committed_artifacts(tmp_path: Path) -> None:
    subprocess.run(
        ["node", str(CONTRACTS_DIR / "compile.mjs"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for fresh in sorted(tmp_path.glob("*.json")):
        committed = json.loads((BUILD_DIR / fresh.name).read_text())
        assert json.loads(fresh.read_text()) == committed, (
            f"{fresh.name} is stale: run `make contracts`"
        )


def test_event_topics_are_unique() -> None:
    names = {event.name for event in event_table().values()}
    assert {"Supply", "LiquidationCall", "PositionOpened", "ClaimPaid", "AnswerUpdated"} <= names
