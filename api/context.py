"""What the API handlers share: the store, the registry, the snapshot cache and settings.

:class:`ApiContext` is built once by the composition root (``rtrm serve``, a test, a
benchmark) and handed to :func:`api.app.create_app`; handlers read it from the
application and hold no state of their own, so API processes scale horizontally.

Settings (:class:`ApiSettings`) come from ``api.toml`` beside ``rtrm.toml`` (an ``[api]``
table: ``token``, ``rate_limit_per_s``, ``rate_limit_burst``, ``port``) overridden by the
environment: ``RTRM_API_TOKEN`` (the bearer token of mutating endpoints; without one
they answer 401 to everybody), ``RTRM_API_RATE_LIMIT`` (requests per second per client,
0 = off) and ``RTRM_API_BURST``. The token is never logged or echoed.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aggregation.loader import load_snapshot
from api.exceptions import ApiConfigError
from api.metrics import ApiMetrics
from api.snapshots import Loader, SnapshotCache
from chains.spec import Registry
from indexer.metrics import IndexerMetrics
from indexer.store import Store
from insurance.config import InsuranceConfig

__all__ = ["SIDECAR_FILE", "ApiContext", "ApiSettings", "load_api_settings"]

SIDECAR_FILE = "api.toml"
LOOPBACK = "127.0.0.1"
_KEYS = {"token", "rate_limit_per_s", "rate_limit_burst", "port"}


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the API listens and whom it lets in (loopback only)."""

    host: str = LOOPBACK
    port: int = 8080  # 0: any free port
    token: str | None = field(default=None, repr=False)
    rate_limit_per_s: float = 200.0  # per client; 0 turns the limit off
    rate_limit_burst: int = 400
    max_body_bytes: int = 64 * 1024
    stale_after_s: float = 120.0  # /healthz: a watermark older than this (block time) is stale
    poll_store_s: float = 0.5  # how often a cache without an indexer looks for new blocks
    memo_entries: int = 50_000  # answers remembered per snapshot (a risk report is ~4 kB)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:  # noqa: PLR2004
            raise ApiConfigError(f"api port must be 0-65535 (0: any free port), got {self.port}")
        if not (math.isfinite(self.rate_limit_per_s) and self.rate_limit_per_s >= 0):
            raise ApiConfigError(
                f"api rate_limit_per_s must be a number >= 0 (0 = off), got {self.rate_limit_per_s}"
            )
        if self.rate_limit_burst < 1:
            raise ApiConfigError(
                f"api rate_limit_burst must be at least 1, got {self.rate_limit_burst}"
            )
        if self.token is not None and len(self.token) < 16:  # noqa: PLR2004
            raise ApiConfigError(
                "the API token must be at least 16 characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )


def _number(table: Mapping[str, Any], key: str, where: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiConfigError(f"{where}: api.{key} must be a number, got {value!r}")
    return float(value)


def _env_number(environ: Mapping[str, str], name: str) -> float | None:
    text = environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise ApiConfigError(f"${name} must be a number, got {text!r}") from None


def load_api_settings(
    registry_source: Path | None, environ: Mapping[str, str] | None = None, **overrides: Any
) -> ApiSettings:
    """Settings from ``api.toml`` beside the registry file, then ``RTRM_API_*``, then
    ``overrides`` (command-line flags; ``None`` values are ignored)."""
    environ = os.environ if environ is None else environ
    settings = ApiSettings()
    sidecar = None if registry_source is None else registry_source.parent / SIDECAR_FILE
    if sidecar is not None and sidecar.is_file():
        try:
            document = tomllib.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ApiConfigError(f"{sidecar}: cannot read it ({exc}); fix or remove it") from None
        table = document.get("api", {})
        unknown = sorted(set(table) - _KEYS) if isinstance(table, dict) else ["(not a table)"]
        if unknown or set(document) - {"api"}:
            raise ApiConfigError(
                f"{sidecar}: unexpected key(s) {', '.join(unknown or sorted(document))}; "
                f"it holds one [api] table with {', '.join(sorted(_KEYS))}"
            )
        token = table.get("token")
        if token is not None and not isinstance(token, str):
            raise ApiConfigError(f"{sidecar}: api.token must be a string")
        rate = _number(table, "rate_limit_per_s", str(sidecar))
        burst = _number(table, "rate_limit_burst", str(sidecar))
        port = _number(table, "port", str(sidecar))
        settings = replace(
            settings,
            token=token,
            rate_limit_per_s=settings.rate_limit_per_s if rate is None else rate,
            rate_limit_burst=settings.rate_limit_burst if burst is None else int(burst),
            port=settings.port if port is None else int(port),
        )
    token = environ.get("RTRM_API_TOKEN") or settings.token
    rate = _env_number(environ, "RTRM_API_RATE_LIMIT")
    burst = _env_number(environ, "RTRM_API_BURST")
    settings = replace(
        settings,
        token=token,
        rate_limit_per_s=settings.rate_limit_per_s if rate is None else rate,
        rate_limit_burst=settings.rate_limit_burst if burst is None else int(burst),
    )
    given = {key: value for key, value in overrides.items() if value is not None}
    return replace(settings, **given) if given else settings


@dataclass(frozen=True, slots=True, eq=False)
class ApiContext:
    """Everything a handler needs; one per process (see the module docstring).

    ``indexer_metrics`` is the registry ``/metrics`` exports (the live indexers' when
    ``rtrm serve`` runs them; an empty one otherwise), with the API's own metrics added.
    ``live`` is True when indexers run in this process (the cache is told of new blocks);
    otherwise the cache polls the store's watermark.
    """

    store: Store
    registry: Registry
    insurance: InsuranceConfig
    settings: ApiSettings
    snapshots: SnapshotCache
    indexer_metrics: IndexerMetrics
    metrics: ApiMetrics
    live: bool = False

    @classmethod
    def build(
        cls,
        store: Store,
        registry: Registry,
        *,
        insurance: InsuranceConfig | None = None,
        settings: ApiSettings | None = None,
        indexer_metrics: IndexerMetrics | None = None,
        live: bool = False,
        loader: Loader = load_snapshot,
    ) -> ApiContext:
        """A context with a fresh snapshot cache and metrics on ``indexer_metrics``' registry."""
        settings = settings or ApiSettings()
        indexer_metrics = indexer_metrics or IndexerMetrics()
        metrics = ApiMetrics(indexer_metrics.registry)
        snapshots = SnapshotCache(
            store,
            registry,
            poll_s=None if live else settings.poll_store_s,
            loader=loader,
            metrics=metrics,
            memo_size=settings.memo_entries,
        )
        return cls(
            store=store,
            registry=registry,
            insurance=insurance or InsuranceConfig(),
            settings=settings,
            snapshots=snapshots,
            indexer_metrics=indexer_metrics,
            metrics=metrics,
            live=live,
        )
