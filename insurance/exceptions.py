"""Errors raised by the ``insurance`` package.

Messages name the chain id, address, deficit or payout involved and what to do next::

    InsuranceError      root: sizing, deficit detection, waterfall or payout failed
"""

from __future__ import annotations

__all__ = ["InsuranceError"]


class InsuranceError(Exception):
    """Root of every error raised by ``insurance``."""
