"""Local anvil nodes as managed child processes.

An :class:`AnvilNode` is one ``anvil`` process listening on a loopback port, started
from an :class:`AnvilConfig` and stopped by :meth:`AnvilNode.stop` (or ``with``).

Invariants:

- Nodes listen on 127.0.0.1 only, never on a public interface.
- ``AnvilNode.start`` returns only once the node answers ``eth_chainId`` with the
  configured chain id; on any failure the process is killed and reaped before the error
  is raised, so there is never a half-started node.
- Each node runs in its own session, so a terminal Ctrl-C reaches our Python process
  (which then stops its nodes) rather than the node directly. With ``die_with_parent``
  the kernel kills the node when the thread that started it dies (Linux
  ``PR_SET_PDEATHSIG``), so even ``kill -9`` of Python leaves no orphan. Start nodes from
  the main thread, or from a thread that lives as long as the nodes should.
- :func:`stop_pid` signals a pid only after ``/proc/<pid>/cmdline`` shows it is anvil
  (on the expected port), so a stale pid file never kills an unrelated process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from chains.exceptions import DevnetError, PortInUseError, RPCError, ToolchainError
from chains.lifetime import pdeathsig_hook
from chains.rpc import RpcClient, hex_to_int

__all__ = [
    "LOOPBACK",
    "AnvilConfig",
    "AnvilNode",
    "build_args",
    "find_anvil",
    "free_port",
    "port_is_free",
    "stop_pid",
]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
_PLATFORMS = {"Linux": "linux", "Darwin": "darwin"}
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_LOG_TAIL_LINES = 15
_MAX_PORT = 65535
_FREE_PORT_ATTEMPTS = 3  # a port chosen by free_port() can be taken before anvil binds it


# ---------------------------------------------------------------- toolchain


def find_anvil(project_root: Path | None = None) -> Path:
    """The anvil binary to run: ``$RTRM_ANVIL``, then ``node_modules``, then ``PATH``.

    Raises ``ToolchainError`` saying what was looked for and how to install it, or if
    the binary found does not answer ``--version``.
    """
    root = project_root or REPO_ROOT
    override = os.environ.get("RTRM_ANVIL")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ToolchainError(
                f"RTRM_ANVIL={override} does not exist; unset RTRM_ANVIL or point it to an "
                f"anvil binary. {_install_hint(root)}"
            )
        return _checked(path)
    candidates = _node_modules_candidates(root)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return _checked(path)
    on_path = shutil.which("anvil")
    if on_path:
        return _checked(Path(on_path))
    looked = ", ".join(str(p) for p in candidates)
    raise ToolchainError(f"anvil not found (looked in {looked} and on PATH). {_install_hint(root)}")


def _node_modules_candidates(root: Path) -> list[Path]:
    system, machine = _PLATFORMS.get(platform.system()), _ARCHES.get(platform.machine())
    candidates = []
    if system and machine:
        package = f"anvil-{system}-{machine}"
        candidates.append(root / "node_modules" / "@foundry-rs" / package / "bin" / "anvil")
    candidates.append(root / "node_modules" / ".bin" / "anvil")
    return candidates


def _install_hint(root: Path) -> str:
    node = shutil.which("node")
    version = "node not found"
    if node:
        try:
            result = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
            version = f"`node --version` says {result.stdout.strip() or result.stderr.strip()}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            version = f"`node --version` failed: {exc}"
    return f"Fix: run `make demo` or `npm ci` in {root} (needs Node 20+; {version})."


def _checked(path: Path) -> Path:
    stat = path.stat()
    _version_of(str(path), stat.st_mtime_ns)
    return path


@lru_cache(maxsize=16)
def _version_of(path: str, mtime_ns: int) -> str:
    """``anvil --version``, cached per binary and modification time."""
    try:
        result = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"{path} --version failed: {exc}; reinstall with `npm ci`") from exc
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-500:]
        raise ToolchainError(
            f"{path} --version exited with {result.returncode}: {output}; reinstall with `npm ci`"
        )
    return result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""


# ---------------------------------------------------------------- ports


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a listener could bind ``host:port`` now (as anvil does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# ---------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class AnvilConfig:
    """How to run one node. ``port=None`` picks a free port; the host is always loopback."""

    chain_id: int
    port: int | None = None
    block_time_s: float | None = None  # interval mining; None = mine on every transaction
    no_mining: bool = False  # mine only on evm_mine
    genesis_timestamp: int | None = None
    gas_limit: int | None = None
    accounts: int = 10
    auto_impersonate: bool = True
    base_fee_zero: bool = True  # lets impersonated accounts without ether send gasPrice 0
    order: str = "fifo"  # deterministic transaction ordering in the mempool
    silent: bool = True
    extra_args: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return LOOPBACK

    def __post_init__(self) -> None:
        if self.chain_id <= 0:
            raise ValueError(f"chain_id must be positive, got {self.chain_id}")
        if self.port is not None and not 0 < self.port <= _MAX_PORT:
            raise ValueError(f"port must be in 1..{_MAX_PORT}, got {self.port}")
        if self.block_time_s is not None and self.block_time_s <= 0:
            raise ValueError(f"block_time_s must be positive, got {self.block_time_s}")
        if self.no_mining and self.block_time_s is not None:
            raise ValueError("no_mining and block_time_s are mutually exclusive")
        if self.accounts < 0:
            raise ValueError(f"accounts must be >= 0, got {self.accounts}")


def build_args(config: AnvilConfig, port: int) -> list[str]:
    """anvil's command-line arguments (without the binary) for ``config`` on ``port``."""
    args = ["--host", LOOPBACK, "--port", str(port), "--chain-id", str(config.chain_id)]
    args += ["--accounts", str(config.accounts), "--order", config.order]
    if config.block_time_s is not None:
        args += ["--block-time", f"{config.block_time_s:g}"]
    if config.no_mining:
        args.append("--no-mining")
    if config.genesis_timestamp is not None:
        args += ["--timestamp", str(config.genesis_timestamp)]
    if config.gas_limit is not None:
        args += ["--gas-limit", str(config.gas_limit)]
    if config.auto_impersonate:
        args.append("--auto-impersonate")
    if config.base_fee_zero:
        args += ["--base-fee", "0", "--gas-price", "0"]
    if config.silent:
        args.append("--silent")
    return args + list(config.extra_args)


