"""The loss waterfall: who bears each deficit of an epoch, layer by layer, to the unit.

Concept (REFERENCES.md §7: Aave Umbrella, exchange insurance funds). Every claim of an
epoch (one deficit: a gross ``loss`` and the liquidation ``proceeds`` that came with it)
flows through five layers, each taking what it can of what is left:

1. ``proceeds`` — liquidation proceeds, up to the loss;
2. ``deductible`` — the protocol's own offset: ``deductible + loss x deductible_bps``,
   up to what is left (Umbrella: a deficit is covered only above ``offset``);
3. ``isolated`` — the tranche of the claim's chain/market (``Claim.tranche``), at most
   ``isolated_cap`` per event; when the tranche is short, its capital is shared
   pro rata among the epoch's claims on it;
4. ``shared`` — the cross-chain layer, at most ``shared_cap`` per event, pro rata across
   all of the epoch's claims when short;
5. ``residual`` — what no layer covered: socialised loss, recorded as an IOU.

Invariants (property-tested): per claim, the five layers add up to the loss exactly
(conservation); each layer is non-negative and a later layer is used only after the
earlier ones are exhausted or capped (seniority); ``isolated + shared <= loss - proceeds
- deductible``; a claim draws only on its own tranche (isolation); what a layer pays in
an epoch never exceeds its capital (the pool never goes negative); pro-rata shares do
not depend on the order of the claims (largest remainder, ties by claim key) and add
up to the capital exactly when it is short.

Units: integers in the fund asset's smallest unit (e.g. USDC 1e-6); no floats anywhere.
Pure: no I/O, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from insurance.exceptions import WaterfallError

__all__ = [
    "BPS",
    "LAYERS",
    "Allocation",
    "Capital",
    "Claim",
    "EpochAllocation",
    "Policy",
    "allocate",
    "pro_rata",
]

BPS = 10_000
LAYERS = ("proceeds", "deductible", "isolated", "shared", "residual")


@dataclass(frozen=True, slots=True)
class Claim:
    """One deficit of the epoch: ``key`` is unique (the deficit id), ``tranche`` names the
    isolated tranche it may draw on (e.g. its chain id)."""

    key: str
    tranche: str
    loss: int
    proceeds: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-event terms; ``None`` caps mean "no cap"."""

    deductible: int = 0
    deductible_bps: int = 0
    isolated_cap: int | None = None
    shared_cap: int | None = None

    def __post_init__(self) -> None:
        if self.deductible < 0:
            raise WaterfallError(f"deductible {self.deductible} is negative; use 0 or more")
        if not 0 <= self.deductible_bps <= BPS:
            raise WaterfallError(f"deductible_bps {self.deductible_bps} must be in 0..{BPS}")
        for name, cap in (("isolated_cap", self.isolated_cap), ("shared_cap", self.shared_cap)):
            if cap is not None and cap < 0:
                raise WaterfallError(f"{name} {cap} is negative; use 0 or more, or no cap")


@dataclass(frozen=True, slots=True)
class Capital:
    """What each layer can pay this epoch: per isolated tranche, and the shared layer."""

    isolated: Mapping[str, int] = field(default_factory=dict)
    shared: int = 0

    def __post_init__(self) -> None:
        for tranche, amount in self.isolated.items():
            if amount < 0:
                raise WaterfallError(f"isolated tranche {tranche!r} has negative capital {amount}")
        if self.shared < 0:
            raise WaterfallError(f"the shared layer has negative capital {self.shared}")


@dataclass(frozen=True, slots=True)
class Allocation:
    """How one claim was covered; the five layers add up to ``loss``."""

    key: str
    tranche: str
    loss: int
    proceeds: int
    deductible: int
    isolated: int
    shared: int
    residual: int

    @property
    def paid(self) -> int:
        """What the fund pays (isolated tranche + shared layer)."""
        return self.isolated + self.shared

    def layers(self) -> tuple[tuple[str, int], ...]:
        """``(layer, amount)`` in waterfall order."""
        return (
            ("proceeds", self.proceeds),
            ("deductible", self.deductible),
            ("isolated", self.isolated),
            ("shared", self.shared),
            ("residual", self.residual),
        )


