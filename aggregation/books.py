"""Position books and one snapshot of them as arrays: the input of every risk computation.

Concept: each kind of position is a *book* of flat columns (one row per position, with
its user, chain and protocol indices): options, perps and margin collateral (held in
margin accounts), lending supplies and borrows (held in lending accounts). An account is
one ``(user, protocol, chain)``, as on chain (:mod:`aggregation.accounts`,
:mod:`aggregation.lending`). :class:`RiskInputs` bundles the books with the markets
(spots, carry, asset prices), the unique option contracts and each protocol's on-chain
rates (:class:`~aggregation.accounts.ProtocolRules`).

Invariants (checked by :meth:`RiskInputs.build`): every book is sorted by user (stable),
``offsets[b][i]:offsets[b][i+1]`` are user ``i``'s rows of book ``b``, indices lie in
range, columns of a book have one length. Units: token amounts in float units, USD,
sizes in units of the underlying, years.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from aggregation.accounts import ProtocolRules
from aggregation.exceptions import InvalidRiskInputsError, UnknownUserError
from aggregation.margin import Instruments

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "BorrowPositions",
    "CollateralPositions",
    "OptionPositions",
    "PerpPositions",
    "RiskInputs",
    "SupplyPositions",
]

Float = NDArray[np.float64]
Index = NDArray[np.intp]
Bool = NDArray[np.bool_]


@dataclass(frozen=True, slots=True, eq=False)
class OptionPositions:
    """European options; ``size`` signed units of the underlying (+ long)."""

    user: Index
    underlying: Index
    chain: Index
    protocol: Index
    size: Float
    strike_usd: Float
    expiry_years: Float
    is_call: Bool
    vol_annual: Float  # from the caller's vol surface, one per position


@dataclass(frozen=True, slots=True, eq=False)
class PerpPositions:
    """Linear perps; ``open_notional_usd`` = size x entry price (signed like size)."""

    user: Index
    underlying: Index
    chain: Index
    protocol: Index
    size: Float
    open_notional_usd: Float
    funding_usd: Float  # accrued, + received by the user


@dataclass(frozen=True, slots=True, eq=False)
class CollateralPositions:
    """Margin-account collateral; ``haircut`` is the fraction not counted (0.1 = 10 %)."""

    user: Index
    asset: Index
    chain: Index
    protocol: Index
    amount: Float
    haircut: Float


@dataclass(frozen=True, slots=True, eq=False)
class SupplyPositions:
    """Lending supplies (collateral) with the reserve's Aave-style settings."""

    user: Index
    asset: Index
    chain: Index
    protocol: Index
    amount: Float
    liquidation_threshold: Float
    ltv: Float
    liquidation_bonus: Float


@dataclass(frozen=True, slots=True, eq=False)
class BorrowPositions:
    """Lending borrows (debt)."""

    user: Index
    asset: Index
    chain: Index
    protocol: Index
    amount: Float


Book = TypeVar("Book", bound="DataclassInstance")


def _take(book: Book, rows: Any, **override: Index) -> Book:
    """The same book restricted to ``rows`` (a slice or an index array)."""
    names = book.__slots__  # type: ignore[attr-defined]  # slots=True dataclasses
    columns = (override[n] if n in override else getattr(book, n)[rows] for n in names)
    return cast(Book, cast(Any, type(book))(*columns))


def _by_user_order(book: Book) -> Book:
    return _take(book, np.argsort(getattr(book, "user"), kind="stable"))  # noqa: B009


def _concat(book: Book, extra: Book) -> Book:
    names = book.__slots__  # type: ignore[attr-defined]  # slots=True dataclasses
    columns = (np.concatenate([getattr(book, n), getattr(extra, n)]) for n in names)
    return cast(Book, cast(Any, type(book))(*columns))


def _offsets(user: Index, n_users: int) -> Index:
    return np.searchsorted(user, np.arange(n_users + 1)).astype(np.intp)


