"""The dashboard in headless Chromium (Debian's ``chromium``; skipped where it is missing).

The page is loaded with a user linked (``/#address=…``), given a few seconds of virtual
time to poll the API, and its DOM is read back: the chains table, the liquidation ladder
(a uPlot canvas), the contagion graph (SVG nodes), the insurance payouts and the user's
unified risk have rendered from the live API, and no error is shown.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

pytestmark = pytest.mark.chain

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _section(dom: str, element_id: str) -> str:
    start = dom.index(f'id="{element_id}"')
    return dom[start : dom.index("</section>", start)]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_dashboard_renders_every_panel(api: Any, tmp_path: Any) -> None:
    assert CHROMIUM is not None
    assert api.get("/").headers["Content-Type"].startswith("text/html")
    assert api.get("/vendor/uplot/uPlot.iife.min.js").status_code == 200
    exposure = api.get("/v1/assets/exposure").json()
    user = exposure["assets"][0]["top_holders"][0]["address"]
    result = subprocess.run(
        [
            CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000",
            "--virtual-time-budget=8000", "--dump-dom", f"{api.base}/#address={user}",
        ],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    dom = result.stdout
    chains = _section(dom, "chains-card")
    assert all(f"<td>{c}</td>" in chains for c in (1, 10))
    assert "<canvas" in _section(dom, "exposure-card")  # the uPlot ladder
    graph = _section(dom, "contagion-card")
    assert len(re.findall(r"<circle", graph)) >= 2
    assert "black-thursday-2020" in graph
    assert "confirmed" in _section(dom, "insurance-card") or "approval" in dom
    person = _section(dom, "user-card")
    assert 'id="user" hidden' not in person
    assert "EQUITY" in person.upper()
    assert "chain 1" in person or "lending@" in person
    assert 'id="user-error" class="error" hidden' in person
