"""`rtrm demo` (what `make demo` runs), end to end on a small devnet: three real anvil nodes,
the service indexing them, the summary once every seeded block is indexed, the crash,
the insurance epoch paying its deficits, then Ctrl-C stopping the service and every node."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from chains.devnet import STATE_FILE, down

CHAINS = (1, 10, 42161)


class _Lines:
    """The demo's merged stdout and stderr, read by a thread so a full pipe never blocks it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines:
                    if found := re.search(pattern, line):
                        return found
                left = deadline - time.monotonic()
                assert left > 0, f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines)
                self._changed.wait(left)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"


def _run_the_demo(lines: _Lines, home: Path) -> list[int]:
    """Wait for each stage of the demo; the anvil nodes' pids."""
    url = lines.wait_for(r"dashboard (http://127\.0\.0\.1:\d+)/", 120)[1]
    state = json.loads((home / STATE_FILE).read_text())
    anvils = [node["pid"] for node in state["nodes"]]
    assert len(anvils) == len(CHAINS)

    # the summary waits for every chain's seeded blocks, so it counts every seeded user
    summary = lines.wait_for(r"indexed: ([\d,]+) users at watermark (.*)", 120)
    assert int(summary[1].replace(",", "")) > 0
    cuts = (cut.partition("@") for cut in summary[2].split(", "))
    watermark = {int(chain): int(block) for chain, _, block in cuts}
    seeded = {chain["chain_id"]: chain["blocks"] for chain in state["summary"]["chains"]}
    assert sorted(watermark) == sorted(seeded) == list(CHAINS)
    assert all(watermark[chain] >= seeded[chain] for chain in CHAINS)

    lines.wait_for(r"crash done \(", 120)
    paid = lines.wait_for(r"insurance epoch 1: (\d+) payouts, (\d+) paid", 120)
    assert int(paid[1]) > 0
    assert int(paid[2]) > 0

    with urllib.request.urlopen(f"{url}/v1/status", timeout=10) as answer:
        status = json.loads(answer.read())
    assert sorted(chain["chain_id"] for chain in status["chains"]) == list(CHAINS)
    assert all(chain["paused_reason"] is None for chain in status["chains"])
    return anvils


def test_demo_indexes_crashes_pays_and_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "RTRM_HOME": str(home), "COLUMNS": "200"}
    command = [sys.executable, "-m", "rtrm", "demo", "--users", "300", "--port", "0"]
    command += ["--crash-after", "1", "--crash-blocks", "2"]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        lines = _Lines(process)
        try:
            anvils = _run_the_demo(lines, home)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:  # a stage failed: stop it, then any node it left
                process.kill()
                process.wait()
                if (home / STATE_FILE).exists():
                    down(home)
        text = lines.text()
    assert "demo stopped: service and devnet are down" in text
    assert "Traceback" not in text
    assert not (home / STATE_FILE).exists()
    deadline = time.monotonic() + 10
    while any(map(_pid_alive, anvils)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_pid_alive, anvils)), "the demo left an anvil node running"