@dataclass(frozen=True, slots=True, eq=False)
class RiskInputs:
    """One snapshot as arrays, every book sorted by user (build it with :meth:`build`).

    Markets: ``spot_usd`` and ``carry_annual`` (forward = spot e^(carry T)) per underlying;
    ``asset_price_usd`` per asset and ``asset_underlying`` (-1: tied to no underlying, e.g.
    a stablecoin). ``instruments`` / ``option_instrument``: the unique option contracts.
    ``isolated[i]``: user ``i``'s portfolio view is standard (isolated) margin, else cross.
    ``rules``: each protocol's on-chain rates (:class:`~aggregation.accounts.ProtocolRules`).
    """

    users: tuple[str, ...]
    n_chains: int
    n_protocols: int
    spot_usd: Float
    carry_annual: Float
    asset_price_usd: Float
    asset_underlying: Index
    options: OptionPositions
    perps: PerpPositions
    collateral: CollateralPositions
    supplies: SupplyPositions
    borrows: BorrowPositions
    offsets: tuple[Index, ...]  # per book (options, perps, collateral, supplies, borrows)
    instruments: Instruments
    option_instrument: Index
    isolated: Bool
    rules: ProtocolRules

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_underlyings(self) -> int:
        return int(self.spot_usd.shape[0])

    @classmethod
    def build(
        cls,
        users: tuple[str, ...],
        *,
        spot_usd: Float,
        carry_annual: Float,
        asset_price_usd: Float,
        asset_underlying: Index,
        options: OptionPositions,
        perps: PerpPositions,
        collateral: CollateralPositions,
        supplies: SupplyPositions,
        borrows: BorrowPositions,
        n_chains: int = 1,
        n_protocols: int = 1,
        isolated: Bool | None = None,
        rules: ProtocolRules | None = None,
        dedupe_instruments: bool = True,
    ) -> RiskInputs:
        """Validate, sort every book by user (stable) and index the option contracts.

        ``rules`` default to :meth:`ProtocolRules.uniform` (the devnet markets' rates)."""
        n = len(users)
        books = (options, perps, collateral, supplies, borrows)
        for book in books:
            _check_book(book, n, n_chains, n_protocols)
        if spot_usd.shape != carry_annual.shape or asset_price_usd.shape != asset_underlying.shape:
            raise InvalidRiskInputsError("spot/carry and asset price/underlying shapes differ")
        rules = rules or ProtocolRules.uniform(n_protocols, spot_usd.shape[0])
        rules.check(n_protocols, spot_usd.shape[0])
        o, p, c = _by_user_order(options), _by_user_order(perps), _by_user_order(collateral)
        s, b = _by_user_order(supplies), _by_user_order(borrows)
        if dedupe_instruments:
            instruments, inst = Instruments.unique(
                o.underlying, o.strike_usd, o.expiry_years, o.is_call, o.vol_annual
            )
        else:
            instruments = Instruments(
                o.underlying, o.strike_usd, o.expiry_years, o.is_call, o.vol_annual
            )
            inst = np.arange(o.user.shape[0], dtype=np.intp)
        return cls(
            users=users,
            n_chains=n_chains,
            n_protocols=n_protocols,
            spot_usd=spot_usd,
            carry_annual=carry_annual,
            asset_price_usd=asset_price_usd,
            asset_underlying=asset_underlying,
            options=o,
            perps=p,
            collateral=c,
            supplies=s,
            borrows=b,
            offsets=tuple(_offsets(x.user, n) for x in (o, p, c, s, b)),
            instruments=instruments,
            option_instrument=inst,
            isolated=np.zeros(n, dtype=np.bool_) if isolated is None else isolated,
            rules=rules,
        )

    def user_index(self, address: str) -> int:
        """Index of ``address`` (case-insensitive); :class:`UnknownUserError` if absent."""
        lowered = address.lower()
        for i, user in enumerate(self.users):
            if user.lower() == lowered:
                return i
        raise UnknownUserError(f"address {address} holds no position in this snapshot")

    def user_slice(self, user_index: int) -> RiskInputs:
        """A one-user snapshot of user ``user_index``: O(that user's positions)."""
        if not 0 <= user_index < self.n_users:
            raise UnknownUserError(f"user index {user_index} not in 0..{self.n_users - 1}")
        i = user_index
        books = [
            _take(
                book,
                slice(int(off[i]), int(off[i + 1])),
                user=np.zeros(off[i + 1] - off[i], np.intp),
            )
            for book, off in zip(self._books(), self.offsets, strict=True)
        ]
        offsets = [np.array([0, x.user.shape[0]], np.intp) for x in books]
        return replace(
            self._with_books(books, offsets, options_changed=True),
            users=(self.users[i],),
            isolated=self.isolated[i : i + 1],
        )

    def append(
        self,
        *,
        options: OptionPositions | None = None,
        perps: PerpPositions | None = None,
        collateral: CollateralPositions | None = None,
        supplies: SupplyPositions | None = None,
        borrows: BorrowPositions | None = None,
    ) -> RiskInputs:
        """This snapshot plus new positions (validated, kept sorted by user).

        O(all positions), and appending options drops the contract deduplication: meant for
        a one-user :meth:`user_slice` (whose user index is 0) after a trade, before
        :func:`unified_risk` on it and :meth:`UnifiedRisk.set_user`.
        """
        new = (options, perps, collateral, supplies, borrows)
        books, offsets = list(self._books()), list(self.offsets)
        for i, extra in enumerate(new):
            if extra is not None:
                _check_book(extra, self.n_users, self.n_chains, self.n_protocols)
                merged = _concat(books[i], extra)
                books[i] = _by_user_order(merged) if self.n_users > 1 else merged
                offsets[i] = _offsets(books[i].user, self.n_users)
        return self._with_books(books, offsets, options_changed=options is not None)

    def _with_books(
        self, books: list[Any], offsets: list[Index], *, options_changed: bool
    ) -> RiskInputs:
        """The same snapshot with new books; changed options get identity contracts."""
        o = books[0]
        instruments, inst = self.instruments, self.option_instrument
        if options_changed:
            instruments = Instruments(
                o.underlying, o.strike_usd, o.expiry_years, o.is_call, o.vol_annual
            )
            inst = np.arange(o.user.shape[0], dtype=np.intp)
        return replace(
            self, options=o, perps=books[1], collateral=books[2], supplies=books[3],
            borrows=books[4], offsets=tuple(offsets), instruments=instruments,
            option_instrument=inst,
        )  # fmt: skip

    def _books(self) -> tuple[Any, ...]:
        return self.options, self.perps, self.collateral, self.supplies, self.borrows


def _check_book(book: Any, n_users: int, n_chains: int, n_protocols: int) -> None:
    lengths = {getattr(book, f.name).shape for f in fields(book)}
    if len(lengths) != 1:
        raise InvalidRiskInputsError(f"{type(book).__name__}: arrays of different shapes")
    for name, bound in (("user", n_users), ("chain", n_chains), ("protocol", n_protocols)):
        values = getattr(book, name)
        if values.size and (values.min() < 0 or values.max() >= bound):
            raise InvalidRiskInputsError(f"{type(book).__name__}.{name} outside 0..{bound - 1}")
