"""Errors raised by the ``insurance`` package.

Messages name the chain id, address, deficit or payout involved and what to do next::

    InsuranceError      root: sizing, deficit detection, waterfall or payout failed
    ├── InsuranceConfigError (also ValueError)  a bad [insurance] table: names the key and the fix
    ├── WaterfallError (also ValueError)   claims or capital the waterfall cannot allocate
    ├── AttestationError (also ValueError) a negative leaf, an overflow, a duplicate address
    ├── DeficitError                       a deficit that cannot be valued (no price, no fund)
    ├── SizingError (also ValueError)      a snapshot or parameters the sizing cannot use
    ├── UnknownClaimError (also KeyError)  a claim id that is not in the payout table
    └── PayoutError                        a payout could not be sent or confirmed
        └── OperatorError                  no operator credentials, or not an operator
"""

from __future__ import annotations

__all__ = [
    "AttestationError",
    "DeficitError",
    "InsuranceConfigError",
    "InsuranceError",
    "OperatorError",
    "PayoutError",
    "SizingError",
    "UnknownClaimError",
    "WaterfallError",
]


class InsuranceError(Exception):
    """Root of every error raised by ``insurance``."""


class InsuranceConfigError(InsuranceError, ValueError):
    """The ``[insurance]`` table has an unknown key or a bad value."""


class WaterfallError(InsuranceError, ValueError):
    """Negative amounts, duplicate claim keys or negative capital given to the waterfall."""


class AttestationError(InsuranceError, ValueError):
    """A Merkle-sum leaf that is negative, overflows 2**128 or repeats an address."""


class DeficitError(InsuranceError):
    """A deficit that cannot be valued in the fund's asset (missing price feed or fund)."""


class SizingError(InsuranceError, ValueError):
    """Capital sizing cannot run on this snapshot or with these parameters."""


class UnknownClaimError(InsuranceError, KeyError):
    """A claim id that the payout table does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PayoutError(InsuranceError):
    """A payout transaction could not be sent or its outcome could not be read."""


class OperatorError(PayoutError):
    """No operator key or address is configured, or the operator may not pay claims."""
