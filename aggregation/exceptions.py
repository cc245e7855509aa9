"""Errors raised by the ``aggregation`` package.

Messages name the watermark, asset or address involved and what to do next::

    AggregationError    root: a snapshot that cannot be loaded or priced
    ├── InvalidSurfaceError (also ValueError)  SVI parameters outside their domain
    ├── ArbitrageError (also ValueError)       a vol surface with butterfly/calendar arbitrage
    ├── InvalidRiskInputsError (also ValueError)  position arrays that do not fit together
    └── UnknownUserError (also KeyError)       an address or user index not in the snapshot
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "ArbitrageError",
    "InvalidRiskInputsError",
    "InvalidSurfaceError",
    "UnknownUserError",
]


class AggregationError(Exception):
    """Root of every error raised by ``aggregation``."""


class InvalidSurfaceError(AggregationError, ValueError):
    """SVI parameters outside their domain (b < 0, |rho| >= 1, sigma <= 0, negative variance)."""


class ArbitrageError(AggregationError, ValueError):
    """A vol surface fails the butterfly (Durrleman) or calendar check; see its report."""


class InvalidRiskInputsError(AggregationError, ValueError):
    """Risk input arrays of different lengths, or indices outside their ranges."""


class UnknownUserError(AggregationError, KeyError):
    """An address or user index that holds no position in the snapshot being read."""
