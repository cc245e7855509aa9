"""anvil nodes as managed processes: start, readiness, stop, orphans, ports, toolchain."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chains import anvil as anvil_module
from chains.anvil import (
    LOOPBACK,
    AnvilConfig,
    AnvilNode,
    build_args,
    find_anvil,
    free_port,
    port_is_free,
    stop_pid,
)
from chains.exceptions import DevnetError, PortInUseError, ToolchainError
from chains.rpc import RpcClient, hex_to_int

REPO_ROOT = Path(__file__).resolve().parents[2]
AnvilFactory = Callable[..., AnvilNode]


def _alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie may wait for a non-reaping init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _fake_anvil(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "anvil"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


# ---------------------------------------------------------------- pure parts


def test_build_args_pins_loopback_and_deterministic_defaults() -> None:
    args = build_args(AnvilConfig(chain_id=42161), 9545)
    joined = " ".join(args)
    assert "--host 127.0.0.1 --port 9545 --chain-id 42161" in joined
    assert "--order fifo" in joined
    assert "--base-fee 0 --gas-price 0" in joined
    assert "--auto-impersonate" in args
    assert "--silent" in args
    assert "--no-mining" not in args
    assert "--block-time" not in args


def test_build_args_optional_flags() -> None:
    config = AnvilConfig(
        chain_id=10,
        block_time_s=0.5,
        genesis_timestamp=1_700_000_000,
        gas_limit=60_000_000,
        accounts=3,
        auto_impersonate=False,
        base_fee_zero=False,
        silent=False,
        extra_args=("--hardfork", "cancun"),
    )
    args = build_args(config, 1234)
    joined = " ".join(args)
    assert "--block-time 0.5" in joined
    assert "--timestamp 1700000000" in joined
    assert "--gas-limit 60000000" in joined
    assert "--accounts 3" in joined
    assert args[-2:] == ["--hardfork", "cancun"]
    for flag in ("--auto-impersonate", "--base-fee", "--silent"):
        assert flag not in args


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chain_id": 0},
        {"chain_id": 1, "port": 70000},
        {"chain_id": 1, "block_time_s": 0},
        {"chain_id": 1, "no_mining": True, "block_time_s": 1.0},
    ],
)
def test_config_rejects_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message varies by field
        AnvilConfig(**kwargs)  # type: ignore[arg-type]


def test_config_host_is_always_loopback() -> None:
    assert AnvilConfig(chain_id=1).host == LOOPBACK == "127.0.0.1"


def test_free_port_and_port_is_free() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as listener:
        listener.bind((LOOPBACK, port))
        listener.listen()
        assert not port_is_free(port)


# ---------------------------------------------------------------- toolchain


def test_find_anvil_prefers_the_platform_binary_over_the_node_wrapper() -> None:
    platform_binary = REPO_ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
    if not platform_binary.is_file():
        pytest.skip("this check is written for linux/amd64")
    assert find_anvil() == platform_binary


def test_rtrm_anvil_missing_file_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "anvil"
    monkeypatch.setenv("RTRM_ANVIL", str(missing))
    with pytest.raises(ToolchainError) as info:
        find_anvil()
    message = str(info.value)
    assert str(missing) in message
    assert "npm ci" in message
    assert "make demo" in message
    assert "Node 20+" in message


def test_anvil_not_found_anywhere_lists_what_was_looked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError) as info:
        find_anvil(tmp_path)
    message = str(info.value)
    assert "node_modules" in message
    assert "on PATH" in message
    assert f"npm ci` in {tmp_path}" in message
    assert "node not found" in message


def test_binary_failing_version_is_a_toolchain_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = _fake_anvil(tmp_path, 'echo "broken install" >&2\nexit 3\n')
    monkeypatch.setenv("RTRM_ANVIL", str(script))
    with pytest.raises(ToolchainError, match="broken install"):
        find_anvil()


# ---------------------------------------------------------------- lifecycle


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_start_honours_chain_id_and_stop_leaves_no_process(anvil_factory: AnvilFactory) -> None:
    node = anvil_factory(chain_id=4242)
    assert node.url == f"http://127.0.0.1:{node.port}"
    assert node.chain_id == 4242
    assert node.is_running()
    with RpcClient(node.url) as client:
        assert hex_to_int(client.call("eth_chainId")) == 4242
    pid = node.pid
    node.stop()
    assert not node.is_running()
    assert not Path(f"/proc/{pid}").exists()
    node.stop()  # idempotent
    assert port_is_free(node.port)


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_context_manager_stops_the_node() -> None:
    with AnvilNode.start(AnvilConfig(chain_id=5)) as node:
        pid = node.pid
        assert _alive(pid)
    assert not Path(f"/proc/{pid}").exists()


_PARENT_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from chains.anvil import AnvilConfig, AnvilNode
node = AnvilNode.start(AnvilConfig(chain_id=99), die_with_parent={die!r})
print(node.pid, node.port, flush=True)
time.sleep(120)
"""


def _parent_with_node(die_with_parent: bool) -> tuple[subprocess.Popen[str], int, int]:
    code = _PARENT_SCRIPT.format(root=str(REPO_ROOT), die=die_with_parent)
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line, "the parent process failed to start its node"
    pid, port = (int(v) for v in line.split())
    return parent, pid, port


