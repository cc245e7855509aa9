"""Errors raised by the ``chains`` package.

Every message names what is involved (chain id, URL, address, file) and says what to
do next; a URL is named with its credentials hidden (:mod:`chains.urls`). Callers catch
:class:`ChainError` to handle any of them; subclasses also inherit the builtin a caller
would naturally expect.

::

    ChainError
    ├── ConfigError (ValueError)            malformed or inconsistent rtrm.toml / env
    │   └── UnknownChainError (KeyError)    a chain id that is not configured
    ├── ToolchainError                      Node, npm or anvil missing or broken
    ├── DevnetError                         the local devnet cannot start / is not running
    │   └── PortInUseError                  a requested loopback port is taken
    ├── ArtifactError                       compiled contracts missing or stale
    └── RPCError                            a JSON-RPC call failed
        ├── TransientRPCError               worth retrying: timeouts, 429, 5xx, resets
        │   └── RPCConnectionError          the endpoint could not be reached at all
        ├── ExecutionRevertedError          a call or transaction reverted
        ├── ChainIdMismatchError            an endpoint answers another eth_chainId
        └── GenesisMismatchError            an endpoint serves another chain (block 0 differs)
"""

from __future__ import annotations

from typing import Any

from chains.urls import redact


class ChainError(Exception):
    """Root of every error raised by ``chains``."""


class ConfigError(ChainError, ValueError):
    """The configuration (rtrm.toml or an RTRM_* variable) is malformed."""


class UnknownChainError(ConfigError, KeyError):
    """A chain id that is not in the configuration."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ToolchainError(ChainError):
    """A required external tool (Node, npm, anvil, solc) is missing or broken."""


class DevnetError(ChainError):
    """The local devnet could not be started, reached or stopped."""


class PortInUseError(DevnetError):
    """A requested loopback port is already taken by another process."""


class ArtifactError(ChainError):
    """Compiled contract artifacts are missing, unreadable or out of date."""


class RPCError(ChainError):
    """A JSON-RPC request failed; ``code`` is the JSON-RPC error code when there is one.

    ``url`` is the endpoint as configured, credentials included: it is for matching, never
    for printing (use :func:`chains.urls.hide_credentials`). The message is fit to print:
    ``url``'s credentials are taken out of it (:func:`chains.urls.redact`), wherever the
    text quoting them came from. ``data`` is the error's ``data`` member when it is kept
    (e.g. the range a provider suggests with an ``eth_getLogs`` range-limit error).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        url: str | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(redact(message, url) if url else message)
        self.code = code
        self.url = url
        self.data = data


class TransientRPCError(RPCError):
    """A failure that may succeed when retried (timeout, rate limit, 5xx, reset)."""


class RPCConnectionError(TransientRPCError):
    """The endpoint could not be reached (refused, DNS, TLS, closed)."""


class ExecutionRevertedError(RPCError):
    """A call or transaction reverted; ``reason`` is the decoded revert string if any."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        code: int | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, code=code, url=url)
        self.reason = reason


class ChainIdMismatchError(RPCError):
    """An endpoint answered ``eth_chainId`` with another chain id than the configured one."""

    def __init__(self, message: str, *, expected: int, found: int, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.expected = expected
        self.found = found


class GenesisMismatchError(RPCError):
    """An endpoint's block 0 hash differs from the expected (or first seen) genesis hash.

    The endpoint serves another chain, or a restarted node that rebuilt its history (anvil
    keeps no state): data from it must not be mixed with data already indexed.
    """

    def __init__(self, message: str, *, expected: str, found: str, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.expected = expected
        self.found = found