@dataclass(frozen=True, slots=True)
class EpochAllocation:
    """The epoch's allocations (in the claims' order) and the capital they used."""

    allocations: tuple[Allocation, ...]
    isolated_used: Mapping[str, int]
    shared_used: int

    @property
    def paid(self) -> int:
        return sum(a.paid for a in self.allocations)

    @property
    def residual(self) -> int:
        return sum(a.residual for a in self.allocations)


def pro_rata(wants: Sequence[int], keys: Sequence[str], capacity: int) -> list[int]:
    """Share ``capacity`` among ``wants``: everything wanted if it fits, else pro rata.

    When short, each share is ``floor(capacity x want / total)``; the units left by the
    flooring go one each to the largest remainders (ties: smallest key), so the shares
    add up to ``capacity`` exactly, never exceed a want, and do not depend on order.
    """
    total = sum(wants)
    if total <= capacity:
        return list(wants)
    if capacity <= 0:
        return [0] * len(wants)
    shares = [capacity * want // total for want in wants]
    remainders = [capacity * want % total for want in wants]
    left = capacity - sum(shares)
    order = sorted(range(len(wants)), key=lambda i: (-remainders[i], keys[i]))
    for i in order[:left]:  # left < number of non-zero remainders, so each gets at most one
        shares[i] += 1
    return shares


def _check(claims: Sequence[Claim]) -> None:
    seen: set[str] = set()
    for claim in claims:
        if claim.loss < 0 or claim.proceeds < 0:
            raise WaterfallError(
                f"claim {claim.key}: loss {claim.loss} and proceeds {claim.proceeds} must be "
                ">= 0 (amounts in the fund asset's smallest unit)"
            )
        if claim.key in seen:
            raise WaterfallError(f"claim {claim.key} appears twice in one epoch; merge it")
        seen.add(claim.key)


def _capped(amount: int, cap: int | None) -> int:
    return amount if cap is None else min(amount, cap)


def allocate(claims: Sequence[Claim], policy: Policy, capital: Capital) -> EpochAllocation:
    """Run the epoch's ``claims`` through the waterfall (module docstring)."""
    _check(claims)
    proceeds = [min(c.proceeds, c.loss) for c in claims]
    left = [c.loss - p for c, p in zip(claims, proceeds, strict=True)]
    deductible = [
        min(rest, policy.deductible + c.loss * policy.deductible_bps // BPS)
        for c, rest in zip(claims, left, strict=True)
    ]
    left = [rest - d for rest, d in zip(left, deductible, strict=True)]

    isolated = [0] * len(claims)
    used: dict[str, int] = {}
    for tranche in sorted({c.tranche for c in claims}):
        members = [i for i, c in enumerate(claims) if c.tranche == tranche]
        wants = [_capped(left[i], policy.isolated_cap) for i in members]
        shares = pro_rata(wants, [claims[i].key for i in members], capital.isolated.get(tranche, 0))
        for i, share in zip(members, shares, strict=True):
            isolated[i] = share
        used[tranche] = sum(shares)
    left = [rest - iso for rest, iso in zip(left, isolated, strict=True)]

    wants = [_capped(rest, policy.shared_cap) for rest in left]
    shared = pro_rata(wants, [c.key for c in claims], capital.shared)
    left = [rest - s for rest, s in zip(left, shared, strict=True)]

    allocations = tuple(
        Allocation(c.key, c.tranche, c.loss, p, d, iso, s, rest)
        for c, p, d, iso, s, rest in zip(
            claims, proceeds, deductible, isolated, shared, left, strict=True
        )
    )
    return EpochAllocation(allocations, used, sum(shared))