def _reap(parent: subprocess.Popen[str]) -> None:
    parent.kill()
    parent.wait(timeout=10)
    if parent.stdout is not None:
        parent.stdout.close()


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_sigkill_of_the_parent_leaves_no_orphan_node() -> None:
    parent, pid, _ = _parent_with_node(die_with_parent=True)
    try:
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_until(lambda: not _alive(pid)), f"anvil pid {pid} outlived its parent"
    finally:
        _reap(parent)
        stop_pid(pid)


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_detached_node_outlives_parent_and_stop_pid_stops_it() -> None:
    parent, pid, port = _parent_with_node(die_with_parent=False)
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        time.sleep(0.3)
        assert _alive(pid)
        with RpcClient(f"http://127.0.0.1:{port}", timeout_s=5) as client:
            assert hex_to_int(client.call("eth_chainId")) == 99
        assert stop_pid(pid, expect_port=port + 1) is False  # wrong port: refuse
        assert _alive(pid)
        assert stop_pid(pid, expect_port=port) is True
        assert not _alive(pid)
        assert stop_pid(pid, expect_port=port) is False  # already gone
    finally:
        _reap(parent)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_stop_pid_refuses_a_process_that_is_not_anvil() -> None:
    assert stop_pid(os.getpid()) is False
    assert stop_pid(os.getppid()) is False


def test_stop_pid_of_a_missing_process_is_false() -> None:
    with subprocess.Popen(["true"]) as proc:
        proc.wait()
    assert stop_pid(proc.pid) is False
    assert stop_pid(-1) is False


# ---------------------------------------------------------------- failures


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_port_in_use_is_refused_before_starting(anvil_factory: AnvilFactory) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(PortInUseError) as info:
            anvil_factory(port=port)
    assert str(info.value) == (
        f"port {port} on 127.0.0.1 is in use by another process; "
        "choose another --port or stop that process"
    )


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_automatic_port_taken_meanwhile_is_retried(
    anvil_factory: AnvilFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, taken, free_port()])
        monkeypatch.setattr(anvil_module, "free_port", lambda: next(ports))
        node = anvil_factory()
    assert node.port != taken
    assert node.is_running()


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_node_exiting_at_startup_reports_its_log(anvil_factory: AnvilFactory) -> None:
    with pytest.raises(DevnetError) as info:
        anvil_factory(chain_id=7, extra_args=("--hardfork", "no-such-fork"))
    message = str(info.value)
    assert "exited with code" in message
    assert "no-such-fork" in message  # anvil's own complaint, from the log tail


@pytest.mark.timeout(60)
def test_startup_timeout_kills_the_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = _fake_anvil(
        tmp_path,
        f"""\
        if [ "$1" = "--version" ]; then echo "anvil Version: fake"; exit 0; fi
        echo $$ > {pid_file}
        exec sleep 60
        """,
    )
    monkeypatch.setenv("RTRM_ANVIL", str(script))
    with pytest.raises(DevnetError, match="did not answer"):
        AnvilNode.start(AnvilConfig(chain_id=3), startup_timeout_s=0.5)
    pid = int(pid_file.read_text())
    assert not _alive(pid)


# ---------------------------------------------------------------- mining modes


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_no_mining_mines_only_on_evm_mine(anvil_factory: AnvilFactory) -> None:
    node = anvil_factory(no_mining=True)
    with RpcClient(node.url) as client:
        sender = "0x00000000000000000000000000000000000000aa"
        tx = client.call("eth_sendTransaction", [{"from": sender, "to": sender, "gasPrice": "0x0"}])
        time.sleep(0.2)
        assert client.call("eth_blockNumber") == "0x0"
        assert client.call("eth_getTransactionReceipt", [tx]) is None
        client.call("evm_mine")
        assert client.call("eth_blockNumber") == "0x1"
        assert client.call("eth_getTransactionReceipt", [tx])["status"] == "0x1"


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_interval_mining_produces_blocks(anvil_factory: AnvilFactory) -> None:
    node = anvil_factory(block_time_s=0.5)
    with RpcClient(node.url) as client:
        assert _wait_until(lambda: hex_to_int(client.call("eth_blockNumber")) >= 2, 5.0)


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_impersonated_account_without_ether_sends_zero_gas_price_tx(
    anvil_rpc: RpcClient,
) -> None:
    poor = "0x000000000000000000000000000000000000dEaD"
    assert anvil_rpc.call("eth_getBalance", [poor, "latest"]) == "0x0"
    tx = anvil_rpc.call("eth_sendTransaction", [{"from": poor, "to": poor, "gasPrice": "0x0"}])
    # anvil 1.7.1 answers eth_sendTransaction before the automined block exists
    assert _wait_until(lambda: anvil_rpc.call("eth_getTransactionReceipt", [tx]) is not None)
    assert anvil_rpc.call("eth_getTransactionReceipt", [tx])["status"] == "0x1"


@pytest.mark.chain
@pytest.mark.timeout(60)
def test_genesis_timestamp_is_honoured(anvil_factory: AnvilFactory) -> None:
    node = anvil_factory(genesis_timestamp=1_700_000_000)
    with RpcClient(node.url) as client:
        genesis = client.call("eth_getBlockByNumber", ["0x0", False])
    assert hex_to_int(genesis["timestamp"]) == 1_700_000_000