# ---------------------------------------------------------------- node


class AnvilNode:
    """A running anvil process; create with :meth:`start`."""

    def __init__(
        self, process: subprocess.Popen[bytes], config: AnvilConfig, port: int, log: Path | None
    ) -> None:
        self._process = process
        self._config = config
        self._port = port
        self._log_path = log
        self._stopped = False

    @classmethod
    def start(
        cls,
        config: AnvilConfig,
        *,
        log_path: Path | None = None,
        die_with_parent: bool = True,
        startup_timeout_s: float = 15,
    ) -> AnvilNode:
        """Start a node and wait until it serves ``eth_chainId``; see the module invariants."""
        binary = find_anvil()

        def launch(port: int) -> AnvilNode:
            if not port_is_free(port):
                taken = PortInUseError if config.port is not None else _PortRaceError
                raise taken(_port_in_use(port))
            process = _spawn(binary, build_args(config, port), log_path, die_with_parent)
            return cls(process, config, port, log_path)._ready_or_stopped(startup_timeout_s)

        if config.port is not None:
            return launch(config.port)
        for _ in range(_FREE_PORT_ATTEMPTS - 1):
            with contextlib.suppress(_PortRaceError):  # our free port was taken meanwhile
                return launch(free_port())
        return launch(free_port())

    def _ready_or_stopped(self, startup_timeout_s: float) -> Self:
        try:
            self._wait_ready(startup_timeout_s)
        except BaseException:
            self.stop()  # never leave a half-started node behind
            raise
        logger.info("anvil chain %d listening on %s (pid %d)", self.chain_id, self.url, self.pid)
        return self

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def chain_id(self) -> int:
        return self._config.chain_id

    @property
    def config(self) -> AnvilConfig:
        return self._config

    def is_running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout_s: float = 5) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; always reaps. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._process.poll() is None:
            _signal_group(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("anvil pid %d ignored SIGTERM; killing it", self._process.pid)
                _signal_group(self._process.pid, signal.SIGKILL)
                self._process.wait()
            # Reaped; kill anything left in its group (the node wrapper's child, if that
            # wrapper was used). The group id cannot be reused while members remain.
            _signal_group(self._process.pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"AnvilNode(chain_id={self.chain_id}, url={self.url!r}, pid={self.pid}, {state})"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with RpcClient(self.url, timeout_s=1.0) as client:
            while True:
                if self._process.poll() is not None:
                    raise self._exit_error()
                answered = _try_chain_id(client)
                if answered is not None:
                    self._check_answer(answered)
                    return
                if time.monotonic() >= deadline:
                    raise DevnetError(
                        f"anvil for chain {self.chain_id} did not answer on {self.url} within "
                        f"{timeout_s:g}s; it was killed. {self._log_hint()}"
                    )
                time.sleep(0.02)

    def _check_answer(self, answered: int) -> None:
        # Something answered: make sure it is our process and not a stranger on the port.
        time.sleep(0.01)
        if self._process.poll() is not None:
            raise self._exit_error()
        if answered != self.chain_id:
            raise DevnetError(
                f"{self.url} answered chain id {answered}, expected {self.chain_id}; "
                "another node is probably using this port"
            )

    def _exit_error(self) -> DevnetError:
        tail = _log_tail(self._log_path)
        code = self._process.returncode
        if "Address already in use" in tail:
            error = _PortRaceError if self._config.port is None else PortInUseError
            return error(f"{_port_in_use(self._port)}. anvil said: {tail}")
        return DevnetError(
            f"anvil for chain {self.chain_id} exited with code {code} before it was ready. "
            + (f"Last log lines:\n{tail}\n" if tail else self._log_hint())
            + "Check the flags in the devnet config, or run the same command by hand."
        )

    def _log_hint(self) -> str:
        if self._log_path is None:
            return "Pass log_path to see anvil's output. "
        return f"See its log at {self._log_path}. "


class _PortRaceError(PortInUseError):
    """The free port we picked was taken before anvil bound it (start() retries)."""


def _port_in_use(port: int) -> str:
    return (
        f"port {port} on {LOOPBACK} is in use by another process; "
        "choose another --port or stop that process"
    )


def _try_chain_id(client: RpcClient) -> int | None:
    try:
        return hex_to_int(client.call("eth_chainId"))
    except (RPCError, ValueError):
        client.close()
        return None


def _spawn(
    binary: Path, args: list[str], log_path: Path | None, die_with_parent: bool
) -> subprocess.Popen[bytes]:
    log: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("wb")
    try:
        return subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig_hook() if die_with_parent else None,  # noqa: PLW1509
            close_fds=True,
        )
    except OSError as exc:
        raise ToolchainError(f"cannot run {binary}: {exc}; reinstall with `npm ci`") from exc
    finally:
        if not isinstance(log, int):
            log.close()  # the child holds its own descriptor


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the node's process group (its own session); ignore if already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _log_tail(log_path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    with log_path.open("rb") as handle:
        tail = deque(handle, maxlen=lines)
    return b"".join(tail).decode("utf-8", "replace").strip()


# ---------------------------------------------------------------- stop by pid


def stop_pid(pid: int, *, expect_port: int | None = None, timeout_s: float = 5) -> bool:
    """Stop the anvil process ``pid`` started by another process (``rtrm devnet down``).

    Returns ``False`` without signalling anything if ``pid`` is not running, is not an
    anvil process, or (with ``expect_port``) listens on another port; ``True`` once the
    process has exited.
    """
    cmdline = _cmdline(pid)
    if cmdline is None:  # already gone: the usual case after the node's owner stopped it
        logger.debug("pid %d is not running; nothing to stop", pid)
        return False
    if not _is_anvil(cmdline):
        logger.info("pid %d is not an anvil process (its pid was reused); not stopping it", pid)
        return False
    if expect_port is not None and _port_arg(cmdline) != expect_port:
        logger.warning("pid %d is anvil but not on port %d; not stopping it", pid, expect_port)
        return False
    _signal_pid(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        logger.warning("anvil pid %d ignored SIGTERM for %gs; killing it", pid, timeout_s)
        _signal_pid(pid, signal.SIGKILL)
        _wait_gone(pid, timeout_s)
    return True


def _cmdline(pid: int) -> list[str] | None:
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw or _is_zombie(pid):
        return None
    return raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")


def _is_anvil(cmdline: list[str]) -> bool:
    """The binary itself, or the node wrapper running ``node_modules/.bin/anvil``."""
    return any(Path(arg).name == "anvil" for arg in cmdline[:2])


def _port_arg(cmdline: list[str]) -> int | None:
    for i, arg in enumerate(cmdline):
        if arg in ("--port", "-p") and i + 1 < len(cmdline):
            value = cmdline[i + 1]
        elif arg.startswith("--port="):
            value = arg.partition("=")[2]
        else:
            continue
        return int(value) if value.isdigit() else None
    return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
