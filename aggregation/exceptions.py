"""Errors raised by the ``aggregation`` package.

Messages name the watermark, asset or address involved and what to do next::

    AggregationError    root: a snapshot that cannot be loaded or priced
    ├── InvalidSurfaceError (also ValueError)  SVI parameters outside their domain
    ├── ArbitrageError (also ValueError)       a vol surface with butterfly/calendar arbitrage
    ├── InvalidRiskInputsError (also ValueError)  position arrays that do not fit together
    ├── UnknownUserError (also KeyError)       an address or user index not in the snapshot
    ├── InvalidParamsError (also ValueError)   cascade/contagion parameters or matrices unusable
    └── InvalidShockError (also ValueError)    a shock string or vector that cannot be applied
        └── UnknownAssetError (also KeyError)  a shock names an asset not in the snapshot
"""

from __future__ import annotations

__all__ = [
    "AggregationError",
    "ArbitrageError",
    "InvalidParamsError",
    "InvalidRiskInputsError",
    "InvalidShockError",
    "InvalidSurfaceError",
    "UnknownAssetError",
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


class InvalidParamsError(AggregationError, ValueError):
    """Cascade, liquidity or contagion inputs outside their domain (shapes, signs, limits)."""


class InvalidShockError(AggregationError, ValueError):
    """A shock that cannot be applied: malformed entry, non-numeric move, move <= -1, or an
    unknown historical scenario name."""


class UnknownAssetError(InvalidShockError, KeyError):
    """A shock names an asset the snapshot does not hold; the message suggests a near name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
